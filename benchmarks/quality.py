"""Quality at equal compute on the trained testbeds: MagCache against ComfyUI core's EasyCache and
LazyCache and against sampling fewer steps, side by side in one run (same cases, same seeds).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/quality.py [--models hunyuan_image,wan_video]
        [--samples 8] [--cfg 4,1]

Per model and cfg: the plain run at 30 steps (euler, simple) is the reference; MagCache uses the
model's own calibration (one run of a case not in the benchmark) with a threshold sweep at
retention 0.2 with K 2 and 3, and at 0.1 / 4, and at the evidence rule's settings
(magcache/evidence.py); EasyCache (as it is, and with its input copied: see
testbed/compare.easycache) and LazyCache at their default start/end with a threshold sweep; plain
sampling at fewer steps. Per variant: computed block calls (speed-up by compute), wall-time speed-up
(1 thread, a shared machine: indicative only), PSNR and SSIM of the final latent (model space) to
the reference, and the checker's accuracy. Writes benchmarks/results/quality.json and
docs/quality_<model>.png (PSNR against speed-up by compute, one curve per method). Not in CI."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import testbed_run  # noqa: E402

MAG_THRESH = (0.03, 0.06, 0.1, 0.2, 0.3)  # the node accepts 0..0.3
MAG_SHAPES = ((0.2, 2), (0.2, 3), (0.1, 4))  # (retention, K)
EASY_THRESH = (0.05, 0.1, 0.2, 0.4)
FEWER = (20, 15, 10, 8)
TARGETS = (2.0, 3.0)
COLORS = {"MagCache": (214, 39, 40), "MagCache (evidence rule)": (120, 0, 0), "fewer steps": (31, 119, 180), "EasyCache": (150, 150, 150),
          "EasyCache (input copied)": (44, 160, 44), "LazyCache": (148, 103, 189)}


def variants(handle):
    from comfyui_magcache.magcache.evidence import evidence_settings
    from comfyui_magcache.testbed import compare

    rule = compare.magcache(handle, *evidence_settings(handle.result.preset("profile"), compare.STEPS))
    rule.method, rule.label = "MagCache (evidence rule)", "evidence rule " + rule.label.split(" ", 1)[1]
    out = [compare.plain()] + [compare.plain(n) for n in FEWER] + [rule]
    out += [compare.magcache(handle, t, r, k) for r, k in MAG_SHAPES for t in MAG_THRESH]
    out += [compare.easycache(t) for t in EASY_THRESH]
    out += [compare.easycache(t, copied=True) for t in EASY_THRESH]
    out += [compare.easycache(t, lazy=True) for t in EASY_THRESH]
    return out


def best_at(rows, method, target):
    """The method's best PSNR among its variants at or beyond `target` speed-up by compute."""
    ok = [r for r in rows if r["method"] == method and r["speedup_compute"] >= target - 0.01]
    if not ok:
        reached = max((r["speedup_compute"] for r in rows if r["method"] == method), default=0)
        return {"reached": False, "max_speedup": reached}
    best = max(ok, key=lambda r: r["psnr"])
    return {"reached": True, **{k: best[k] for k in ("label", "speedup_compute", "psnr", "ssim", "accuracy")}}


def summarize(rows):
    methods = ["MagCache", "MagCache (evidence rule)", "fewer steps", "EasyCache", "EasyCache (input copied)", "LazyCache"]
    return {f"{t:g}x": {m: best_at(rows, m, t) for m in methods} for t in TARGETS}


def plot_series(rows):
    """Per method its best settings: the points no other setting beats in both speed-up and PSNR."""
    series = []
    for method, color in COLORS.items():
        pts = [(r["speedup_compute"], r["psnr"]) for r in rows if r["method"] == method]
        front = [p for p in pts if not any(q[0] >= p[0] and q[1] > p[1] for q in pts if q != p)]
        series.append((method, front, color))
    return series


def fmt(row):
    ps = "inf" if math.isinf(row.get("psnr", 0)) else f"{row.get('psnr', float('nan')):6.1f}"
    return (f"  {row['label']:32s} computed {row['computed']:5.1f}  x{row['speedup_compute']:4.2f} compute  "
            f"x{row.get('speedup_wall', 1):4.2f} wall  PSNR {ps} dB  SSIM {row.get('ssim', 1):.3f}  "
            f"checker {row['correct']}/{row['samples']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated testbeds (default: every trained one)")
    ap.add_argument("--samples", type=int, default=8, help="cases per model and cfg (one class each)")
    ap.add_argument("--cfg", default="2,1", help="comma-separated cfg values (the testbeds draw as trained at cfg 2: README, Quality)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    ap.add_argument("--plots", type=Path, default=ROOT / "docs")
    opts = testbed_run.start(ap)
    from comfyui_magcache.magcache.plot import plot_lines, save_png
    from comfyui_magcache.testbed import compare, models

    names = testbed_run.model_names(opts)
    cfgs = [float(c) for c in opts.cfg.split(",")]
    report = testbed_run.new_report("quality.py")
    t_start = time.monotonic()
    for name in names:
        patcher = models.load(name)
        cases = models.cases(opts.samples)
        per_model = report["models"].setdefault(name, {})
        series = []
        for cfg in cfgs:
            handle = compare.calibrate(name, patcher, cfg)
            ratios = handle.result.ratios[0]
            print(f"\n{name}, cfg {cfg:g}: calibrated ratios (cond) first five "
                  f"{[round(r, 3) for r in ratios[:5]]}, last five {[round(r, 3) for r in ratios[-5:]]}", flush=True)
            rows, reference = [], None
            for v in variants(handle):
                res = compare.run(name, patcher, v, cases, cfg)
                reference = reference or res
                rows.append(res.row(reference, cfg))
                print(fmt(rows[-1]), flush=True)
            summary = summarize(rows)
            per_model[f"cfg {cfg:g}"] = {"ratios": {str(b): v for b, v in handle.result.ratios.items()},
                                         "rows": rows, "summary": summary}
            for target, by_method in summary.items():
                print(f"  at {target}: " + "; ".join(
                    f"{m} {s['psnr']:.1f} dB / {s['ssim']:.3f} / {s['accuracy']:.0%} ({s['speedup_compute']:.2f}x)"
                    if s["reached"] else f"{m} not reached (max {s['max_speedup']:.2f}x)"
                    for m, s in by_method.items()), flush=True)
            if cfg == cfgs[0]:
                series = plot_series(rows)
        tb = models.TESTBEDS[name]
        path = opts.plots / f"quality_{name}.png"
        save_png(path, plot_lines(series, title=f"{name} ({tb.comfy_config}), cfg {cfgs[0]:g}: PSNR of the final "
                                               f"latent to {compare.STEPS} plain steps ({opts.samples} samples); "
                                               f"each method's best settings", xlabel="speed-up by compute (x)",
                                  ylabel="PSNR dB"))
        print(f"plot: {path}", flush=True)
    return testbed_run.finish(report, opts.out, t_start)


if __name__ == "__main__":
    sys.exit(main())
