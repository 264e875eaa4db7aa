"""Reliability on real ComfyUI (tiny models, CPU): odd inputs, samplers, layouts and long
sessions never break a generation. One test per case of the reliability issue."""
import gc
import logging
import math

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, MagCacheConfigError, get_preset, predict_skips
from harness import TINY, census, conds, flux_conds, keep_residual_refs, sample, tiny_model, tiny_sd15
from test_families import CASES, observe, skipped

WAN = CASES["wan_t2v"]
SET = (0.12, 0.2, 4)  # Wan 1.3B's recommended settings


def magcache(nodes, model, model_type="auto", settings=SET, start=0, end=-1):
    return nodes.MagCache.execute(model, model_type, *settings, start, end).result[0]


def rule(steps, preset="wan2.1_t2v_1.3B", settings=SET, branches=(COND, UNCOND)):
    cfg = MagCacheConfig(thresh=settings[0], retention_ratio=settings[1], K=settings[2])
    return predict_skips(cfg, get_preset(preset).tables(steps), steps, branches=branches)


def wan_run(nodes, steps=12, sampler="euler", model=None, seed=0, **kw):
    model = model or tiny_model("wan_t2v")
    pos, neg = conds("wan_t2v")
    with observe(WAN, model.model.diffusion_model) as calls:
        out = sample(magcache(nodes, model), pos, neg, seed=seed, steps=steps, sampler=sampler,
                     latent_shape=kw.pop("latent_shape", TINY["wan_t2v"].latent), **kw)
    return out, calls


# 1 -----------------------------------------------------------------------------------------------
def test_case1_unknown_or_unsupported_model_is_a_clear_error(comfy):
    from comfyui_magcache.model_patches import UnsupportedModel

    sd15 = tiny_sd15()
    for model_type in ("auto", "flux"):
        with pytest.raises(UnsupportedModel) as e:
            magcache(comfy, sd15, model_type)
        msg = str(e.value)
        assert "comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel" in msg
        for family in ("Flux", "Chroma", "HunyuanVideo", "Wan", "Wan VACE", "Qwen-Image"):
            assert family in msg


# 2 -----------------------------------------------------------------------------------------------
def test_case2_preset_for_the_wrong_family_is_a_clear_error(comfy):
    from comfyui_magcache.model_patches import UnsupportedModel

    with pytest.raises(UnsupportedModel, match=r"model_type 'wan2.1_t2v_14B' does not match the loaded model "
                                               r"\(comfy.ldm.flux.model.Flux\)"):
        magcache(comfy, tiny_model("flux"), "wan2.1_t2v_14B")
    with pytest.raises(UnsupportedModel, match=r"model_type 'flux' does not match the loaded model "
                                               r"\(comfy.ldm.wan.model.WanModel\); for this model use 'auto' or one of"):
        magcache(comfy, tiny_model("wan_t2v"), "flux")


# 3 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 3, 37, 200])
def test_case3_any_step_count_follows_the_interpolated_table(comfy, steps):
    out, calls = wan_run(comfy, steps=steps)
    assert torch.isfinite(out).all()
    want = rule(steps)
    assert skipped(calls, COND) == want[COND] and skipped(calls, UNCOND) == want[UNCOND]
    if steps >= 37:
        assert want[COND]


# 4 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2s_ancestral", "uni_pc"])
def test_case4_samplers(comfy, sampler):
    out, calls = wan_run(comfy, steps=12, sampler=sampler)
    assert torch.isfinite(out).all()
    want = rule(12)
    # steps with repeated evaluations (heun, dpmpp_2s) follow the decision of their first evaluation
    assert skipped(calls, COND) == want[COND]
    for c in calls:
        step, cou = c["at"]
        assert (c["blocks"] == 0) == (step in want[COND]), (sampler, step)


def test_case4_custom_sigmas_through_sampler_custom(comfy):
    from comfy import sample as comfy_sample
    from comfy import samplers

    model = tiny_model("wan_t2v")
    pos, neg = conds("wan_t2v")
    latent = torch.zeros(TINY["wan_t2v"].latent)
    sigmas = torch.tensor([1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    with observe(WAN, model.model.diffusion_model) as calls:
        comfy_sample.sample_custom(magcache(comfy, model), comfy_sample.prepare_noise(latent, 0), 2.0,
                                   samplers.ksampler("euler"), sigmas, pos, neg, latent, disable_pbar=True)
    assert skipped(calls, COND) == rule(11)[COND]


@pytest.mark.parametrize("schedule", [torch.tensor([0.0, 0.0]), None], ids=["degenerate", "missing"])
def test_case4_degenerate_or_missing_schedule_switches_caching_off(comfy, caplog, schedule):
    def third_party(executor, *args, **kwargs):  # a sampler that passes odd sample_sigmas
        to = args[5] if len(args) > 5 else kwargs["transformer_options"]
        if schedule is None:
            to.pop("sample_sigmas", None)
        else:
            to["sample_sigmas"] = schedule
        return executor(*args, **kwargs)

    model = tiny_model("wan_t2v")
    model.add_wrapper_with_key("apply_model", "third_party", third_party)
    pos, neg = conds("wan_t2v")
    ref = sample(model, pos, neg, seed=4, steps=8, latent_shape=TINY["wan_t2v"].latent)
    with caplog.at_level(logging.WARNING, logger="MagCache"):
        out = sample(magcache(comfy, model), pos, neg, seed=4, steps=8, latent_shape=TINY["wan_t2v"].latent)
    assert torch.equal(out, ref)
    warnings = [r.getMessage() for r in caplog.records if "caching is off" in r.getMessage()]
    assert len(warnings) == 1 and ("does not move" in warnings[0] or "no sample_sigmas" in warnings[0])


# 5 -----------------------------------------------------------------------------------------------
def test_case5_batch_and_resolution_changes_between_runs_start_fresh(comfy):
    model = tiny_model("wan_t2v")
    patched = magcache(comfy, model)
    pos, neg = conds("wan_t2v")
    shapes = [(1, 16, 3, 16, 16), (4, 16, 3, 16, 16), (4, 16, 3, 24, 16), (1, 16, 3, 16, 16)]
    for shape in shapes:
        with observe(WAN, model.model.diffusion_model) as calls:
            out = sample(patched, pos, neg, seed=6, steps=12, latent_shape=shape)
        fresh = sample(magcache(comfy, tiny_model("wan_t2v")), pos, neg, seed=6, steps=12, latent_shape=shape)
        assert torch.equal(out, fresh) and out.shape == shape
        assert skipped(calls, COND) == rule(12)[COND]


def test_case5_a_dtype_change_between_runs_starts_fresh(comfy):
    def bf16(m):
        m = m.clone()
        m.set_model_compute_dtype(torch.bfloat16)  # the same model, computing in another dtype
        return m

    pos, neg = conds("wan_t2v")
    shape = TINY["wan_t2v"].latent
    patched = magcache(comfy, tiny_model("wan_t2v"))
    runs = [(patched, lambda: magcache(comfy, tiny_model("wan_t2v"))),
            (bf16(patched), lambda: bf16(magcache(comfy, tiny_model("wan_t2v")))),
            (patched, lambda: magcache(comfy, tiny_model("wan_t2v")))]
    outs = []
    for model, fresh in runs:
        out = sample(model, pos, neg, seed=9, steps=12, latent_shape=shape)
        assert torch.equal(out, sample(fresh(), pos, neg, seed=9, steps=12, latent_shape=shape))
        outs.append(out)
    assert not torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_case5_separate_cond_uncond_calls_keep_their_own_residuals(comfy):
    model = tiny_model("flux")
    ref_latent = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    pos, neg = flux_conds(ref_latents={"positive": [ref_latent]})  # cond has 64 more tokens than uncond
    out = sample(comfy.MagCache.execute(model, "auto", 0.3, 0.1, 6, 0, -1).result[0], pos, neg, cfg=2.0, steps=12)
    assert torch.isfinite(out).all()


# 6 -----------------------------------------------------------------------------------------------
def test_case6_an_interrupted_run_leaves_nothing_behind(comfy):
    from comfy import model_management

    model = tiny_model("wan_t2v")
    patched = magcache(comfy, model)
    pos, neg = conds("wan_t2v")

    def interrupt(step, x0, x, total):
        if step == 5:
            raise model_management.InterruptProcessingException()

    with pytest.raises(model_management.InterruptProcessingException):
        sample(patched, pos, neg, seed=1, steps=12, latent_shape=TINY["wan_t2v"].latent, callback=interrupt)
    after = sample(patched, pos, neg, seed=2, steps=12, latent_shape=TINY["wan_t2v"].latent)
    fresh = sample(magcache(comfy, tiny_model("wan_t2v")), pos, neg, seed=2, steps=12,
                   latent_shape=TINY["wan_t2v"].latent)
    assert torch.equal(after, fresh)


# 7 -----------------------------------------------------------------------------------------------
def test_case7_two_magcache_nodes_on_one_model_and_samplers_in_sequence(comfy):
    model = tiny_model("wan_t2v")
    pos, neg = conds("wan_t2v")
    shape = TINY["wan_t2v"].latent
    ref = sample(model, pos, neg, seed=3, steps=12, latent_shape=shape)
    a = magcache(comfy, model, settings=(0.12, 0.2, 4))
    b = magcache(comfy, model, settings=(0.3, 0.1, 6))
    outs = [sample(m, pos, neg, seed=3, steps=12, latent_shape=shape) for m in (a, b, a, b)]
    fresh_a = sample(magcache(comfy, tiny_model("wan_t2v"), settings=(0.12, 0.2, 4)), pos, neg, seed=3, steps=12,
                     latent_shape=shape)
    fresh_b = sample(magcache(comfy, tiny_model("wan_t2v"), settings=(0.3, 0.1, 6)), pos, neg, seed=3, steps=12,
                     latent_shape=shape)
    assert torch.equal(outs[0], fresh_a) and torch.equal(outs[2], fresh_a)
    assert torch.equal(outs[1], fresh_b) and torch.equal(outs[3], fresh_b) and not torch.equal(fresh_a, fresh_b)
    assert torch.equal(sample(model, pos, neg, seed=3, steps=12, latent_shape=shape), ref)  # still unpatched


# 8 -----------------------------------------------------------------------------------------------
class FakeFluxControlNet:
    """Stands in for a Flux ControlNet: fixed additions between blocks, through ComfyUI's ControlBase."""

    def __new__(cls, tokens, hidden):
        from comfy.controlnet import ControlBase

        class Control(ControlBase):
            def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
                b = x_noisy.shape[0]
                add = torch.full((b, tokens, hidden), 0.05)
                return {"input": [add, add], "output": [add, add]}

            def copy(self):
                return Control()

        return Control()


def lora(model, seed=0):
    """A LoRA-like weight patch on every linear weight of the first double block."""
    m = model.clone()
    g = torch.Generator().manual_seed(seed)
    sd = m.model_state_dict()
    patches = {k: (torch.randn(sd[k].shape, generator=g) * 0.01,) for k in sd
               if k.startswith("diffusion_model.double_blocks.0.") and k.endswith(".weight") and sd[k].ndim == 2}
    m.add_patches(patches, 1.0)
    return m


@pytest.mark.parametrize("extra", ["lora", "controlnet", "skip_layer_guidance"])
def test_case8_with_lora_controlnet_and_skip_layer_guidance(comfy, extra):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    base = tiny_model("flux")
    pos, neg = flux_conds()
    if extra == "lora":
        base = lora(base)
    elif extra == "controlnet":
        for c in (pos, neg):
            c[0][1]["control"] = FakeFluxControlNet(64, 64)
    else:
        base = SkipLayerGuidanceDiT.execute(base, 3.0, 0.01, 0.9, "1", "1", 0.0).result[0]
    ref = sample(base, pos, neg, seed=8, steps=12)
    off = comfy.MagCache.execute(base, "auto", 0.24, 0.1, 5, 100, -1).result[0]  # applied, nothing skipped
    assert torch.equal(sample(off, pos, neg, seed=8, steps=12), ref)
    on = comfy.MagCache.execute(base, "auto", 0.24, 0.1, 5, 0, -1).result[0]
    out = sample(on, pos, neg, seed=8, steps=12)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert torch.equal(sample(base, pos, neg, seed=8, steps=12), ref)


# 9 -----------------------------------------------------------------------------------------------
def test_case9_many_runs_hold_no_growing_state(comfy):

    model = tiny_model("wan_t2v")
    patched = magcache(comfy, model, settings=(0.3, 0.1, 6))
    pos, neg = conds("wan_t2v")
    residuals = keep_residual_refs(patched)

    counts = []
    for i in range(200):
        sample(patched, pos, neg, seed=i, steps=4, latent_shape=TINY["wan_t2v"].latent)
        if i in (19, 199):
            counts.append(census())
    (objs20, tensors20, _), (objs200, tensors200, _) = counts
    assert tensors200 <= tensors20, (tensors20, tensors200)
    assert objs200 - objs20 < 2000, (objs20, objs200)  # no per-run growth (180 runs)
    gc.collect()
    assert residuals and all(r() is None for r in residuals)  # every run's residuals were released


# 10 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, fragment", [
    ((0.5, 0.2, 2, 0, -1), "magcache_thresh must be a number from 0.0 to 0.3, got 0.5"),
    ((math.nan, 0.2, 2, 0, -1), "magcache_thresh must be a number from 0.0 to 0.3, got nan"),
    ((0.1, 0.05, 2, 0, -1), "retention_ratio must be a number from 0.1 to 1.0, got 0.05"),
    ((0.1, math.nan, 2, 0, -1), "retention_ratio must be a number from 0.1 to 1.0, got nan"),
    ((0.1, 0.2, 7, 0, -1), "magcache_K must be a whole number from 0 to 6, got 7"),
    ((0.1, 0.2, 2, -3, -1), "start_step must be a whole number from 0 to 10000, got -3"),
    ((0.1, 0.2, 2, 0, 20000), "end_step must be a whole number from -10000 to 10000, got 20000"),
    ((0.1, 0.2, 2, 10, 5), "end_step (5) is before start_step (10)"),
])
def test_case10_bad_settings_fail_at_the_node(comfy, settings, fragment):
    with pytest.raises(MagCacheConfigError) as e:
        comfy.MagCache.execute(tiny_model("wan_t2v"), "auto", *settings)
    assert fragment in str(e.value)
