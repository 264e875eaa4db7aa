"""The authors' other tables on real ComfyUI: 'auto' picks the one calibrated nearest to the run,
the run's log line names it, and the skips follow its rule (Flux-Kontext's forced step included)."""
import logging

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, TableRule, get_preset, predict_skips
from harness import TINY, conds, flux_conds, sample, skipped_steps, tiny_flux, tiny_model
from harness import observe as observe_flux
from test_families import CASES, observe, skipped

AGGRESSIVE = (0.3, 0.1, 6)


def magcache(nodes, model, model_type, settings):
    thresh, retention, K = settings
    return nodes.MagCache.execute(model, model_type, thresh, retention, K, 0, -1).result[0]


def expected(preset, steps, settings, branches=(COND, UNCOND), batched=True, rule=None):
    thresh, retention, K = settings
    cfg = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
    return predict_skips(cfg, get_preset(preset).tables(steps), steps, branches=branches, batched=batched, rule=rule)


def table_lines(caplog):
    return [r.getMessage().rsplit(", table ", 1)[-1] for r in caplog.records
            if r.getMessage().startswith("MagCache: skipped")]


def test_kontext_at_28_steps_reads_the_28_step_table_and_computes_its_forced_step(comfy, caplog):
    model = tiny_flux()
    ref = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    pos, neg = flux_conds(ref_latents={"positive": [ref], "negative": [ref]})
    with caplog.at_level(logging.INFO, logger="MagCache"), observe_flux(model.model.diffusion_model) as log:
        sample(magcache(comfy, model, "auto", AGGRESSIVE), pos, neg, cfg=1.0, steps=28)
    assert table_lines(caplog) == ["flux_kontext_28steps"]
    want = expected("flux_kontext_28steps", 28, AGGRESSIVE, (COND,))[COND]
    assert skipped_steps(log, COND) == want and 11 not in want
    unforced = TableRule(retention="steps_half_up", compare="<=")
    assert 11 in expected("flux_kontext_28steps", 28, AGGRESSIVE, (COND,), rule=unforced)[COND]


def test_kontext_at_20_steps_keeps_the_20_step_table(comfy, caplog):
    ref = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    pos, neg = flux_conds(ref_latents={"positive": [ref], "negative": [ref]})
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(magcache(comfy, tiny_flux(), "auto", AGGRESSIVE), pos, neg, cfg=1.0, steps=20)
    assert table_lines(caplog) == ["flux_kontext"]


def test_qwen_image_edit_is_picked_by_reference_latents(comfy, caplog):
    case = CASES["qwen_image"]
    model = tiny_model("qwen_image")
    shape = TINY["qwen_image"].latent
    ref = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    pos, neg = conds("qwen_image", positive={"reference_latents": [ref]}, negative={"reference_latents": [ref]})
    settings = get_preset("qwen_image_edit").recommended
    with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
        sample(magcache(comfy, model, "auto", settings), pos, neg, cfg=2.0, latent_shape=shape, steps=12)
    assert table_lines(caplog) == ["qwen_image_edit"]
    want = expected("qwen_image_edit", 12, settings)
    assert want[COND] and {b: skipped(calls, b) for b in (COND, UNCOND)} == want


@pytest.mark.parametrize("steps, table", [(40, "qwen_image"), (50, "qwen_image_50steps")])
def test_qwen_image_takes_the_table_nearest_in_steps(comfy, caplog, steps, table):
    pos, neg = conds("qwen_image")
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(magcache(comfy, tiny_model("qwen_image"), "auto", (0.06, 0.2, 2)), pos, neg, cfg=2.0,
               latent_shape=TINY["qwen_image"].latent, steps=steps)
    assert table_lines(caplog) == [table]


def test_wan22_ti2v_image_to_video_reads_its_own_table(comfy, caplog):
    """Wan22ImageToVideoLatent encodes the image into the first latent frame and masks it; the model
    then gets one timestep per frame, which is how 'auto' tells image-to-video from text-to-video."""
    case = CASES["wan22_5b"]
    shape = TINY["wan22_5b"].latent
    mask = torch.ones(shape[0], 1, *shape[2:])
    mask[:, :, :1] = 0.0
    settings = get_preset("wan2.2_ti2v_5B_i2v").recommended
    for noise_mask, table in ((None, "wan2.2_ti2v_5B"), (mask, "wan2.2_ti2v_5B_i2v")):
        caplog.clear()
        model = tiny_model("wan22_5b")
        pos, neg = conds("wan22_5b")
        with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
            sample(magcache(comfy, model, "auto", settings), pos, neg, cfg=2.0, latent_shape=shape, steps=12,
                   noise_mask=noise_mask)
        assert table_lines(caplog) == [table]
        assert {b: skipped(calls, b) for b in (COND, UNCOND)} == expected(table, 12, settings)


def test_kontext_named_at_20_steps_keeps_the_original_packs_step_11(comfy, caplog):
    """model_type flux_kontext (the original pack's 20-step table) follows the original's loop: table
    step 11 is computed without touching the accumulators, acc_err < thresh, retention int(N*R)."""
    model = tiny_flux()
    ref = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
    pos, neg = flux_conds(ref_latents={"positive": [ref], "negative": [ref]})
    settings = get_preset("flux_kontext").recommended
    with caplog.at_level(logging.INFO, logger="MagCache"), observe_flux(model.model.diffusion_model) as log:
        sample(magcache(comfy, model, "flux_kontext", settings), pos, neg, cfg=1.0, steps=20)
    assert table_lines(caplog) == ["flux_kontext"]
    got = skipped_steps(log, COND)
    assert got == expected("flux_kontext", 20, settings, (COND,))[COND] == [4, 6, 8, 9, 12, 13, 14, 15, 17, 18]
    research = TableRule(compare="<=", retention="steps_half_up", forced_step=(11, 28))  # the 28-step script's
    assert got != expected("flux_kontext", 20, settings, (COND,), rule=research)[COND]


def test_hunyuan_video15_named_above_20_steps_reads_its_40_step_table(comfy, caplog):
    """As the original pack's wrapper (nodes.py:1202-1205): model_type hunyuan_video1.5 with more than
    20 steps reads hunyuan_video1.5_40steps; the run report (on the sampler node) names it."""
    case = CASES["hunyuan_video1.5"]
    shape = TINY["hunyuan_video1.5"].latent
    settings = (0.06, 0.2, 2)
    for steps, table in ((20, "hunyuan_video1.5"), (24, "hunyuan_video1.5_40steps")):
        caplog.clear()
        model = tiny_model("hunyuan_video1.5")
        pos, neg = conds("hunyuan_video1.5")
        with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
            sample(magcache(comfy, model, "hunyuan_video1.5", settings), pos, neg, cfg=2.0, latent_shape=shape,
                   steps=steps)
        assert table_lines(caplog) == [table]
        want = expected(table, steps, settings)
        assert want[COND] and {b: skipped(calls, b) for b in (COND, UNCOND)} == want
    assert want != expected("hunyuan_video1.5", 24, settings)  # the 20-step table would skip otherwise
