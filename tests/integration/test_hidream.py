"""HiDream on real ComfyUI beyond the generic family tests (test_families.py): the edit model's reference
tokens (HiDream E1: the reference latent is concatenated to the noise along the width, so its tokens are
image tokens), latents whose sides are no multiple of the patch, and HiDream-O1 (ComfyUI 0.33), another
class, refused at the node."""
import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, load_profile
from harness import TINY, conds, sample, tiny_model
from test_families import CASES, expected, magcache, observe, skipped, skipped_are_head_input_plus_residual

NAME = "hidream"
CASE = CASES[NAME]
STEPS = 12
SETTINGS = TINY[NAME].settings  # 0.24 / 0.2 / 3: ours, no published setting exists


def calibrated_run(comfy, user_dir, model, pos, neg, shape):
    """First 'auto' run: identical to no MagCache, one profile saved. Returns the second run's calls
    and the profile's table."""
    ref = sample(model, pos, neg, seed=11, latent_shape=shape, steps=STEPS)
    patched = magcache(comfy, model, "auto", SETTINGS)
    out = sample(patched, pos, neg, seed=11, latent_shape=shape, steps=STEPS)
    assert torch.equal(out, ref) and out.shape == torch.Size(shape)
    [path] = sorted((user_dir / "magcache").glob("*.json"))
    table, _ = load_profile(path)
    with observe(CASE, model.model.diffusion_model) as calls:
        sample(patched, pos, neg, seed=12, latent_shape=shape, steps=STEPS)
    return calls, table


def check_skips(calls, table, image_tokens):
    want = expected(CASE, SETTINGS, (COND, UNCOND), table)
    assert want[COND] and {b: skipped(calls, b) for b in (COND, UNCOND)} == want
    assert all(c["head"].shape[1] == c["final"].shape[1] == image_tokens for c in calls)
    assert skipped_are_head_input_plus_residual(calls) == len(want[COND])


def test_edit_reference_tokens_are_cached_with_the_image_tokens(comfy, user_dir):
    """HiDream E1 (InstructPixToPixConditioning gives both sides concat_latent_image): the head sees the
    noise's and the reference's tokens side by side, and a skipped call hands the final layer head input +
    residual over all of them; the model crops the reference off its output as always."""
    shape = TINY[NAME].latent
    g = torch.Generator().manual_seed(5)
    ref_latent = torch.randn(shape, generator=g)
    pos, neg = conds(NAME, positive={"concat_latent_image": ref_latent}, negative={"concat_latent_image": ref_latent})
    calls, table = calibrated_run(comfy, user_dir, tiny_model(NAME), pos, neg, shape)
    check_skips(calls, table, image_tokens=2 * (shape[2] // 2) * (shape[3] // 2))


def test_a_latent_of_any_aspect(comfy, user_dir):
    """Sides that are no multiple of the patch: ComfyUI pads the latent; every token is an image token."""
    shape = (1, 16, 13, 21)
    pos, neg = conds(NAME)
    calls, table = calibrated_run(comfy, user_dir, tiny_model(NAME), pos, neg, shape)
    check_skips(calls, table, image_tokens=7 * 11)


def test_hidream_o1_is_refused_at_the_node(comfy):
    """ComfyUI 0.33's HiDream-O1 is a pixel-space transformer of another class and loop: not HiDream's."""
    from comfy import model_patcher, supported_models
    from comfyui_magcache.model_patches import UnsupportedModel

    if not hasattr(supported_models, "HiDreamO1"):
        pytest.skip("no HiDream-O1 in this ComfyUI")
    tiny = {"image_model": "hidream_o1",
            "text_config_overrides": dict(vocab_size=151700, hidden_size=64, intermediate_size=64,
                                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                          head_dim=32, rope_dims=[8, 4, 4]),
            "vision_config_overrides": dict(hidden_size=32, num_heads=2, intermediate_size=32, depth=1,
                                            deepstack_visual_indexes=())}
    config = supported_models.HiDreamO1(tiny)
    config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = model_patcher.ModelPatcher(config.get_model({}, device="cpu"), load_device=cpu, offload_device=cpu)
    with pytest.raises(UnsupportedModel) as e:
        magcache(comfy, model, "auto", SETTINGS)
    first, families, loaded = str(e.value).splitlines()
    assert first == ("MagCache cannot accelerate this model: there is no MagCache support for HiDreamO1Transformer "
                     "models. Bypass the MagCache node for it.")
    assert "HiDream" in families and loaded == "Loaded model class: comfy.ldm.hidream_o1.model.HiDreamO1Transformer"


def test_edit_with_dual_cfg_as_comfyuis_e1_1_example(comfy, user_dir):
    """ComfyUI's HiDream E1.1 example samples with DualCFGGuider (nested): the prompt and the negative with
    the reference image (batched in one call, twice the tokens) and the prompt without it (a call of its
    own). Each call layout is its own branch with its own residual: first run identical, then skipped calls
    in both, each the head input + its own branch's residual."""
    from comfy import samplers
    from comfy.sample import prepare_noise
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    shape = TINY[NAME].latent
    ref_latent = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    pos, neg = conds(NAME, positive={"concat_latent_image": ref_latent}, negative={"concat_latent_image": ref_latent})
    plain = conds(NAME, seed=3)[0]
    model = tiny_model(NAME)

    def run(m, seed):
        guider = Guider_DualCFG(m)
        guider.set_conds(pos, neg, plain)
        guider.set_cfg(3.0, 1.5, nested=True)
        sigmas = samplers.calculate_sigmas(m.get_model_object("model_sampling"), "simple", STEPS)
        latent = torch.zeros(shape)
        return guider.sample(prepare_noise(latent, seed), latent, samplers.sampler_object("euler"), sigmas,
                             seed=seed, disable_pbar=True)

    ref = run(model, 1)
    patched = magcache(comfy, model, "auto", SETTINGS)
    assert torch.equal(run(patched, 1), ref)
    with observe(CASE, model.model.diffusion_model) as calls:
        run(patched, 2)
    tokens = {c["at"][1]: c["head"].shape[1] for c in calls}
    assert len(tokens) == 2 and sorted(tokens.values()) == [64, 128]  # without / with the reference's tokens
    residual = {}
    for c in calls:
        layout = c["at"][1]
        if c["blocks"] == 0:
            assert torch.equal(c["final"], c["head"] + residual[layout])
        else:
            residual[layout] = c["final"] - c["head"]
    assert all(any(c["blocks"] == 0 for c in calls if c["at"][1] == layout) for layout in tokens)
