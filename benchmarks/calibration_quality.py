"""What users ask about calibration, answered on the trained testbeds (README, "When to recalibrate").

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/calibration_quality.py [--models ...] [--samples 4]

For each model (cfg 4 unless said), MagCache at the evidence rule's settings with a profile that
does not match the run, against one that does, on the same cases:
- other prompts and seeds: the profile of another class and seed;
- other step counts: the 30-step profile interpolated to 15 and 60 steps (the pack's nearest
  interpolation, as the authors') against a profile measured at 15 and 60;
- cfg 1: the profile measured with CFG (its cond branch) against one measured at cfg 1.
Each: speed-up by compute, PSNR / SSIM to the plain run at that step count and cfg, checker
accuracy, and the largest ratio difference between the two profiles. Writes
benchmarks/results/calibration.json. Not in CI."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import testbed_run  # noqa: E402

CFG = 2.0


def compare_profiles(name, patcher, cases, steps, cfg, measured, other, what):
    """MagCache with `measured` (matching the run) and `other` (not), both at the settings the
    evidence rule gives on `measured`."""
    from comfyui_magcache.magcache.evidence import evidence_settings
    from comfyui_magcache.testbed import compare

    compare.STEPS = steps
    ref = compare.run(name, patcher, compare.plain(steps), cases, cfg)
    settings = evidence_settings(measured.result.preset("m"), steps)
    out = {"question": what, "steps": steps, "cfg": cfg, "settings": settings}
    for key, handle in (("matching", measured), ("other", other)):
        res = compare.run(name, patcher, compare.magcache(handle, *settings), cases, cfg)
        row = res.row(ref, cfg)
        out[key] = {k: row[k] for k in ("speedup_compute", "psnr", "ssim", "accuracy")}
    a = measured.result.preset("a").tables(steps)[0]
    b = other.result.preset("b").tables(steps)[0]
    out["max_ratio_difference"] = max(abs(x - y) for x, y in zip(a, b))
    out["plain_accuracy"] = ref.correct / len(cases)
    m, o = out["matching"], out["other"]
    print(f"{name}: {what}: matching {m['speedup_compute']:.2f}x {m['psnr']:.1f} dB {m['accuracy']:.0%}; "
          f"other {o['speedup_compute']:.2f}x {o['psnr']:.1f} dB {o['accuracy']:.0%}; "
          f"max ratio difference {out['max_ratio_difference']:.3f}", flush=True)
    compare.STEPS = 30
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "calibration.json")
    opts = testbed_run.start(ap)
    from comfyui_magcache.testbed import compare, models

    t0 = time.monotonic()
    report = {"command": "python benchmarks/calibration_quality.py " + " ".join(sys.argv[1:]), "models": {}}
    for name in testbed_run.model_names(opts):
        patcher = models.load(name)
        cases = models.cases(opts.samples)
        cal = lambda steps=30, cfg=CFG, case=(0, 1000): compare.calibrate(name, patcher, cfg, (case,), steps)  # noqa: E731
        base = cal()
        rows = [compare_profiles(name, patcher, cases, 30, CFG, base, cal(case=(5, 2000)),
                                 "profile of another class and seed")]
        for steps in (15, 60):
            rows.append(compare_profiles(name, patcher, cases, steps, CFG, cal(steps), base,
                                         f"30-step profile used at {steps} steps"))
        rows.append(compare_profiles(name, patcher, cases, 30, 1.0, cal(cfg=1.0), base, "CFG profile used at cfg 1"))
        report["models"][name] = rows
    return testbed_run.finish(report, opts.out, t0)


if __name__ == "__main__":
    sys.exit(main())
