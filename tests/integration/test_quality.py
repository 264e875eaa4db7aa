"""Quality regression on the trained testbeds (testbed/): the plain model is right, and MagCache at
its recommended settings (the evidence rule on the model's own calibration) stays within a PSNR
floor of the plain run, with the checker accepting as many samples. A change that costs quality
fails here.

Floors are ours, set from benchmarks/quality.py (README, "Quality") with a margin: on one machine the
outputs are deterministic, the margin covers other CPUs and torch builds. 1 torch thread, a few
samples: about a minute per model on 2 cores."""
import pytest
import torch
from comfyui_magcache.testbed import compare, models

SAMPLES = 8
CFG = 2.0
# ours: the benchmark measured (cfg 2, 30 steps) minus a margin
FLOOR_DB = {"hunyuan_image": 38.0,  # measured 41.5 dB at 2.00x (README, Quality)
            "wan_video": 37.0}  # measured 40.4 dB at 2.00x


@pytest.fixture(scope="module", params=models.TRAINED)
def testbed(request, comfy):
    torch.set_num_threads(1)
    name = request.param
    patcher = models.load(name)
    plain = compare.run(name, patcher, compare.plain(), models.cases(SAMPLES), CFG)
    return name, patcher, plain


def test_the_testbeds_are_trained():
    assert set(models.TRAINED) == {"hunyuan_image", "wan_video"} == set(FLOOR_DB)


@pytest.mark.parametrize("name", sorted(models.TESTBEDS))
def test_each_testbed_config_is_what_comfyuis_loader_detects(comfy, name):
    """A checkpoint is only a testbed if UNETLoader rebuilds the model it was trained as. ComfyUI's
    detection derives some settings instead of reading them (Wan: num_heads = dim // 128): a config
    that disagrees trains one model and loads another."""
    import comfy.model_detection

    tb = models.TESTBEDS[name]
    state = models.build(name).diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(state, "")
    compared = {k: (v, detected[k]) for k, v in tb.unet.items() if k in detected}
    assert "num_heads" in compared, sorted(detected)
    wrong = {k: pair for k, pair in compared.items() if _norm(pair[0]) != _norm(pair[1])}
    assert not wrong, f"{name}: trained as / loaded as {wrong}"


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def test_the_plain_model_is_right(testbed):
    name, _, plain = testbed
    assert plain.correct >= 0.9 * SAMPLES, f"{name}: the checker accepts {plain.correct}/{SAMPLES} plain samples"


def test_magcache_at_recommended_settings_keeps_quality(testbed):
    from comfyui_magcache.magcache.evidence import evidence_settings

    name, patcher, plain = testbed
    handle = compare.calibrate(name, patcher, CFG)
    settings = evidence_settings(handle.result.preset("test"), compare.STEPS)
    res = compare.run(name, patcher, compare.magcache(handle, *settings), models.cases(SAMPLES), CFG)
    row = res.row(plain, CFG)
    assert row["speedup_compute"] >= 1.9, row  # the rule skips about half the steps
    assert row["psnr"] >= FLOOR_DB[name], row
    assert res.correct >= plain.correct, row


def test_the_nodes_default_applies_the_rule_on_the_testbed(testbed, comfy, user_dir, caplog):
    """The user's path: MagCache with model_type auto_calibrate and its default settings_from (auto). The
    first run measures the model's profile (output of no MagCache); the next runs take thresh / retention /
    K from the evidence rule on it, whatever the three inputs say, and keep the same floor."""
    import logging

    from comfyui_magcache.testbed.compare import Variant

    name, patcher, plain = testbed
    model = comfy.MagCache.execute(patcher, "auto_calibrate", 0.3, 0.1, 6, 0, -1).result[0]  # inputs not used
    with torch.inference_mode():
        first = models.sample(model, 0, 1000, cfg=CFG)  # a case not among the checked ones: measures
    assert torch.equal(first, models.sample(patcher, 0, 1000, cfg=CFG))
    with caplog.at_level(logging.INFO, logger="MagCache"):
        res = compare.run(name, patcher, Variant("MagCache", "node default", lambda p: model), models.cases(SAMPLES),
                          CFG)
    row = res.row(plain, CFG)
    assert "(evidence rule: thresh " in caplog.text and "/ retention 0.2 / K 3)" in caplog.text
    assert row["speedup_compute"] >= 1.9, row
    assert row["psnr"] >= FLOOR_DB[name], row
    assert res.correct >= plain.correct, row
