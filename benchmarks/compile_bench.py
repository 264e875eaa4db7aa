"""CompileModel (inductor, default mode): compile time and steady speed of compiled vs eager, without
and with MagCache (applied on top of the compiled model, sharing its compiled blocks), and dynamo's
new graphs and recompiles after the first runs."""
from __future__ import annotations

import contextlib
import tempfile

from measure import best, interleaved, per_variant, ratio, skipped_from_log, timed_run


@contextlib.contextmanager
def inductor_cache(kind: str):
    """cold: compile into an empty inductor cache (what a first use costs); warm: the user's cache,
    where an earlier compile of the same graphs makes the first run faster."""
    if kind == "warm":
        yield
        return
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    with tempfile.TemporaryDirectory(prefix="magcache-benchmark-inductor-") as d, temporary_cache_dir(d):
        yield


def dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["recompiles"].values())


def bench_compile(fam, model, magcache, steps, opts, device, messages, pos, neg) -> dict:
    """One family's CompileModel figures; magcache(m=...) applies the MagCache node to m at the
    recommended settings."""
    from comfyui_magcache import nodes

    compiled = nodes.CompileModel.execute(model, "default", "inductor", False, False).result[0]
    variants = {"eager": model, "compiled": compiled, "eager_magcache": magcache(),
                "compiled_magcache": magcache(m=compiled)}

    def run(m):
        return timed_run(m, fam, pos, neg, steps, device, messages)

    with inductor_cache(opts.compile_cache):
        graphs0 = dynamo_counts()
        first = {"compiled": run(compiled), "compiled_magcache": run(variants["compiled_magcache"])}
        graphs1 = dynamo_counts()
        runs = interleaved(variants, run, max(1, opts.repeats // 2), opts.retries)
        graphs2 = dynamo_counts()
    steady = {k: best(v).seconds for k, v in runs.items()}
    out = {
        "steps": steps, "inductor_cache": opts.compile_cache,
        "seconds": per_variant(runs, "seconds"),
        "skipped": {k: skipped_from_log(best(runs[k]).log) for k in ("eager_magcache", "compiled_magcache")},
        "cpu_share": per_variant(runs, "cpu_share"),
        "first_run_seconds": {k: r.seconds for k, r in first.items()},
        "compile_seconds": first["compiled"].seconds - steady["compiled"],
        "compile_seconds_magcache_after": first["compiled_magcache"].seconds - steady["compiled_magcache"],
        "speedup_compiled_vs_eager": ratio(runs, "eager", "compiled"),
        "speedup_compiled_vs_eager_magcache": ratio(runs, "eager_magcache", "compiled_magcache"),
        "speedup_compiled_magcache_vs_eager_plain": ratio(runs, "eager", "compiled_magcache"),
        "graphs_compiled": graphs1[0] - graphs0[0], "recompiles_first_runs": graphs1[1] - graphs0[1],
        "new_graphs_steady": graphs2[0] - graphs1[0], "recompiles_steady": graphs2[1] - graphs1[1],
        "max_abs_diff_compiled_vs_eager": float((best(runs["compiled"]).latent - best(runs["eager"]).latent)
                                                .abs().max()),
    }
    print(f"  compile: {out['compile_seconds']:.1f} s, steady compiled vs eager {out['speedup_compiled_vs_eager']:.2f}x"
          f", with MagCache {out['speedup_compiled_vs_eager_magcache']:.2f}x", flush=True)
    return out
