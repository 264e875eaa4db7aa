"""Profiles you can trust, without ComfyUI: a calibration refuses steps it never measured; the curve hash,
the fingerprint, typed metadata, the bound on automatic profiles, stale temporaries and write errors."""
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, Calibration, IncompleteCalibration, ProfileError, load_profile
from comfyui_magcache.magcache.profiles import (
    KEEP_AUTO,
    STALE_SECONDS,
    prune,
    remove_stale_temporaries,
    save_profile,
    touch,
    write_atomic,
)
from comfyui_magcache.model_patches.profile_keys import curve_hash, model_fingerprint
from comfyui_magcache.model_patches.selfcal import in_schedule

C, U = (COND, "c"), (UNCOND, "u")
ROOT = Path(__file__).resolve().parents[2]


def recorded(steps, branches=(C, U), offset=0):
    cal = Calibration()
    for step in steps:
        for key in branches:
            cal.record(key, offset + step, torch.ones(1, 2, 2) * (1 + step))
    return cal


def test_a_branch_with_a_step_never_recorded_is_refused():
    cal = recorded(range(5))  # a 12-step run stopped after step 5
    assert cal.reached() == 5
    with pytest.raises(IncompleteCalibration, match=r"cond branch measured 5 of 12 steps \(first missing: step 6\)"):
        cal.result(12)
    cal = recorded(range(12), branches=(C,))
    for step in range(11):
        cal.record(U, step, torch.ones(1, 2, 2))  # the uncond branch missed its last step
    with pytest.raises(IncompleteCalibration, match="uncond branch measured 11 of 12"):
        cal.result(12)
    assert recorded(range(12)).result(12).steps == 12


def test_a_piece_of_a_schedule_is_measured_over_its_own_steps():
    cal = recorded(range(6), offset=8)  # steps 8..13 of a 14-step schedule (partial denoise)
    res = cal.result(6, offset=8)
    assert res.steps == 6 and res.ratios[COND] == pytest.approx([1.0, 2.0, 1.5, 4 / 3, 1.25, 1.2])
    with pytest.raises(IncompleteCalibration):
        cal.result(6)  # read as steps 0..5 it has none of them


def test_a_piece_is_placed_back_in_its_schedule():
    cal = recorded(range(3), offset=2)
    preset = cal.result(3, offset=2).preset("p")
    whole = in_schedule(preset, {"offset": 2, "total": 6})
    assert whole.steps == 6 and whole.tables(6)[COND] == pytest.approx((1.0, 1.0, 1.0, 2.0, 1.5, 1.0))
    assert in_schedule(preset, {}) is preset


def test_curve_hash_is_short_rounded_and_tells_curves_apart():
    a = [1.0, 0.75, 0.5, 0.25, 0.0]
    assert curve_hash(a) == curve_hash([v + 1e-7 for v in a]) and len(curve_hash(a)) == 8  # float32 noise
    assert len({curve_hash(a), curve_hash(a[:3] + a[4:]), curve_hash([0.6, 0.45, 0.3, 0.15, 0.0]),
                curve_hash(a, "karras whole")}) == 4
    assert curve_hash(a) != curve_hash([v * 0.99 for v in a])  # the start counts (a partial denoise)


class Toy(torch.nn.Module):
    def __init__(self, seed=0, blocks=6):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(blocks))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))


def patcher(patches=None):
    return types.SimpleNamespace(model=types.SimpleNamespace(model_config=None), backup={}, patches=patches or {})


def test_fingerprint_notices_any_changed_layer_and_patches():
    base = model_fingerprint(patcher(), Toy())
    assert base == model_fingerprint(patcher(), Toy()) and len(base) == 12
    for i in range(6):  # each layer, also those the old 7-tensor sample never read
        toy = Toy()
        with torch.no_grad():
            toy.blocks[i].weight.mul_(1.001)
        assert model_fingerprint(patcher(), toy) != base, i
    w = torch.zeros(64, 64)
    assert len({base, model_fingerprint(patcher({"blocks.2.weight": [(0.5, w, 1.0, None, None)]}), Toy()),
                model_fingerprint(patcher({"blocks.2.weight": [(0.7, w, 1.0, None, None)]}), Toy())}) == 3
    half = Toy().half()
    assert model_fingerprint(patcher(), half) not in (base, model_fingerprint(patcher(), Toy().bfloat16()))


def test_fingerprint_is_the_same_in_another_process():
    code = textwrap.dedent(f"""
        import sys; sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT / 'scripts')!r}]
        import harness  # loads the pack as comfyui_magcache
        import test_profile_trust as t
        print(t.model_fingerprint(t.patcher(), t.Toy()))
    """)
    sys.path.insert(0, str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(Path(__file__).parent),
                         env={**os.environ, "PYTHONHASHSEED": "123"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == model_fingerprint(patcher(), Toy())


def saved(tmp_path, name="p", **meta):
    res = recorded(range(3)).result(3)
    return save_profile(tmp_path, name, res, {"family": "Flux", **meta})


@pytest.mark.parametrize("meta, fragment", [
    ({"self_calibration": "yes"}, "'self_calibration' must be an object"),
    ({"self_calibration": {"fingerprint": 12}}, "'self_calibration.fingerprint' must be text"),
    ({"self_calibration": {"cfg": True}}, "'self_calibration.fingerprint' must be text"),
    ({"self_calibration": {"fingerprint": "ab", "edit": "no"}}, "'self_calibration.edit' must be true or false"),
    ({"sampler": ["euler"]}, "'sampler' must be text or null"),
    ({"offset": True}, "'offset' must be a whole number"),
    ({"offset": 2, "total": 4}, "'offset' 2 and 'total' 4 do not hold its 3 steps"),
])
def test_wrongly_typed_metadata_is_a_bad_profile(tmp_path, meta, fragment):
    with pytest.raises(ProfileError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_profile(saved(tmp_path, **meta))


def test_well_typed_metadata_loads(tmp_path):
    auto = {"fingerprint": "0123456789ab", "curve": "1a2b3c4d", "cfg": True, "edit": False, "forced": False}
    _, meta = load_profile(saved(tmp_path, self_calibration=auto, offset=2, total=5, sampler="euler", reference=None))
    assert meta["self_calibration"] == auto and (meta["offset"], meta["total"]) == (2, 5)
    _, meta = load_profile(saved(tmp_path, "old", self_calibration={"fingerprint": "ab", "cfg": True}))  # older ones
    assert meta["self_calibration"]["fingerprint"] == "ab"


def test_the_most_recently_used_automatic_profiles_are_kept(tmp_path):
    now = time.time()
    paths = []
    for i in range(KEEP_AUTO + 3):
        p = saved(tmp_path, f"auto Flux abc {i}")
        p.with_suffix(".png").write_bytes(b"png")
        os.utime(p, (now - 1000 + i, now - 1000 + i))
        paths.append(p)
    other = saved(tmp_path, "auto Flux other 0")  # another model's profiles are not counted
    mine = saved(tmp_path, "my_calibration")
    os.utime(other, (now - 5000, now - 5000))
    touch(paths[0])  # the oldest, used just now
    assert os.stat(paths[0]).st_mtime == pytest.approx(now - 1000)  # its modification time is kept
    removed = prune(tmp_path, ("auto Flux abc ",))
    assert sorted(removed) == sorted(f"auto Flux abc {i}" for i in (1, 2, 3))
    left = {p.stem for p in tmp_path.glob("*.json")}
    assert len(left & {p.stem for p in paths}) == KEEP_AUTO and {other.stem, mine.stem, paths[0].stem} <= left
    assert not any((tmp_path / f"auto Flux abc {i}.png").exists() for i in (1, 2, 3))


def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    stale, fresh = tmp_path / ".p.abc123.tmp", tmp_path / ".q.def456.tmp"
    for f in (stale, fresh):
        f.write_bytes(b"half")
    old = time.time() - STALE_SECONDS - 60
    os.utime(stale, (old, old))
    saved(tmp_path)
    assert not stale.exists() and fresh.exists()  # a write in progress in another process is left alone
    assert remove_stale_temporaries(tmp_path, now=time.time() + STALE_SECONDS + 60) == [fresh]


def test_a_write_error_names_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "p.json"  # its folder is a file
    with pytest.raises(OSError, match=f"could not write {target}"):
        write_atomic(target, b"{}")
