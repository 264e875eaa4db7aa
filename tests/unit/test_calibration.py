import json
import math
import os

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
from comfyui_magcache.magcache.plot import plot_calibration, save_png
from comfyui_magcache.magcache.profiles import check_name, fingerprint, profile_path

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
    assert_profile_error(path, fragment)


def assert_profile_error(path, fragment):
    """The error names the file and the problem on a short first line that says what to do, the full
    path after it; nothing echoed from the file makes it long."""
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    first, *rest = msg.splitlines()
    assert first.startswith(f"MagCache profile '{path.name}' cannot be used: ") and fragment in first, msg
    assert first.endswith("Fix or delete the file, or calibrate again.") and len(first) <= 220, first
    assert rest == [f"file: {path}"] and len(msg) <= 600
    return msg


DEEP = 200_000


@pytest.mark.parametrize("data, fragment", [
    ("[" * DEEP + "]" * DEEP, "it is nested too deeply to be a profile"),
    ('{"format": "magcache-profile", "x": ' + "[" * DEEP + "]" * DEEP + "}", "nested too deeply"),
    (b'{"format": "magcache-profile", "family": "Fl\xffux"}', "it is not UTF-8 text (invalid byte at position 44)"),
    (json.dumps(dict(GOOD, ratios=[1.0, 0.9])).replace("0.9", "1" * 400), "it holds a number with 400 digits"),
    (json.dumps(dict(GOOD, steps=2)).replace('"steps": 2', '"steps": ' + "9" * 400), "a number with 400 digits"),
    (json.dumps(dict(GOOD, ratios=[1.0, 0.9])).replace("0.9", "1" * 400 + ".5"), "ratios[1] must be a finite"),
    (json.dumps(dict(GOOD, ratios=[1.0, 0.9])).replace("0.9", "1e999"), "ratios[1] must be a finite positive number, got inf"),
    (json.dumps(dict(GOOD, family=5)), "'family' must be a model family name, got 5"),
    (json.dumps(dict(GOOD, family=["Flux"] * 3)), "'family' must be a model family name, got a list of 3 items"),
    (json.dumps(dict(GOOD, format=[[[[1]]]])), "'format' is a list of 1 items, expected 'magcache-profile'"),
    (json.dumps(dict(GOOD, format="x" * 900_000)), "'format' is 'xxxxx"),
    (json.dumps(dict(GOOD, version="1")), "'version' must be a whole number >= 1, got '1'"),
    (json.dumps(dict(GOOD, version=2)), "written by a newer MagCache"),
    (json.dumps(dict(GOOD, steps=2.0)), "'steps' must be a whole number >= 1, got 2.0"),
    (json.dumps(dict(GOOD, ratios={"0": 1.0})), "'ratios' must be a list of numbers, got an object with 1 keys"),
    (json.dumps(dict(GOOD, ratios=[1.0, [0.9]])), "ratios[1] must be a finite positive number, got a list of 1 items"),
    (json.dumps(dict(GOOD, ratios=[1.0, None])), "ratios[1] must be a finite positive number, got None"),
    (json.dumps(dict(GOOD, ratios=[1.0, True])), "ratios[1] must be a finite positive number, got True"),
    (" " * 1_000_001, "it has 1000001 bytes, more than the 1000000 byte limit for profiles"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_hostile_profiles_are_clear_errors_naming_the_file(tmp_path, data, fragment):
    path = tmp_path / "bad.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    assert_profile_error(path, fragment)


def test_profile_that_is_not_a_regular_file_or_is_missing(tmp_path):
    (tmp_path / "dir.json").mkdir()
    assert_profile_error(tmp_path / "dir.json", "it is not a regular file")
    assert_profile_error(tmp_path / "nope.json", "it cannot be read (No such file or directory)")
    assert list_profiles(tmp_path) == []


def test_a_utf8_bom_is_accepted(tmp_path):
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode())
    assert load_profile(tmp_path / "bom.json")[0].ratios == (1.0, 0.9)


def test_a_profile_too_large_to_read_back_is_not_saved(tmp_path):
    from comfyui_magcache.magcache import CalibrationResult

    curve = [1.0 + 1 / (3 + i) for i in range(8000)]  # full-length decimals, as measured ratios have
    big = CalibrationResult(steps=8000, ratios={COND: curve, UNCOND: curve}, std={COND: curve, UNCOND: curve},
                            cos_dis={COND: curve, UNCOND: curve})
    with pytest.raises(ProfileError, match=r"'big' was not saved: 8000 steps make \d+ bytes, more than the 1000000 "
                                           r"byte limit for profiles; calibrate with fewer steps"):
        save_profile(tmp_path, "big", big, {"family": "Flux"})
    assert list(tmp_path.iterdir()) == []


def test_missing_file_and_bad_names(tmp_path):
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "nope.json")
    for bad in ("", "../x", "a/b", ".hidden", "x" * 81, "name.", "a\nb", "a\x00", "名前", None, 5):
        with pytest.raises(ProfileError, match="cannot be used: (use 1-80 letters|it must be text)"):
            check_name(bad)
    assert profile_path(tmp_path, " ok_name-2 ").name == "ok_name-2.json"
    (tmp_path / "broken.json").write_text("{")
    assert list_profiles(tmp_path) == ["broken"]  # listing never parses: a broken profile cannot break it
    assert list_profiles(tmp_path / "absent") == []


def test_names_are_matched_whole_so_a_trailing_newline_is_not_a_second_name(tmp_path):
    (tmp_path / "x\n.json").write_text(json.dumps(GOOD))  # '$' would have matched before the newline
    (tmp_path / "y.json\n").write_text(json.dumps(GOOD))
    assert list_profiles(tmp_path) == []
    (tmp_path / "x .json").write_text(json.dumps(GOOD))  # would open x.json once stripped
    (tmp_path / "x..json").write_text(json.dumps(GOOD))
    assert list_profiles(tmp_path) == []
    (tmp_path / "x.json").write_text(json.dumps(GOOD))
    assert list_profiles(tmp_path) == ["x"]


@pytest.mark.parametrize("name", ["CON", "con", "NUL", "Aux", "PRN", "COM1", "com9", "LPT1", "lpt0", "CON.backup",
                                  "nul.x.y", "COM1 .old"])
def test_windows_reserved_names_are_refused_and_not_listed(tmp_path, name):
    with pytest.raises(ProfileError, match="reserved device name on Windows; pick another name"):
        check_name(name)
    (tmp_path / f"{name}.json").write_text(json.dumps(GOOD))
    assert list_profiles(tmp_path) == []


def test_names_close_to_reserved_ones_are_fine():
    for name in ("CONSOLE", "com10", "nullable", "LPT", "my CON"):
        assert check_name(name) == name


def test_a_huge_bad_name_is_not_echoed_whole():
    with pytest.raises(ProfileError) as e:
        check_name("é" * 5_000_000)
    assert len(str(e.value)) < 300 and "(5000000 characters)" in str(e.value)


def test_fingerprint_changes_when_the_file_is_edited(tmp_path):
    path = tmp_path / "p.json"
    assert fingerprint(path) == ("missing",)
    path.write_text(json.dumps(GOOD))
    first = fingerprint(path)
    path.write_text(json.dumps(dict(GOOD, ratios=[1.0, 0.8])))  # same size, new content
    os.utime(path, ns=(first[0] + 1_000_000_000, first[0] + 1_000_000_000))
    assert fingerprint(path) != first
    path.write_text(json.dumps(dict(GOOD, ratios=[1.0, 0.85])))
    assert fingerprint(path)[1] != first[1]


def test_png_is_written_atomically_and_never_through_a_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "magcache"
    folder.mkdir()
    (folder / "p.png").symlink_to(outside)
    picture = np.zeros((4, 6, 3), dtype=np.uint8)
    save_png(folder / "p.png", picture)
    assert outside.read_text() == "keep me"  # the planted link was replaced, its target untouched
    assert not (folder / "p.png").is_symlink() and (folder / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in folder.iterdir()) == ["p.png"]  # no temporary file left
    (folder / "d.png").mkdir()
    with pytest.raises(OSError):
        save_png(folder / "d.png", picture)
    assert sorted(p.name for p in folder.iterdir()) == ["d.png", "p.png"]


def test_profile_json_is_never_written_through_a_symlink(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.json").symlink_to(outside)
    cal = Calibration()
    for step in range(2):
        cal.record(C, step, torch.ones(1, 2, 2) * (1 + step))
    save_profile(tmp_path / "profiles", "p", cal.result(2), {"family": "Flux"})
    assert outside.read_text() == "keep me" and not (tmp_path / "profiles" / "p.json").is_symlink()


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
