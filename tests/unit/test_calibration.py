import json
import math

import numpy as np
import pytest
import torch
from comfyui_magcache.magcache import (
    COND,
    UNCOND,
    Calibration,
    MagCacheConfig,
    ProfileError,
    get_preset,
    list_profiles,
    load_profile,
    save_profile,
)
from comfyui_magcache.magcache.calibration import step_stats
from comfyui_magcache.magcache.plot import plot_calibration
from comfyui_magcache.magcache.profiles import check_name, profile_path

C, U = (COND, "c"), (UNCOND, "u")


def test_step_stats_against_hand_computed_residuals():
    prev = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # token norms 5, 1
    cur = torch.tensor([[[6.0, 8.0], [0.0, 1.0]]])  # token norms 10, 1; second token turned by 90 degrees
    ratio, std, cos = step_stats(prev, cur).tolist()
    assert ratio == pytest.approx((2.0 + 1.0) / 2)
    assert std == pytest.approx(math.sqrt(((2 - 1.5) ** 2 + (1 - 1.5) ** 2) / 1))  # unbiased, as torch.std
    assert cos == pytest.approx((0.0 + 1.0) / 2)


def test_computed_in_float32_from_half_precision():
    prev = torch.full((1, 4, 8), 1.0, dtype=torch.bfloat16)
    cur = torch.full((1, 4, 8), 1.5, dtype=torch.bfloat16)
    stats = step_stats(prev, cur)
    assert stats.dtype == torch.float32 and stats[0].item() == pytest.approx(1.5)


def test_recording_gives_per_branch_curves_in_the_table_layout():
    cal = Calibration()
    base = torch.ones(1, 3, 2)
    for step, (c, u) in enumerate([(1.0, 1.0), (2.0, 1.5), (3.0, 1.5)]):
        cal.record(U, step, base * u)
        cal.record(C, step, base * c)
        cal.record(C, step, base * 99)  # a repeated evaluation of the same step is ignored
    res = cal.result(3)
    assert res.cfg and res.ratios[COND] == pytest.approx([1.0, 2.0, 1.5])
    assert res.ratios[UNCOND] == pytest.approx([1.0, 1.5, 1.0])
    assert res.table() == pytest.approx([1.0, 1.0, 2.0, 1.5, 1.5, 1.0])
    preset = res.preset("x")
    assert preset.cfg_interleaved and preset.tables(3)[UNCOND] == pytest.approx((1.0, 1.5, 1.0))


def test_cfg_one_records_one_curve_and_chunks_of_a_branch_are_averaged():
    cal = Calibration()
    for step in range(3):
        cal.record((COND, "a"), step, torch.ones(1, 2, 2) * 2 ** step)
        cal.record((COND, "b"), step, torch.ones(1, 2, 2) * 4 ** step)
    res = cal.result(3)
    assert not res.cfg and res.table() == pytest.approx([1.0, 3.0, 3.0])
    assert Calibration().result(3) is None


def test_profile_round_trip(tmp_path):
    cal = Calibration()
    for step in range(4):
        cal.record(C, step, torch.ones(1, 2, 2) * (1 + step))
        cal.record(U, step, torch.ones(1, 2, 2) * (2 + step))
    res = cal.result(4)
    path = save_profile(tmp_path, "my model 1", res, {"family": "Flux", "sampler": "euler"})
    assert path == tmp_path / "my model 1.json" and list_profiles(tmp_path) == ["my model 1"]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # the temporary file was renamed
    preset, meta = load_profile(path)
    assert preset.ratios == pytest.approx(tuple(res.table())) and preset.steps == 4 and preset.cfg_interleaved
    assert meta["family"] == "Flux" and meta["sampler"] == "euler" and meta["name"] == "my model 1"
    data = json.loads(path.read_text())
    assert len(data["std"]) == len(data["cos_dis"]) == 8


GOOD = {"format": "magcache-profile", "version": 1, "family": "Flux", "steps": 2, "cfg_interleaved": False,
        "ratios": [1.0, 0.9]}


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ('{"format": "magcache-profile", "ratios": [NaN]}', "not valid JSON (NaN is not allowed)"),
    (json.dumps([1, 2]), "expected a JSON object"),
    (json.dumps(dict(GOOD, ratios=[1.0, 0.0])), "ratios[1] must be a finite positive number, got 0.0"),
    (json.dumps(dict(GOOD, ratios=[1.0, -0.5])), "ratios[1] must be a finite positive number, got -0.5"),
    (json.dumps(dict(GOOD, ratios=[1.0, "a"])), "ratios[1] must be a finite positive number, got 'a'"),
    (json.dumps(dict(GOOD, ratios=[1.0, 1e400])), "not valid JSON (Infinity is not allowed)"),
    (json.dumps(dict(GOOD, ratios=[1.0, 0.9, 0.8])), "3 ratios for 2 steps, expected 2 (one per step)"),
    (json.dumps(dict(GOOD, cfg_interleaved=True)), "2 ratios for 2 steps, expected 4 (cond and uncond per step)"),
    (json.dumps(dict(GOOD, steps=0)), "'steps' must be a whole number >= 1, got 0"),
    (json.dumps(dict(GOOD, cfg_interleaved="yes")), "'cfg_interleaved' must be true or false, got 'yes'"),
    (json.dumps(dict(GOOD, ratios="1,2")), "'ratios' must be a list of numbers"),
    (json.dumps(dict(GOOD, format="other")), "'format' is 'other', expected 'magcache-profile'"),
] + [(json.dumps({k: v for k, v in GOOD.items() if k != missing}), f"missing field '{missing}'")
     for missing in ("format", "family", "steps", "cfg_interleaved", "ratios")])
def test_malformed_profiles_give_their_specific_error(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value).startswith(f"MagCache profile {path}: ") and fragment in str(e.value)


def test_missing_file_and_bad_names(tmp_path):
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "nope.json")
    for bad in ("", "../x", "a/b", ".hidden", "x" * 81, "name."):
        with pytest.raises(ProfileError, match="is not usable"):
            check_name(bad)
    assert profile_path(tmp_path, " ok_name-2 ").name == "ok_name-2.json"
    (tmp_path / "broken.json").write_text("{")
    assert list_profiles(tmp_path) == ["broken"]  # listing never parses: a broken profile cannot break it
    assert list_profiles(tmp_path / "absent") == []


def test_plot_shows_curves_and_skipped_steps():
    cal = Calibration()
    for step in range(20):
        cal.record(C, step, torch.ones(1, 2, 2) * (1.0 + 0.01 * step))
        cal.record(U, step, torch.ones(1, 2, 2) * (1.0 + 0.012 * step))
    res = cal.result(20)
    cfg = MagCacheConfig(thresh=0.2, retention_ratio=0.2, K=3)
    img = plot_calibration(res, cfg, get_preset("chroma"), title="test")
    assert img.shape == (440, 960, 3) and img.dtype == np.uint8
    red = np.all(img == (214, 39, 40), axis=-1).sum()
    blue = np.all(img == (31, 119, 180), axis=-1).sum()
    orange = np.all(img == (255, 127, 14), axis=-1).sum()
    assert red > 100 and blue > 100 and orange > 100
    none = plot_calibration(res, MagCacheConfig(thresh=0.0), None)
    assert np.all(none == (214, 39, 40), axis=-1).sum() < red  # no skip marks, legend swatch only
