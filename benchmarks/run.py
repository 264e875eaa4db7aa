"""Benchmark: what MagCache saves and costs, on mid-size real ComfyUI models (random weights).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/run.py [--families flux,wan_t2v,...] [--repeats N]
        [--steps N] [--out DIR] [--quick] [--compile-families flux,wan_t2v|none] [--device auto|cpu|cuda]

Every family is one of ComfyUI's own model classes built mid-size (hidden 512, 8 heads, 8-12 blocks,
36-80M parameters), fp32, 1024 image tokens and 64 text tokens, PyTorch SDPA attention, sampled
through comfy.sample (euler, simple) under torch.inference_mode(), at the calibrated step count N of
the preset 'auto' picks. cfg 1 for the guidance-distilled Flux and HunyuanVideo, cfg 4 for the
others (batched: cond and uncond in one model call). Per family, in one process:

1. Overhead, target <= 1.01. Interleaved rounds (A B C, then C B A, ...) of short runs (N / 10
   steps) of
   - plain: the model as loaded;
   - plain_again: the same once more, an A/A pair: the timing noise of the machine;
   - windowed: the MagCache node applied with caching windowed off (start_step past the last step;
     thresh 0 would return the model itself): what merely having the node in the graph costs.
   Ratios to plain: of the lower quartiles of the step times (robust: other processes and the
   allocator only ever add time) and of the total wall times (drift cancels over A B C / C B A pairs
   of rounds; the standard error of the per-round ratios is given). Then, free of timing noise, the
   time spent in the pack's own code per model call (cProfile, an upper bound) with caching windowed
   off and at K 0 ("decision": the whole per-step path, i.e. schedule lookup, one scalar read, clone
   of the head input, residual stored, on every step, never skipping), as a share of a plain step.
   Outputs of windowed and K 0 must be bit-identical to plain.
2. Speed-up. plain and MagCache at the preset's recommended thresh / retention / K, full N steps,
   interleaved: steps skipped (the 'MagCache: skipped X/N' log line, checked against the calls that
   ran no block), wall-time speed-up, the ideal N / (N - skipped) (a skipped step costing nothing)
   and their ratio (target >= 0.95); the time of a skipped step relative to a computed one; the
   residual memory the run state holds (expected: one residual per CFG branch, branch batch x image
   tokens x hidden x 4 bytes) and whether the run state and its residuals are released when sampling
   returns (weak references dead); output difference to plain (relative L2, PSNR: random weights, a
   sanity figure, not a quality claim). Memory: the CUDA allocator's peak on a GPU; on CPU (torch CPU
   tensors are invisible to tracemalloc) the residual bytes above plus the process RSS (coarse).
3. CompileModel (inductor, default mode; flux and wan_t2v by default): compile time (first run minus
   a steady run, into an empty inductor cache unless --compile-cache warm) and steady speed of
   compiled vs eager, without and with MagCache (applied on top of the compiled model, sharing its
   compiled blocks), plus dynamo's new graphs and recompiles after the first runs (expected 0).

Per-step wall times come from the sampler callback; <out>/<family>_steps.png draws them for plain
and MagCache with the skipped steps marked; <out>/benchmark.json holds every figure (default out:
benchmarks/out/, git-ignored). A CPU run in which this process got less than 85% of its threads' CPU
time (another process competed) has its round run again, at most --retries times.

Run time: the default (six families; six overhead rounds; two repeats of the full runs, plain
MagCache MagCache plain, so a linear drift cancels; one of CompileModel's for flux and wan_t2v) is
chosen to take about 20 minutes on a 2-core CPU. On this kind of shared virtual machine the speed
drifts by several percent over minutes: hence short interleaved rounds, the A/A pair and the
noise-free pack time for the 1% overhead target. --quick (8 steps, flux and wan_t2v, four overhead
rounds, one repeat, no CompileModel) is a smoke test of about two minutes. On a GPU, where a run
takes seconds, use --repeats 4 --overhead-rounds 20 (keep both even: see measure.ratio()).

The families are the registry's fixtures that have a `bench` size (families.py). Modules, one
concern each: run.py (options, main), families.py, measure.py (timing, interleaving, statistics),
probe.py (hooks: calls that ran no block, residuals held), pack_time.py (cProfile), family_bench.py
(one family's measurements), compile_bench.py (CompileModel), report.py (table, legend, plots, JSON).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from families import FAMILIES  # noqa: E402
from family_bench import bench_family  # noqa: E402
from harness import COMFYUI, capture_log, load_pack, setup_comfy  # noqa: E402
from report import LEGEND, TARGETS, family_lines, machine, machine_line, plot_steps, table, write_json  # noqa: E402

DEFAULT_COMPILE = ("flux", "wan_t2v")
QUICK = dict(steps=8, repeats=1, overhead_rounds=4, families=("flux", "wan_t2v"))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, from: {', '.join(FAMILIES)}")
    ap.add_argument("--repeats", type=int, default=2,
                    help="full timed runs per variant (after a warm-up), interleaved; CompileModel's: half")
    ap.add_argument("--overhead-rounds", type=int, default=6,
                    help="interleaved rounds of short runs (N / 10 steps) for the overhead ratios")
    ap.add_argument("--retries", type=int, default=3,
                    help="rounds run again when another process took CPU time from a run (CPU only)")
    ap.add_argument("--steps", type=int, default=0, help="override the presets' calibrated step counts")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="where benchmark.json and PNGs go")
    ap.add_argument("--quick", action="store_true", help="smoke test: 8 steps, 1 repeat, flux and wan_t2v, "
                                                         "no CompileModel (unless --compile-families is given)")
    ap.add_argument("--compile-families", default=None,
                    help=f"families to time with CompileModel (default {','.join(DEFAULT_COMPILE)}; 'none')")
    ap.add_argument("--compile-cache", default="cold", choices=("cold", "warm"),
                    help="cold: compile into an empty inductor cache (first use); warm: the user's cache")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all logical CPUs)")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.steps = opts.steps or QUICK["steps"]
        opts.repeats = QUICK["repeats"]
        opts.overhead_rounds = QUICK["overhead_rounds"]
        if opts.families == ap.get_default("families"):
            opts.families = ",".join(QUICK["families"])
        if opts.compile_families is None:
            opts.compile_families = "none"
    opts.families = [f for f in opts.families.split(",") if f]
    compile_families = opts.compile_families or ",".join(DEFAULT_COMPILE)
    opts.compile_families = [] if compile_families == "none" else compile_families.split(",")
    unknown = [f for f in opts.families + opts.compile_families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families: {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    opts.compile_families = [f for f in opts.compile_families if f in opts.families]
    return opts


def setup(device: torch.device) -> None:
    if device.type == "cuda":
        # setup_comfy switches ComfyUI to CPU mode, which comfy.model_management reads once, when it is
        # first imported: import it first, in its normal (GPU) mode.
        sys.path.insert(0, str(COMFYUI))
        from comfy.cli_args import args

        args.use_pytorch_cross_attention = True
        import comfy.model_management  # noqa: F401
    setup_comfy(COMFYUI, sdpa=True)
    load_pack()
    import folder_paths

    # Families without a table save a self-calibration profile on their first run: into a folder of
    # this run's own, never the user's ComfyUI (and a profile left from an earlier run is not reused).
    folder_paths.set_user_directory(tempfile.mkdtemp(prefix="magcache-bench-user-"))


def main(argv=None) -> int:
    opts = parse(argv)
    if COMFYUI is None:
        print("No ComfyUI found: set COMFYUI_PATH to a ComfyUI (v0.8.0) checkout.", file=sys.stderr)
        return 2
    device = torch.device("cuda" if opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    torch.set_num_threads(opts.threads or os.cpu_count() or 1)
    setup(device)
    import comfyui_magcache.nodes as nodes

    messages = capture_log()
    info = machine(device, COMFYUI)
    print(machine_line(info))
    print(f"families: {', '.join(opts.families)}; repeats {opts.repeats}; steps "
          f"{opts.steps or 'preset'}; CompileModel: {', '.join(opts.compile_families) or 'none'}", flush=True)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, compiled = {}, {}
    for name in opts.families:
        results[name], c = bench_family(name, opts, nodes, messages, device)
        if c is not None:
            compiled[name] = c
        plot_steps(name, results[name], out / f"{name}_steps.png")
        print("\n".join(family_lines(results[name])), flush=True)
    total = time.perf_counter() - t0
    print("\n" + table(results, compiled) + "\n\n" + LEGEND)
    print(f"\n{machine_line(info)}\ntotal run time {total / 60:.1f} min")
    report = {"machine": info, "argv": sys.argv[1:], "options": {k: v for k, v in vars(opts).items() if k != "out"},
              "targets": TARGETS, "total_seconds": total, "families": results, "compile": compiled,
              "definitions": LEGEND}
    write_json(out / "benchmark.json", report)
    print(f"wrote {out / 'benchmark.json'} and {len(results)} per-step plots ({out}/<family>_steps.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
