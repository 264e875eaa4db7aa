"""One family's measurements, in one process: overhead (interleaved short runs, pack time per call),
speed-up at the recommended settings, and CompileModel if asked."""
from __future__ import annotations

import re
import statistics

import torch
from compile_bench import bench_compile
from families import FAMILIES, TEXT_TOKENS, auto_preset, build, conditioning
from measure import (
    best,
    difference,
    interleaved,
    per_variant,
    ratio,
    skipped_from_log,
    standard_error,
    step_quartile,
    timed_run,
    wall_ratios,
)
from pack_time import pack_seconds_per_call
from probe import Probe

WARMUP_STEPS = 2
SELF_CALIBRATED_STEPS = 20  # ours: a family without a table has no calibrated step count


def overhead_figures(runs: dict, steps: int) -> dict:
    """plain_again (A/A) and windowed against plain: step-quartile and wall-time ratios."""
    out = {"steps": steps, "rounds": len(runs["plain"]), "seconds": per_variant(runs, "seconds"),
           "cpu_share": per_variant(runs, "cpu_share")}
    for name in ("plain_again", "windowed"):
        ratios = wall_ratios(runs, name)
        out[name] = {"step_ratio": step_quartile(runs[name]) / step_quartile(runs["plain"]),
                     "wall_ratio": ratio(runs, name), "wall_ratios": ratios, "wall_ratio_se": standard_error(ratios),
                     "identical_to_plain": torch.equal(runs[name][0].latent, runs["plain"][0].latent)}
    return out


def pack_figures(variants: dict, fam, pos, neg, steps, runs) -> dict:
    """Pack time per model call of the windowed and K 0 variants, and K 0's output against plain's."""
    out = {}
    for name, model in variants.items():
        seconds, latent = pack_seconds_per_call(model, fam, pos, neg, steps)
        out[name] = {"pack_seconds_per_call": seconds, "pack_share_of_step": seconds / step_quartile(runs["plain"]),
                     "identical_to_plain": torch.equal(latent, runs["plain"][0].latent)}
    return out


def speed_figures(fam, steps, runs, probe: Probe) -> dict:
    plain, magc = best(runs["plain"]), best(runs["magcache"])
    skipped, _ = skipped_from_log(magc.log) or (0, steps)
    ideal = steps / (steps - skipped)
    speedup = ratio(runs, "plain", "magcache")
    branches = 2 if fam.cfg > 1 else 1
    flags = probe.skipped[-steps:]  # the last run's calls (one per step: cfg 1 or batched CFG)
    computed = [s for s, f in zip(magc.step_seconds, flags) if not f]
    skipped_s = [s for s, f in zip(magc.step_seconds, flags) if f]
    return {
        "seconds": per_variant(runs, "seconds"), "cpu_share": per_variant(runs, "cpu_share"),
        "load_average": per_variant(runs, "load"),
        "skipped": skipped, "skipped_by_probe": sum(flags), "skipped_steps": [i for i, f in enumerate(flags) if f],
        "call_layouts": sorted(probe.layouts),
        "speedup": speedup, "ideal_speedup": ideal, "efficiency": speedup / ideal,
        "skipped_step_cost": statistics.median(skipped_s) / statistics.median(computed)
        if skipped_s and computed else None,
        "residual_bytes_expected": branches * fam.residual_elements * 4,  # fp32 models
        "residual_bytes_held": probe.held_bytes,
        "run_state_released": probe.released_at_end and all(  # checked right after each MagCache run, no gc
            r.memory["after_extra"] <= 0 for r in runs["magcache"] if r.memory["kind"] == "cuda allocator"),
        "run_state_released_after_gc": probe.released(),
        "memory": {name: best(rs).memory for name, rs in runs.items()},
        "output_difference": difference(plain.latent, magc.latent),
        "step_seconds": {"plain": plain.step_seconds, "magcache": magc.step_seconds},
        "log": magc.log,
    }


def bench_family(name: str, opts, nodes, messages, device) -> tuple[dict, dict | None]:
    """(figures, CompileModel figures or None) of one family."""
    fam = FAMILIES[name]
    model = build(fam, device)
    diffusion_model = model.model.diffusion_model
    params = sum(p.numel() for p in diffusion_model.parameters())
    pos, neg = conditioning(fam)
    from comfyui_magcache.magcache import get_preset

    if fam.preset is not None:
        preset = get_preset(fam.preset)
        steps = opts.steps or preset.steps
        thresh, retention, K = preset.recommended
    else:  # no published table: 'auto' self-calibrates; the timed runs take the node's default (settings_from
        # 'auto': the evidence rule on the profile), the overhead runs the fixture's settings (ours)
        steps = opts.steps or SELF_CALIBRATED_STEPS
        thresh, retention, K = fam.fixture.settings
    picked = auto_preset(fam, model, steps)
    if picked != fam.preset:
        raise RuntimeError(f"{name}: 'auto' picks {picked}, the benchmark expects {fam.preset}")
    short = max(3, round(steps / 10))  # overhead rounds: short runs, many alternations

    def magcache(k=K, start=0, m=model, settings_from="inputs"):
        return nodes.MagCache.execute(m, "auto", thresh, retention, k, start, -1,
                                      settings_from=settings_from).result[0]

    calibration = None
    if fam.preset is None:  # the first run of this model measures and saves its profile (untimed)
        with torch.inference_mode():
            first = timed_run(magcache(), fam, pos, neg, steps, device, messages)
        calibration = [line for line in first.log if "self-calibration" in line][-1:]
        if not calibration:
            raise RuntimeError(f"{name}: the first 'auto' run did not self-calibrate: {first.log}")

    probe = Probe(fam.spec, diffusion_model)
    # plain_again: the same model once more, an A/A pair that shows the timing noise of the machine
    overhead = {"plain": model, "plain_again": model.clone(), "windowed": magcache(start=10000)}
    decision = magcache(k=0)
    speed = {"plain": model, "magcache": magcache(settings_from="auto")}  # what a user's node does
    print(f"\n[{name}] {type(diffusion_model).__name__}, {params / 1e6:.1f}M params, "
          f"{fam.image_tokens} image tokens, euler {steps} steps, cfg {fam.cfg:g}, preset "
          + (f"{fam.preset} {thresh:g}/{retention:g}/{K}" if fam.preset else "self-calibrated, evidence rule"),
          flush=True)
    with torch.inference_mode():
        for m in (*overhead.values(), decision, speed["magcache"]):  # warm-up: first-call costs out of the timings
            timed_run(m, fam, pos, neg, min(WARMUP_STEPS, steps), device, messages)
        runs = interleaved(overhead, lambda m: timed_run(m, fam, pos, neg, short, device, messages),
                           opts.overhead_rounds, opts.retries)
        figures = {"overhead": overhead_figures(runs, short)}
        for key, value in pack_figures({"windowed": overhead["windowed"], "decision": decision}, fam, pos, neg,
                                       short, runs).items():
            figures["overhead"].setdefault(key, {}).update(value)

        def run(m):
            if m is not speed["magcache"]:
                return timed_run(m, fam, pos, neg, steps, device, messages)
            with probe.watching():
                out = timed_run(m, fam, pos, neg, steps, device, messages)
            rule_lines.extend(line for line in out.log if "(evidence rule:" in line)
            return out

        rule_lines: list = []
        figures.update(speed_figures(fam, steps, interleaved(speed, run, opts.repeats, opts.retries), probe))
        if rule_lines:  # the evidence rule set them on the profile (the run report names them)
            found = re.search(r"evidence rule: thresh ([\d.]+) / retention ([\d.]+) / K (\d+)", rule_lines[-1])
            thresh, retention, K = float(found[1]), float(found[2]), int(found[3])
        figures.update(steps=steps, cfg=fam.cfg, settings={"thresh": thresh, "retention": retention, "K": K},
                       settings_from="evidence rule" if rule_lines else "inputs",
                       params=params, model_class=type(diffusion_model).__name__,
                       image_tokens=fam.image_tokens, text_tokens=TEXT_TOKENS,
                       preset=fam.preset or "self-calibrated", self_calibration=calibration)
        compiled = bench_compile(fam, model, magcache, steps, opts, device, messages, pos, neg) \
            if name in opts.compile_families else None
    return figures, compiled
