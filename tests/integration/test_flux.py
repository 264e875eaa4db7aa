"""MagCache on real ComfyUI: tiny Flux and Flux-Kontext from ComfyUI's own classes, on CPU,
sampled through comfy.sample."""
import logging

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, get_preset, predict_skips
from harness import flux_conds, observe, sample, skipped_steps, tiny_flux

STEPS = 12
RECOMMENDED = dict(magcache_thresh=0.24, retention_ratio=0.1, magcache_K=5)


def magcache(nodes, model, model_type="flux", start_step=0, end_step=-1, **settings):
    kw = dict(RECOMMENDED, **settings)
    return nodes.MagCache.execute(model, model_type, kw["magcache_thresh"], kw["retention_ratio"],
                                  kw["magcache_K"], start_step, end_step).result[0]


def expected(preset, branches=(COND, UNCOND), batched=True, **settings):
    kw = dict(RECOMMENDED, **settings)
    cfg = MagCacheConfig(thresh=kw["magcache_thresh"], retention_ratio=kw["retention_ratio"], K=kw["magcache_K"])
    return predict_skips(cfg, get_preset(preset).tables(STEPS), STEPS, branches=branches, batched=batched,
                         round_half_up=True)


def test_thresh_zero_returns_the_model_unchanged(comfy):
    model = tiny_flux()
    pos, neg = flux_conds()
    ref = sample(model, pos, neg, seed=3)
    patched = magcache(comfy, model, magcache_thresh=0.0)
    assert patched is model
    assert torch.equal(sample(patched, pos, neg, seed=3), ref)


def test_caching_disabled_by_the_window_is_bit_identical(comfy):
    model = tiny_flux()
    pos, neg = flux_conds()
    ref = sample(model, pos, neg, seed=3)
    patched = magcache(comfy, model, start_step=STEPS + 5)
    with observe(model.model.diffusion_model) as log:
        out = sample(patched, pos, neg, seed=3)
    assert torch.equal(out, ref)
    assert len(log["block0"]) == STEPS


@pytest.mark.parametrize("cfg", [2.0, 1.0], ids=["batched_cfg", "cfg1"])
def test_skip_set_follows_the_rule(comfy, cfg):
    model = tiny_flux()
    pos, neg = flux_conds()
    with observe(model.model.diffusion_model) as log:
        sample(magcache(comfy, model), pos, neg, cfg=cfg)
    branches = (COND, UNCOND) if cfg > 1 else (COND,)
    assert {cou for _, cou in log["model"]} == ({(1, 0)} if cfg > 1 else {(0,)})  # really batched / cond only
    want = expected("flux", branches)
    assert want[COND], "the settings must skip something for the test to mean anything"
    for b in branches:
        assert skipped_steps(log, b) == want[b]


def test_kontext_separate_calls_follow_the_kontext_table(comfy):
    model = tiny_flux()
    ref = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    pos, neg = flux_conds(ref_latents={"positive": [ref]})  # reference on the positive only
    settings = dict(magcache_thresh=0.05, retention_ratio=0.2, magcache_K=4)  # Kontext's recommended
    with observe(model.model.diffusion_model) as log:
        sample(magcache(comfy, model, "auto", **settings), pos, neg, cfg=2.0)
    assert {cou for _, cou in log["model"]} == {(0,), (1,)}  # cond and uncond as separate calls
    want = expected("flux_kontext", batched=False, **settings)
    assert want != expected("flux", batched=False, **settings)
    assert want[COND] and skipped_steps(log, COND) == want[COND] and skipped_steps(log, UNCOND) == want[UNCOND]


def assert_skips_apply_the_cached_residual(log, skipped):
    """On skipped calls the final layer gets head input + the residual of the last computed call."""
    final_in = dict(log["final_in"])
    checked, residual = 0, None
    for (step, cou), head in log["img_in"]:
        if step in skipped:
            assert torch.equal(final_in[(step, cou)], head + residual)
            checked += 1
        else:
            residual = final_in[(step, cou)] - head
    assert checked == len(skipped) > 0


def test_skipped_output_is_final_layer_of_head_input_plus_cached_residual(comfy):
    model = tiny_flux()
    pos, neg = flux_conds()
    with observe(model.model.diffusion_model) as log:
        sample(magcache(comfy, model), pos, neg, cfg=2.0)
    assert_skips_apply_the_cached_residual(log, set(expected("flux")[COND]))


def test_kontext_reference_tokens_are_part_of_the_cached_state(comfy):
    model = tiny_flux()
    ref = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    pos, neg = flux_conds(ref_latents={"positive": [ref]})
    settings = dict(magcache_thresh=0.05, retention_ratio=0.2, magcache_K=4)
    with observe(model.model.diffusion_model) as log:
        sample(magcache(comfy, model, "flux_kontext", **settings), pos, neg, cfg=1.0)
    # 8x8 image tokens + 8x8 reference tokens enter the blocks and reach the final layer
    assert all(h.shape[1] == 128 for _, h in log["img_in"])
    assert_skips_apply_the_cached_residual(log, set(expected("flux_kontext", (COND,), **settings)[COND]))


def test_a_second_run_starts_from_fresh_state(comfy):
    pos, neg = flux_conds()
    patched = magcache(comfy, tiny_flux())
    sample(patched, pos, neg, seed=1)
    with observe(patched.model.diffusion_model) as log:
        second = sample(patched, pos, neg, seed=2)
    fresh_model = tiny_flux()
    with observe(fresh_model.model.diffusion_model) as fresh_log:
        fresh = sample(magcache(comfy, fresh_model), pos, neg, seed=2)
    assert torch.equal(second, fresh)
    assert skipped_steps(log, COND) == skipped_steps(fresh_log, COND) == expected("flux")[COND]


def attribute_snapshot(patcher):
    dm = patcher.model.diffusion_model
    return ({name: sorted(vars(m)) for name, m in dm.named_modules()}, sorted(vars(patcher.model)),
            repr(sorted(patcher.model_options.get("transformer_options", {}))), dict(patcher.object_patches))


def test_the_shared_model_is_untouched(comfy):
    model = tiny_flux()
    pos, neg = flux_conds()
    ref = sample(model, pos, neg, seed=4)
    before = attribute_snapshot(model)
    patched = magcache(comfy, model)
    out = sample(patched, pos, neg, seed=4)
    assert not torch.equal(out, ref)  # caching did something
    assert attribute_snapshot(model) == before
    assert torch.equal(sample(model, pos, neg, seed=4), ref)
    assert torch.equal(sample(model.clone(), pos, neg, seed=4), ref)


def test_another_nodes_block_replacement_is_chained(comfy):
    model = tiny_flux()
    pos, neg = flux_conds()
    calls = []

    def other(args, extra):
        calls.append(1)
        out = extra["original_block"](args)
        out["img"] = out["img"] * 1.01
        return out

    other_model = model.clone()
    other_model.set_model_patch_replace(other, "dit", "double_block", 1)
    ref = sample(other_model, pos, neg, seed=5)
    calls.clear()
    out = sample(magcache(comfy, other_model, start_step=STEPS + 5), pos, neg, seed=5)
    assert torch.equal(out, ref) and len(calls) == STEPS
    calls.clear()
    sample(magcache(comfy, other_model), pos, neg, seed=5)
    assert len(calls) == STEPS - len(expected("flux")[COND])


def test_one_log_line_per_run(comfy, caplog):
    pos, neg = flux_conds()
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(magcache(comfy, tiny_flux()), pos, neg, cfg=2.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MagCache: skipped")]
    n = len(expected("flux")[COND])
    assert lines == [f"MagCache: skipped {n}/{STEPS} steps (cond {n}, uncond {n}), est. {STEPS / (STEPS - n):.1f}x, "
                     "table flux"]


def test_wrong_preset_and_unsupported_model_are_clear_errors(comfy):
    from comfyui_magcache.model_patches import UnsupportedModel

    with pytest.raises(UnsupportedModel, match=r"model_type 'wan2.1_t2v_1.3B' does not match the loaded model "
                                               r"\(comfy.ldm.flux.model.Flux\); for this model use 'auto' or one "
                                               r"of: flux, flux_kontext, flux_kontext_28steps"):
        magcache(comfy, tiny_flux(), "wan2.1_t2v_1.3B")

    class Unknown(torch.nn.Module):
        pass

    other = tiny_flux()
    other.add_object_patch("diffusion_model", Unknown())
    with pytest.raises(UnsupportedModel, match=r"(?s)MagCache cannot accelerate this model: .*Unknown.*\n"
                                               r"Supported families: .*Flux.*\nLoaded model class: .*Unknown"):
        magcache(comfy, other, "auto")


def test_bad_settings_fail_at_the_node(comfy):
    from comfyui_magcache.magcache import MagCacheConfigError

    with pytest.raises(MagCacheConfigError, match="magcache_K must be a whole number from 0 to 6, got 9"):
        magcache(comfy, tiny_flux(), magcache_K=9)


def test_node_is_a_drop_in_for_the_original(comfy):
    schema = comfy.MagCache.define_schema()
    assert schema.node_id == "MagCache"
    got = [(i.id, getattr(i, "default", None), getattr(i, "min", None), getattr(i, "max", None)) for i in schema.inputs]
    assert got[:7] == [("model", None, None, None), ("model_type", "wan2.1_t2v_1.3B", None, None),
                       ("magcache_thresh", 0.06, 0.0, 0.3), ("retention_ratio", 0.2, 0.1, 1.0), ("magcache_K", 2, 0, 6),
                       ("start_step", 0, 0, 10000), ("end_step", -1, -10000, 10000)]
    # retention_ratio's range holds the original 0.1..0.3 and goes to 1.0 (the authors publish 0.4 for Wan2.2)
    # then ours, after the original's widgets: one optional widget (saved workflows load with its default) and a socket
    assert [(i.id, i.optional) for i in schema.inputs[7:]] == [("settings_from", True), ("ratios", True)]
    assert schema.inputs[7].default == "auto"
    options = schema.inputs[1].options
    for name in ("auto", "flux", "flux_kontext", "chroma", "qwen_image", "hunyuan_video", "hunyuan_video1.5",
                 "wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B",
                 "wan2.1_vace_1.3B", "wan2.1_vace_14B"):
        assert name in options
    assert all(i.tooltip for i in schema.inputs)
