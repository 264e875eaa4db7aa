"""Why MagCache and fewer steps rank as they do on a trained testbed: what each skipped step costs,
and how fast the velocity the sampler integrates turns.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/skip_cost.py [--models wan_video] [--cfg 2,1]

Per model and cfg, on the quality benchmark's cases, PSNR of the final latent against the plain
30-step run (as benchmarks/quality.py measures it) for:
- MagCache skipping exactly one step i (the cached residual reused at step i, every other step
  computed), for every step i: where in the run a skip costs;
- MagCache skipping every odd step (2x by compute, the same pattern as 15 steps): a skip against a
  doubled Euler step, step for step;
- 15 steps, and MagCache at the evidence rule's settings, for reference;
and, on the plain run, the relative change of the velocity the sampler integrates from each step to
the next, (x - denoised) / sigma (with CFG the guided one): the curvature of the trajectory, which a
larger Euler step's error grows with. The forced skip sets replace the skip rule's decision
(magcache.state.decide_branch) during those runs only; the rest is the MagCache node's own path.
Writes benchmarks/results/skip_cost.json. Ours; not in CI."""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import testbed_run  # noqa: E402
import torch  # noqa: E402


@contextlib.contextmanager
def forced_skips(steps: set):
    """MagCache skips exactly `steps` (where a residual exists) instead of what its rule decides."""
    from comfyui_magcache.magcache import state

    rule = state.decide_branch
    state.decide_branch = lambda acc, config, r, ratios, step, n, branch, has_residual, split=None: (
        has_residual and step in steps)
    try:
        yield
    finally:
        state.decide_branch = rule


def velocity_turn(name, patcher, cases, cfg, steps):
    """Per step i >= 1: |v_i - v_(i-1)| / |v_i| of the plain run, v = (x - denoised) / sigma, mean over cases."""
    import comfy.sample
    import comfy.samplers

    from comfyui_magcache.testbed import models

    sigmas = comfy.samplers.calculate_sigmas(patcher.model.model_sampling, "simple", steps)
    tb = models.TESTBEDS[name]
    per_case = []
    for cls, seed in cases:
        vs = []
        latent = torch.zeros(tb.latent)
        pos, neg = models.conds(cls)
        with torch.inference_mode():
            comfy.sample.sample(patcher, comfy.sample.prepare_noise(latent, seed), steps, cfg, "euler", "simple",
                                pos, neg, latent, seed=seed, disable_pbar=True,
                                callback=lambda i, x0, x, total: vs.append((x - x0) / sigmas[i]))
        per_case.append([float((vs[i] - vs[i - 1]).norm() / vs[i].norm()) for i in range(1, len(vs))])
    return [sum(col) / len(col) for col in zip(*per_case)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated testbeds (default: every trained one)")
    ap.add_argument("--samples", type=int, default=8, help="cases per model and cfg")
    ap.add_argument("--cfg", default="2,1", help="comma-separated cfg values")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "skip_cost.json")
    opts = testbed_run.start(ap)
    from comfyui_magcache.magcache.evidence import evidence_settings
    from comfyui_magcache.testbed import compare, models

    n = compare.STEPS
    report = testbed_run.new_report("skip_cost.py")
    t_start = time.monotonic()
    for name in testbed_run.model_names(opts):
        patcher = models.load(name)
        cases = models.cases(opts.samples)
        for cfg in (float(c) for c in opts.cfg.split(",")):
            handle = compare.calibrate(name, patcher, cfg)
            ref = compare.run(name, patcher, compare.plain(), cases, cfg)

            def psnr(variant):
                return round(compare.run(name, patcher, variant, cases, cfg).row(ref, cfg)["psnr"], 2)

            def forced_psnr(steps: set):
                """PSNR with MagCache skipping exactly `steps` (checked by the block calls counted)."""
                with forced_skips(steps):
                    res = compare.run(name, patcher, compare.magcache(handle, 0.3, 0.1, 4), cases, cfg)
                want = ref.rows // n * (n - len(steps))
                if res.rows != want:
                    raise RuntimeError(f"forced skips {sorted(steps)} not applied: {res.rows} block rows, want {want}")
                return round(res.row(ref, cfg)["psnr"], 2)

            single = {i: forced_psnr({i}) for i in range(1, n)}
            odd = forced_psnr(set(range(1, n, 2)))
            rule = evidence_settings(handle.result.preset("profile"), n)
            out = {"ratios": [round(r, 4) for r in handle.result.ratios[0]], "single_skip_psnr": single,
                   "odd_steps_skipped_psnr": odd, "fewer_steps_15_psnr": psnr(compare.plain(n // 2)),
                   "evidence_rule": list(rule), "evidence_rule_psnr": psnr(compare.magcache(handle, *rule)),
                   "velocity_turn": [round(v, 4) for v in velocity_turn(name, patcher, cases, cfg, n)]}
            report["models"].setdefault(name, {})[f"cfg {cfg:g}"] = out
            turn = out["velocity_turn"]
            print(f"\n{name}, cfg {cfg:g}: 15 steps {out['fewer_steps_15_psnr']} dB; odd steps skipped {odd} dB; "
                  f"evidence rule {rule} {out['evidence_rule_psnr']} dB", flush=True)
            print(f"  one step skipped, PSNR by step 1..{n - 1}: {[round(v, 1) for v in single.values()]}")
            print(f"  velocity turn by step 1..{n - 1}: {[round(v, 3) for v in turn]} "
                  f"(mean {sum(turn) / len(turn):.3f})", flush=True)
    return testbed_run.finish(report, opts.out, t_start)


if __name__ == "__main__":
    sys.exit(main())
