"""Calibration on real ComfyUI: tiny Flux and tiny Wan, CPU."""
import json
import logging

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, predict_skips
from harness import TINY, conds, sample, tiny_model

STEPS = 10


def capture_residuals(dm, first, last, image_tokens):
    """Independent of the pack: (cond_or_uncond, first block input, last block output image tokens)
    per model call, from hooks on the two blocks."""
    calls = []

    def on_first(module, args, kwargs):
        img = kwargs["img"] if "img" in kwargs else args[0]
        to = kwargs["transformer_options"]
        calls.append({"cou": list(to["cond_or_uncond"]), "in": img.detach().clone()})

    def on_last(module, args, kwargs, output):
        out = output[0] if isinstance(output, tuple) else output
        calls[-1]["out"] = image_tokens(out.detach().clone(), calls[-1]["in"].shape[1])

    handles = [first.register_forward_pre_hook(on_first, with_kwargs=True),
               last.register_forward_hook(on_last, with_kwargs=True)]
    return calls, handles


def independent_ratios(calls):
    """ratio_t = mean over batch and tokens of ||r_t|| / ||r_t-1||, per branch, float32."""
    prev, out = {}, {COND: [], UNCOND: []}
    for c in calls:
        r = (c["out"] - c["in"]).float()
        b = r.shape[0] // len(c["cou"])
        for i, branch in enumerate(c["cou"]):
            cur = r[i * b:(i + 1) * b]
            out[branch].append(1.0 if branch not in prev else (cur.norm(dim=-1) / prev[branch].norm(dim=-1)).mean().item())
            prev[branch] = cur
    return out


CASES = {
    "flux": ("flux", lambda dm: (dm.double_blocks[0], dm.single_blocks[-1]), lambda x, n: x[:, -n:], "Flux", "flux"),
    "wan": ("wan_t2v", lambda dm: (dm.blocks[0], dm.blocks[-1]), lambda x, n: x, "Wan", "wan2.1_t2v_1.3B"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_calibration_measures_the_ratios_and_saves_a_usable_profile(comfy, user_dir, name, caplog):
    tiny, blocks, image_tokens, family, reference = CASES[name]
    model = tiny_model(tiny)
    pos, neg = conds(tiny)
    shape = TINY[tiny].latent
    ref = sample(model, pos, neg, seed=7, steps=STEPS, latent_shape=shape)

    cal_model, handle = comfy.MagCacheCalibration.execute(model, "auto", f"tiny {name}").result
    dm = model.model.diffusion_model
    calls, handles = capture_residuals(dm, *blocks(dm), image_tokens)
    try:
        with caplog.at_level(logging.INFO, logger="MagCache"):
            out = sample(cal_model, pos, neg, seed=7, steps=STEPS, latent_shape=shape)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(out, ref)  # calibration changes nothing in the output

    want = independent_ratios(calls)
    path = user_dir / "magcache" / f"tiny {name}.json"
    assert f"saved profile 'tiny {name}' (10 steps, CFG)" in caplog.text and path.is_file()
    data = json.loads(path.read_text())
    assert data["family"] == family and data["steps"] == STEPS and data["cfg_interleaved"] is True
    assert data["sampler"] == "euler" and data["scheduler"] == "simple" and data["reference"] == reference
    import comfyui_version

    assert data["comfyui_version"] == comfyui_version.__version__ and data["created"]
    assert torch.allclose(torch.tensor(data["ratios"][0::2]), torch.tensor(want[COND]), rtol=1e-5)
    assert torch.allclose(torch.tensor(data["ratios"][1::2]), torch.tensor(want[UNCOND]), rtol=1e-5)
    assert len(set(data["ratios"])) > 4  # real measurements, not a constant
    assert path.with_suffix(".png").is_file()

    # the profile is listed by the MagCache node and gives the skip set the rule predicts
    options = comfy.MagCache.define_schema().inputs[1].options
    assert f"profile:tiny {name}" in options
    cached = comfy.MagCache.execute(model, f"profile:tiny {name}", 0.3, 0.1, 3, 0, -1).result[0]
    from test_families import CASES as FAMILY_CASES
    from test_families import observe, skipped

    case = FAMILY_CASES["wan_t2v"] if name == "wan" else None
    table = {COND: data["ratios"][0::2], UNCOND: data["ratios"][1::2]}
    rule = predict_skips(MagCacheConfig(thresh=0.3, retention_ratio=0.1, K=3), table, STEPS, branches=(COND, UNCOND),
                         round_half_up=(name == "flux"))
    if case is None:
        from harness import observe as flux_observe
        from harness import skipped_steps

        with flux_observe(dm) as log:
            sample(cached, pos, neg, seed=7, steps=STEPS, latent_shape=shape)
        got = {b: skipped_steps(log, b) for b in (COND, UNCOND)}
    else:
        with observe(case, dm) as calls2:
            sample(cached, pos, neg, seed=7, steps=STEPS, latent_shape=shape)
        got = {b: skipped(calls2, b) for b in (COND, UNCOND)}
    assert got == rule and rule[COND]

    # wired straight: the handle from the calibration node feeds a MagCache node
    wired = comfy.MagCache.execute(model, "auto", 0.3, 0.1, 3, 0, -1, ratios=handle).result[0]
    assert torch.equal(sample(wired, pos, neg, seed=7, steps=STEPS, latent_shape=shape),
                       sample(cached, pos, neg, seed=7, steps=STEPS, latent_shape=shape))

    # and the plot node draws it
    image = comfy.MagCacheCalibrationPlot.execute(handle, 0.3, 0.1, 3).result[0]
    assert image.shape == (1, 440, 960, 3) and 0 <= image.min() and image.max() <= 1


def test_profile_for_another_family_and_broken_profiles_are_clear_errors(comfy, user_dir):
    from comfyui_magcache.magcache import ProfileError

    (user_dir / "magcache").mkdir()
    (user_dir / "magcache" / "broken.json").write_text("{")
    good = {"format": "magcache-profile", "version": 1, "family": "Flux", "steps": 2, "cfg_interleaved": False,
            "ratios": [1.0, 0.9]}
    (user_dir / "magcache" / "fluxprof.json").write_text(json.dumps(good))
    options = comfy.MagCache.define_schema().inputs[1].options  # a broken profile does not break the list
    assert "profile:broken" in options and "profile:fluxprof" in options
    with pytest.raises(ProfileError, match=r"MagCache profile 'broken.json' cannot be used: not valid JSON"):
        comfy.MagCache.execute(tiny_model("flux"), "profile:broken", 0.2, 0.2, 2, 0, -1)
    with pytest.raises(ProfileError, match=r"profile 'profile:fluxprof' was calibrated on Flux, the loaded model is Wan"):
        comfy.MagCache.execute(tiny_model("wan_t2v"), "profile:fluxprof", 0.2, 0.2, 2, 0, -1)


def test_an_unfilled_calibration_switches_caching_off_with_a_warning(comfy, user_dir, caplog):
    model = tiny_model("wan_t2v")
    _, handle = comfy.MagCacheCalibration.execute(model, "auto", "never run").result
    pos, neg = conds("wan_t2v")
    ref = sample(model, pos, neg, seed=2, steps=STEPS, latent_shape=TINY["wan_t2v"].latent)
    wired = comfy.MagCache.execute(model, "auto", 0.3, 0.1, 3, 0, -1, ratios=handle).result[0]
    with caplog.at_level(logging.WARNING, logger="MagCache"):
        out = sample(wired, pos, neg, seed=2, steps=STEPS, latent_shape=TINY["wan_t2v"].latent)
    assert torch.equal(out, ref)
    assert "caching is off for this run: the connected calibration has no result yet" in caplog.text
    with pytest.raises(ValueError, match="no result yet"):
        comfy.MagCacheCalibrationPlot.execute(handle, 0.3, 0.1, 3)
    with pytest.raises(Exception, match="cannot be used"):
        comfy.MagCacheCalibration.execute(model, "auto", "../escape")
