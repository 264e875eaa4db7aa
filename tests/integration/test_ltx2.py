"""LTX-2 beyond the generic family tests (test_families.py runs those on its tiny model): the guidance
passes that call the model under the cond's keys with perturbed blocks (STG, ComfyUI 0.33), a
video-only run (a plain video latent: the audio stream is empty) and image-to-video (a noise mask:
per-token timesteps, the given frame kept)."""
import contextlib
import importlib
import math

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, Schedule, streams
from harness import TINY, conds, sample, tiny_model
from test_families import CASES, STEPS, expected, magcache, self_calibrate, settings_for

CASE = CASES["ltx2"]
CASE_LATENT = TINY["ltx2"].latent  # (video, audio)


@pytest.fixture(autouse=True)
def fresh_user_dir(user_dir):
    return user_dir


@contextlib.contextmanager
def calls_of(dm):
    """Per model call: (step, cond_or_uncond), whether it carried a perturbation, blocks run."""
    calls = []

    def on_model(module, args, kwargs):
        to = kwargs["transformer_options"]
        at = Schedule.from_values(to["sample_sigmas"]).step_index(float(to["sigmas"][0])), tuple(to["cond_or_uncond"])
        calls.append({"at": at, "perturbed": "stg_self_attn_blocks" in to, "blocks": 0})

    def on_block(module, args):
        calls[-1]["blocks"] += 1

    handles = [dm.register_forward_pre_hook(on_model, with_kwargs=True)]
    handles += [b.register_forward_pre_hook(on_block) for b in dm.transformer_blocks._modules.values()]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def stg_node():
    try:
        return importlib.import_module("comfy_extras.nodes_lt").LTXVSpatioTemporalGuidance
    except (ImportError, AttributeError):
        return None


def test_stg_passes_run_every_block_and_the_cond_and_uncond_calls_cache_as_without_them(comfy, user_dir, caplog):
    STG = stg_node()
    if STG is None:
        pytest.skip("this ComfyUI has no LTXVSpatioTemporalGuidance (added after 0.8.0)")
    base = tiny_model("ltx2")
    pos, neg = conds("ltx2")
    model = STG.execute(base, 1.0, "1", 0.0, 1.0).result[0]  # perturb block 1's self-attention
    table = self_calibrate(comfy, CASE, model, pos, neg, user_dir, cfg=2.0)  # first run: identical, profile saved
    caplog.clear()
    with caplog.at_level("WARNING", logger="MagCache"), calls_of(model.model.diffusion_model) as calls:
        sample(magcache(comfy, model, "auto", settings_for(CASE)), pos, neg, cfg=2.0, latent_shape=CASE_LATENT,
               steps=STEPS)
    perturbed = [c for c in calls if c["perturbed"]]
    assert len(perturbed) == STEPS and all(c["blocks"] == 3 for c in perturbed)  # never skipped
    assert sum("stg_self_attn_blocks" in r.getMessage() for r in caplog.records) == 1  # one warning per run
    plain = [c for c in calls if not c["perturbed"]]
    want = expected(CASE, settings_for(CASE), (COND, UNCOND), table)
    assert want[COND]
    for b in (COND, UNCOND):
        assert sorted({c["at"][0] for c in plain if b in c["at"][1] and c["blocks"] == 0}) == want[b]


def test_a_video_only_run_caches_the_video_stream(comfy, user_dir):
    """A plain video latent on LTX-2: ComfyUI gives the blocks an empty audio stream. Self-calibration
    measures the video tokens alone; the next run skips by the rule and runs no block on skipped steps."""
    video_only = CASE_LATENT[0]
    model = tiny_model("ltx2")
    pos, neg = conds("ltx2")
    ref = sample(model, pos, neg, seed=11, latent_shape=video_only, steps=STEPS)
    assert tuple(ref.shape) == video_only  # a video latent in, a video latent out: no audio stream
    with calls_of(model.model.diffusion_model) as calls:
        out = sample(magcache(comfy, model, "auto", settings_for(CASE)), pos, neg, seed=11, latent_shape=video_only,
                     steps=STEPS)
    assert torch.equal(out, ref) and all(c["blocks"] == 3 for c in calls)  # first run: measured, identical
    profiles = sorted((user_dir / "magcache").glob("*.json"))
    assert len(profiles) == 1
    from comfyui_magcache.magcache import load_profile

    table, _ = load_profile(profiles[0])
    seen = []

    def on_block0(module, args, kwargs):
        seen.append(streams.tokens(args[0]))

    h = model.model.diffusion_model.transformer_blocks[0].register_forward_pre_hook(on_block0, with_kwargs=True)
    try:
        with calls_of(model.model.diffusion_model) as calls:
            cached = sample(magcache(comfy, model, "auto", settings_for(CASE)), pos, neg, seed=11,
                            latent_shape=video_only, steps=STEPS)
    finally:
        h.remove()
    assert seen and all(n[1] == 0 for n in seen)  # the blocks saw (video tokens, 0 audio tokens)
    want = expected(CASE, settings_for(CASE), (COND, UNCOND), table)
    assert want[COND]
    for b in (COND, UNCOND):
        assert sorted({c["at"][0] for c in calls if b in c["at"][1] and c["blocks"] == 0}) == want[b]
    assert all(c["blocks"] in (0, 3) for c in calls)
    assert torch.isfinite(cached).all() and not torch.equal(cached, ref)


def test_image_to_video_conditioning_frames_are_cached_with_the_video_stream(comfy, user_dir):
    """I2V as LTXVImgToVideoInplace sets it up: the first latent frame given, a noise mask of 0 there
    (per-token timesteps in the model). The whole video stream is cached; the run keeps the given frame
    as ComfyUI does, follows the rule on the measured ratios, and its first run is the plain one."""
    from comfy.nested_tensor import NestedTensor  # (not `import comfy...`: the fixture `comfy` is the nodes)

    video_shape, audio_shape = CASE_LATENT
    g = torch.Generator().manual_seed(5)
    video = torch.zeros(video_shape)
    video[:, :, :1] = torch.randn(video_shape[0], video_shape[1], 1, *video_shape[3:], generator=g)
    mask = torch.ones(video_shape[0], 1, *video_shape[2:])
    mask[:, :, :1] = 0.0

    def av(v, a):
        return NestedTensor([v, a])

    latent, noise_mask = av(video, torch.zeros(audio_shape)), av(mask, torch.ones(audio_shape[0], 1, *audio_shape[2:]))
    model = tiny_model("ltx2")
    pos, neg = conds("ltx2")
    ref = sample(model, pos, neg, seed=3, latent=latent, noise_mask=noise_mask, steps=STEPS)
    out = sample(magcache(comfy, model, "auto", settings_for(CASE)), pos, neg, seed=3, latent=latent,
                 noise_mask=noise_mask, steps=STEPS)  # self-calibration: every step computed
    assert torch.equal(out, ref)
    from comfyui_magcache.magcache import load_profile

    table, _ = load_profile(sorted((user_dir / "magcache").glob("*.json"))[0])
    with calls_of(model.model.diffusion_model) as calls:
        cached = sample(magcache(comfy, model, "auto", settings_for(CASE)), pos, neg, seed=3, latent=latent,
                        noise_mask=noise_mask, steps=STEPS)
    want = expected(CASE, settings_for(CASE), (COND, UNCOND), table)
    assert want[COND]
    for b in (COND, UNCOND):
        assert sorted({c["at"][0] for c in calls if b in c["at"][1] and c["blocks"] == 0}) == want[b]
    def first_frame(packed):  # packed: the video stream first
        return packed.flatten()[:math.prod(video_shape)].reshape(video_shape)[:, :, :1]

    # the given frame is kept (up to the latent format's scaling round trip), as without MagCache
    assert torch.equal(first_frame(cached), first_frame(ref)) and not torch.equal(cached, ref)
    assert torch.allclose(first_frame(cached), video[:, :, :1], atol=1e-5)
