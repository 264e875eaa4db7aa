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
takes seconds, use --repeats 4 --overhead-rounds 20 (keep both even: see ratio()).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from harness import COMFYUI, capture_log, conds, load_pack, sample, setup_comfy, tiny_model  # noqa: E402

TEXT_TOKENS = 64
WARMUP_STEPS = 2
TARGETS = {"overhead": 1.01, "efficiency": 0.95}
# A CPU run in which this process got less than this share of its threads' CPU time competed with
# other processes (clean runs measure 0.92-0.99 on 2 cores); its round is run again (--retries).
CLEAN_SHARE = 0.85


@dataclass(frozen=True)
class Family:
    tiny: str  # key in harness.TINY (the ComfyUI class and its base config)
    preset: str  # the table 'auto' picks for this model (checked)
    overrides: dict  # mid-size unet config on top of the tiny one
    latent: tuple
    patch: tuple  # latent cells per image token
    hidden: int
    cfg: float
    text_dim: int = 512
    pooled_dim: int = 0  # pooled text embedding width, 0: none


FLUXLIKE = dict(hidden_size=512, num_heads=8, axes_dim=[16, 24, 24], depth=4, depth_single_blocks=8,
                context_in_dim=512)
WAN = dict(dim=512, ffn_dim=2048, num_heads=8, num_layers=8, text_dim=512)
FAMILIES = {
    "flux": Family("flux", "flux", dict(FLUXLIKE, vec_in_dim=256), (1, 16, 64, 64), (2, 2), 512, 1.0,
                   pooled_dim=256),
    "chroma": Family("chroma", "chroma", dict(FLUXLIKE, out_dim=512, hidden_dim=256), (1, 16, 64, 64), (2, 2),
                     512, 4.0),
    "hunyuan_video": Family("hunyuan_video", "hunyuan_video_544p", dict(FLUXLIKE, vec_in_dim=256), (1, 16, 4, 32, 32),
                            (1, 2, 2), 512, 1.0, pooled_dim=256),
    "wan_t2v": Family("wan_t2v", "wan2.1_t2v_1.3B", WAN, (1, 16, 4, 32, 32), (1, 2, 2), 512, 4.0),
    "wan_vace": Family("wan_vace", "wan2.1_vace_1.3B", dict(WAN, vace_layers=4), (1, 16, 4, 32, 32), (1, 2, 2),
                       512, 4.0),
    "qwen_image": Family("qwen_image", "qwen_image",
                         dict(attention_head_dim=64, num_attention_heads=8, num_layers=8, joint_attention_dim=512,
                              axes_dims_rope=(16, 24, 24)), (1, 16, 1, 64, 64), (1, 2, 2), 512, 4.0),
}
DEFAULT_COMPILE = ("flux", "wan_t2v")
QUICK = dict(steps=8, repeats=1, overhead_rounds=4, families=("flux", "wan_t2v"))


# -- machine and set-up -------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        sys.path.insert(0, str(COMFYUI))
        import comfyui_version

        info["comfyui"] = comfyui_version.__version__
    except Exception:
        info["comfyui"] = "unknown"
    return info


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['threads']} torch threads{gpu}; "
            f"torch {info['torch']}, Python {info['python']}, ComfyUI {info['comfyui']}")


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


# -- models and conditioning ----------------------------------------------------------------------

def build(fam: Family, device: torch.device):
    model = tiny_model(fam.tiny, seed=0, **fam.overrides)
    if device.type != "cpu":
        import comfy.model_patcher

        model = comfy.model_patcher.ModelPatcher(model.model, load_device=device, offload_device=torch.device("cpu"))
    return model


def conditioning(fam: Family, seed: int = 0):
    """harness.conds with mid-size text (and pooled, VACE) inputs."""
    g = torch.Generator().manual_seed(seed + 1)
    extras = {}
    for side in ("positive", "negative"):
        d = {}
        if fam.pooled_dim:
            d["pooled_output"] = torch.randn(1, fam.pooled_dim, generator=g)
        if fam.tiny == "wan_vace":  # VACE control video: 16 latent + 16 inactive channels, 8x8 mask cells
            d["vace_frames"] = [torch.randn(1, 32, *fam.latent[2:], generator=g)]
            d["vace_mask"] = [torch.ones(1, 64, *fam.latent[2:])]
        extras[side] = d
    pos, neg = conds(fam.tiny, seed, tokens=TEXT_TOKENS, **extras)
    for c in (pos, neg):
        c[0][0] = torch.randn(1, TEXT_TOKENS, fam.text_dim, generator=g)
    return pos, neg


def image_tokens(fam: Family) -> int:
    return math.prod(fam.latent[2:]) // math.prod(fam.patch)


def auto_preset(fam: Family, model, steps: int) -> str:
    from comfyui_magcache.model_patches import resolve

    spec, _ = resolve("auto", model.model.diffusion_model)
    args = {"x": torch.zeros(fam.latent), "transformer_options": {"sample_sigmas": torch.linspace(1, 0, steps + 1)}}
    return spec.auto_preset(model.model.diffusion_model, args.get)


# -- instrumentation ------------------------------------------------------------------------------

class Probe:
    """DIFFUSION_MODEL wrapper on the MagCache variant: which calls skipped the blocks (the run
    state's computed-call counter did not move), the residual bytes the run state holds after each
    call, and weak references to the run and its residuals, to check they are released."""

    def __init__(self):
        from comfyui_magcache.model_patches.engine import RUN_KEY

        self.key = RUN_KEY  # where the pack keeps the live run in transformer_options
        self.skipped: list[bool] = []
        self.layouts: set = set()
        self.held_bytes = 0
        self.refs: list = []
        self.released_at_end = True  # every run so far: run state and residuals dead when sampling returned

    def reset(self):
        self.__init__()

    def after_run(self) -> None:
        self.released_at_end = self.released_at_end and self.released()

    def __call__(self, executor, *args, **kwargs):
        to = next((d for d in (kwargs.get("transformer_options"), *args) if isinstance(d, dict) and self.key in d),
                  None)
        run = to[self.key] if to is not None else None
        before = run.state.computed_calls if run is not None else 0
        out = executor(*args, **kwargs)
        if run is not None:
            self.skipped.append(run.state.computed_calls == before)
            self.layouts.add(tuple(to.get("cond_or_uncond") or ()))
            self.note(run)
        return out

    def note(self, run) -> None:
        tensors = [st.residual for st in run.state.branches.values() if st.residual is not None]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        self.held_bytes = max(self.held_bytes, sum(storages.values()))
        bases = [t._base for t in tensors if t._base is not None]
        self.refs = [weakref.ref(o) for o in (run, run.state, *tensors, *bases)]

    def released(self) -> bool:
        return bool(self.refs) and all(r() is None for r in self.refs)


def with_probe(model, probe: Probe):
    from comfy.patcher_extension import WrappersMP

    model = model.clone()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "magcache_benchmark", probe)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Memory:
    """Process RSS (CPU: coarse) or the CUDA allocator (GPU) around one run."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return {"allocated": torch.cuda.memory_allocated(self.device)}
        try:  # Linux: reset the RSS high-water mark for this process
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return {"rss": rss()}

    def stop(self, before: dict) -> dict:
        if self.device.type == "cuda":
            return {"kind": "cuda allocator", "peak_extra": torch.cuda.max_memory_allocated(self.device)
                    - before["allocated"], "after_extra": torch.cuda.memory_allocated(self.device) - before["allocated"]}
        peak = rss_peak()
        return {"kind": "process rss", "peak_extra": max(0, peak - before["rss"]) if peak else None,
                "after_extra": rss() - before["rss"]}


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def rss_peak():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass
class RunResult:
    seconds: float
    step_seconds: list
    latent: torch.Tensor = field(repr=False)
    memory: dict
    log: list
    cpu_share: float | None  # CPU: process CPU time / (wall time x torch threads); None on CUDA
    load: float  # 1-minute load average at the end of the run


def timed_run(model, fam, pos, neg, steps, device, messages, seed=42) -> RunResult:
    """One sampling run: wall time, per-step times from the sampler callback, memory, log lines."""
    marks = []

    def on_step(step, x0, x, total):
        sync(device)
        marks.append(time.perf_counter())

    mem = Memory(device)
    n_log = len(messages)
    gc.collect()
    before = mem.start()
    sync(device)
    t0, cpu0 = time.perf_counter(), time.process_time()
    latent = sample(model, pos, neg, seed=seed, steps=steps, cfg=fam.cfg, latent_shape=fam.latent, callback=on_step)
    sync(device)
    seconds = time.perf_counter() - t0
    cpu_share = None if device.type == "cuda" else (time.process_time() - cpu0) / (seconds * torch.get_num_threads())
    memory = mem.stop(before)
    steps_s = [b - a for a, b in zip([t0] + marks[:-1], marks)]
    return RunResult(seconds, steps_s, latent, memory, messages[n_log:], cpu_share, load_average())


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def interleaved(variants: dict, run, repeats: int, retries: int = 0) -> dict:
    """Run every variant `repeats` times, A B C D then D C B A, ...; {name: [RunResult, ...]}.
    A round in which another process took CPU time from a run is run again, at most `retries` times;
    its results are kept but left out of the ratios (rounds_used)."""
    out = {name: [] for name in variants}
    order = list(variants)
    rounds = done = 0
    while done < repeats:
        for name in (order if rounds % 2 == 0 else order[::-1]):
            out[name].append(run(variants[name]))
        rounds += 1
        if rounds - done <= retries and not all(clean(rs[-1]) for rs in out.values()):
            print(f"  (another process competed for the CPU: round {rounds} run again)", flush=True)
            continue
        done += 1
    return out


def clean(result: RunResult) -> bool:
    return result.cpu_share is None or result.cpu_share >= CLEAN_SHARE


# -- figures --------------------------------------------------------------------------------------

def best(results: list) -> RunResult:
    return min(results, key=lambda r: r.seconds)


def difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double().cpu(), b.double().cpu()
    mse = float(((a - b) ** 2).mean())
    rel = float((a - b).norm() / a.norm())
    psnr = 10 * math.log10(float(a.max() - a.min()) ** 2 / mse) if mse > 0 else math.inf
    return {"rel_l2": rel, "psnr_db": psnr, "identical": bool(torch.equal(a, b))}


def skipped_from_log(lines: list) -> tuple[int, int] | None:
    for line in lines:
        if line.startswith("MagCache: skipped ") and "/" in line.split()[2]:
            done, total = line.split()[2].split("/")
            return int(done), int(total)
    return None


def rounds_used(runs: dict, name: str, base: str) -> list[tuple]:
    """(run of name, run of base) per round, leaving out rounds slowed by other processes (unless all were)."""
    pairs = list(zip(runs[name], runs[base]))
    return [(a, b) for a, b in pairs if clean(a) and clean(b)] or pairs


def ratio(runs: dict, name: str, base: str = "plain") -> float:
    """Total time of `name` / total time of `base` over the rounds. The order is reversed every
    other round (A B C, C B A), so over an even number of rounds a linear drift of the machine's
    speed adds the same to both totals."""
    used = rounds_used(runs, name, base)
    return sum(a.seconds for a, _ in used) / sum(b.seconds for _, b in used)


def step_quartile(results: list) -> float:
    """Lower quartile of the step times (first steps left out: they carry the per-run work).
    Other processes and the allocator only ever add time, so the fast steps show the true cost
    with far less scatter than a mean or a single run's total."""
    used = [r for r in results if clean(r)] or results
    return statistics.quantiles([s for r in used for s in r.step_seconds[1:]], n=4)[0]


def is_pack(filename: str) -> bool:
    path = Path(filename)
    return path.is_relative_to(ROOT) and not any(path.is_relative_to(ROOT / d) for d in ("tests", "benchmarks"))


def pack_seconds_per_call(model, fam, pos, neg, steps) -> tuple[float, torch.Tensor]:
    """Time spent in the pack's own code per model call, from one cProfile'd run: its functions'
    own time (tensor arithmetic written as operators, like the residual's subtraction, counts there)
    plus the C functions they call directly (clone, cat, tolist); the blocks and ComfyUI code they
    hand on to are the model's. cProfile slows Python code more than torch kernels, so this errs
    high: an upper bound, free of the machine's timing noise."""
    import cProfile
    import pstats

    calls = []
    hook = model.model.diffusion_model.register_forward_pre_hook(lambda *a: calls.append(1))
    prof = cProfile.Profile()
    try:
        prof.enable()
        latent = sample(model, pos, neg, seed=42, steps=steps, cfg=fam.cfg, latent_shape=fam.latent)
    finally:
        prof.disable()
        hook.remove()
    own = 0.0
    for (filename, _, _), (_, _, tottime, _, callers) in pstats.Stats(prof).stats.items():
        if is_pack(filename):
            own += tottime
        elif filename == "~":  # a builtin: count the calls made from the pack's functions
            own += sum(c[2] for caller, c in callers.items() if is_pack(caller[0]))
    return own / max(len(calls), 1), latent


def overhead_figures(runs: dict, steps: int) -> dict:
    out = {"steps": steps, "rounds": len(runs["plain"]),
           "seconds": {name: [r.seconds for r in rs] for name, rs in runs.items()},
           "cpu_share": {name: [r.cpu_share for r in rs] for name, rs in runs.items()}}
    for name in ("plain_again", "windowed"):
        ratios = [a.seconds / b.seconds for a, b in rounds_used(runs, name, "plain")]
        out[name] = {"step_ratio": step_quartile(runs[name]) / step_quartile(runs["plain"]),
                     "wall_ratio": ratio(runs, name), "wall_ratios": ratios,
                     "wall_ratio_se": statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else None,
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


def speed_figures(fam, steps, runs, probe) -> dict:
    plain, magc = best(runs["plain"]), best(runs["magcache"])
    skipped, _ = skipped_from_log(magc.log) or (0, steps)
    ideal = steps / (steps - skipped)
    speedup = ratio(runs, "plain", "magcache")
    branches = 2 if fam.cfg > 1 else 1
    flags = probe.skipped[-steps:]  # the last run's calls (one per step: cfg 1 or batched CFG)
    computed = [s for s, f in zip(magc.step_seconds, flags) if not f]
    skipped_s = [s for s, f in zip(magc.step_seconds, flags) if f]
    return {
        "seconds": {name: [r.seconds for r in rs] for name, rs in runs.items()},
        "cpu_share": {name: [r.cpu_share for r in rs] for name, rs in runs.items()},
        "load_average": {name: [r.load for r in rs] for name, rs in runs.items()},
        "skipped": skipped, "skipped_by_probe": sum(flags), "skipped_steps": [i for i, f in enumerate(flags) if f],
        "call_layouts": sorted(probe.layouts),
        "speedup": speedup, "ideal_speedup": ideal, "efficiency": speedup / ideal,
        "skipped_step_cost": statistics.median(skipped_s) / statistics.median(computed)
        if skipped_s and computed else None,
        "residual_bytes_expected": branches * image_tokens(fam) * fam.hidden * 4,  # fp32 models
        "residual_bytes_held": probe.held_bytes,
        "run_state_released": probe.released_at_end and all(  # checked right after each MagCache run, no gc
            r.memory["after_extra"] <= 0 for r in runs["magcache"] if r.memory["kind"] == "cuda allocator"),
        "run_state_released_after_gc": probe.released(),
        "memory": {name: best(rs).memory for name, rs in runs.items()},
        "output_difference": difference(plain.latent, magc.latent),
        "step_seconds": {"plain": plain.step_seconds, "magcache": magc.step_seconds},
        "log": magc.log,
    }


# -- one family -----------------------------------------------------------------------------------

def bench_family(name: str, opts, nodes, messages, device) -> tuple[dict, dict]:
    fam = FAMILIES[name]
    model = build(fam, device)
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    pos, neg = conditioning(fam)
    from comfyui_magcache.magcache import get_preset

    preset = get_preset(fam.preset)
    steps = opts.steps or preset.steps
    picked = auto_preset(fam, model, steps)
    if picked != fam.preset:
        raise RuntimeError(f"{name}: 'auto' picks {picked}, the benchmark expects {fam.preset}")
    thresh, retention, K = preset.recommended
    short = max(3, round(steps / 10))  # overhead rounds: short runs, many alternations

    def magcache(k=K, start=0, m=model):
        return nodes.MagCache.execute(m, "auto", thresh, retention, k, start, -1).result[0]

    probe = Probe()
    # plain_again: the same model once more, an A/A pair that shows the timing noise of the machine
    overhead = {"plain": model, "plain_again": model.clone(), "windowed": magcache(start=10000)}
    decision = magcache(k=0)
    speed = {"plain": model, "magcache": with_probe(magcache(), probe)}
    print(f"\n[{name}] {type(model.model.diffusion_model).__name__}, {params / 1e6:.1f}M params, "
          f"{image_tokens(fam)} image tokens, euler {steps} steps, cfg {fam.cfg:g}, preset {fam.preset} "
          f"{thresh:g}/{retention:g}/{K}", flush=True)
    with torch.inference_mode():
        for m in (*overhead.values(), decision, speed["magcache"]):  # warm-up: first-call costs out of the timings
            timed_run(m, fam, pos, neg, min(WARMUP_STEPS, steps), device, messages)
        probe.reset()
        runs = interleaved(overhead, lambda m: timed_run(m, fam, pos, neg, short, device, messages),
                           opts.overhead_rounds, opts.retries)
        figures = {"overhead": overhead_figures(runs, short)}
        for key, value in pack_figures({"windowed": overhead["windowed"], "decision": decision}, fam, pos, neg,
                                       short, runs).items():
            figures["overhead"].setdefault(key, {}).update(value)

        def run(m):
            result = timed_run(m, fam, pos, neg, steps, device, messages)
            if m is speed["magcache"]:
                probe.after_run()
            return result

        figures.update(speed_figures(fam, steps, interleaved(speed, run, opts.repeats, opts.retries), probe))
        figures.update(steps=steps, cfg=fam.cfg, settings={"thresh": thresh, "retention": retention, "K": K},
                       params=params, model_class=type(model.model.diffusion_model).__name__,
                       image_tokens=image_tokens(fam), text_tokens=TEXT_TOKENS, preset=fam.preset)
        compiled = bench_compile(fam, model, magcache, steps, opts, device, messages, pos, neg) \
            if name in opts.compile_families else None
    return figures, compiled


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
    """CompileModel (inductor, default mode): compile time and steady speed vs eager, +/- MagCache."""
    from comfyui_magcache import nodes

    compiled = nodes.CompileModel.execute(model, "default", "inductor", False, False).result[0]
    variants = {"eager": model, "compiled": compiled, "eager_magcache": magcache(),
                "compiled_magcache": magcache(m=compiled)}
    run = lambda m: timed_run(m, fam, pos, neg, steps, device, messages)  # noqa: E731
    with inductor_cache(opts.compile_cache):
        graphs0 = dynamo_counts()
        first = {"compiled": run(compiled), "compiled_magcache": run(variants["compiled_magcache"])}
        graphs1 = dynamo_counts()
        runs = interleaved(variants, run, max(1, opts.repeats // 2), opts.retries)
        graphs2 = dynamo_counts()
    steady = {k: best(v).seconds for k, v in runs.items()}
    out = {
        "steps": steps, "inductor_cache": opts.compile_cache,
        "seconds": {k: [r.seconds for r in v] for k, v in runs.items()},
        "skipped": {k: skipped_from_log(best(runs[k]).log) for k in ("eager_magcache", "compiled_magcache")},
        "cpu_share": {k: [r.cpu_share for r in v] for k, v in runs.items()},
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


# -- output ---------------------------------------------------------------------------------------

def mib(n) -> str:
    return "-" if n is None else f"{n / 2 ** 20:.2f}"


def check(value: float, target: float, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return f"{value:.3f}{'' if ok else '!'}"


def cpu_used(r: dict) -> str:
    """The lowest CPU share among the runs the speed-up is computed from."""
    used = [min(zip(r["seconds"][k], r["cpu_share"][k]))[1] for k in r["seconds"]]
    return "-" if None in used else f"{min(used):.2f}"


def overhead_cell(o: dict, target: bool = True) -> str:
    se = f"±{o['wall_ratio_se']:.3f}" if o["wall_ratio_se"] is not None else ""
    if not target:
        return f"{o['step_ratio']:.3f}/{o['wall_ratio']:.3f}{se}"
    return f"{check(o['step_ratio'], TARGETS['overhead'], True)}/{check(o['wall_ratio'], TARGETS['overhead'], True)}{se}"


def pack_cell(o: dict) -> str:
    w, d = o["windowed"], o["decision"]
    share = f"{d['pack_share_of_step']:.2%}{'' if d['pack_share_of_step'] <= TARGETS['overhead'] - 1 else '!'}"
    return f"{w['pack_seconds_per_call'] * 1e3:.2f}/{d['pack_seconds_per_call'] * 1e3:.2f} ({share})"


COLUMNS = (  # (header, width, cell)
    ("family", -14, lambda n, r: n),
    ("N", 4, lambda n, r: r["steps"]),
    ("skip", 5, lambda n, r: r["skipped"]),
    ("A/A step/wall", 19, lambda n, r: overhead_cell(r["overhead"]["plain_again"], target=False)),
    ("ovh win step/wall", 21, lambda n, r: overhead_cell(r["overhead"]["windowed"])),
    ("pack ms/call win/K0", 20, lambda n, r: pack_cell(r["overhead"])),
    ("speedup", 8, lambda n, r: f"{r['speedup']:.2f}x"),
    ("ideal", 7, lambda n, r: f"{r['ideal_speedup']:.2f}x"),
    ("eff", 7, lambda n, r: check(r["efficiency"], TARGETS["efficiency"], False)),
    ("skip cost", 10, lambda n, r: f"{r['skipped_step_cost']:.3f}" if r["skipped_step_cost"] is not None else "-"),
    ("resid MiB exp/held", 19, lambda n, r: f"{mib(r['residual_bytes_expected'])}/{mib(r['residual_bytes_held'])}"),
    ("peak +MiB plain/mc", 18, lambda n, r: "/".join(mib(r["memory"][k]["peak_extra"]) for k in ("plain", "magcache"))),
    ("freed", 6, lambda n, r: "yes" if r["run_state_released"] else "NO"),
    ("rel L2", 8, lambda n, r: f"{r['output_difference']['rel_l2']:.4f}"),
    ("PSNR", 6, lambda n, r: f"{r['output_difference']['psnr_db']:.1f}"),
    ("cpu", 6, lambda n, r: cpu_used(r)),
)
COMPILE_COLUMNS = (
    ("CompileModel", -14, lambda n, c: n),
    ("N", 4, lambda n, c: c["steps"]),
    ("compile s", 10, lambda n, c: f"{c['compile_seconds']:.1f}"),
    ("compiled/eager", 15, lambda n, c: f"{c['speedup_compiled_vs_eager']:.2f}x"),
    ("+MagCache", 10, lambda n, c: f"{c['speedup_compiled_vs_eager_magcache']:.2f}x"),
    ("both/plain eager", 17, lambda n, c: f"{c['speedup_compiled_magcache_vs_eager_plain']:.2f}x"),
    ("graphs", 7, lambda n, c: c["graphs_compiled"]),
    ("new graphs/recompiles later", 28, lambda n, c: f"{c['new_graphs_steady']}/{c['recompiles_steady']}"),
)


def render(columns, rows: dict) -> list[str]:
    def cell(text, width):
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

    head = " ".join(cell(h, w) for h, w, _ in columns)
    return [head, "-" * len(head)] + [" ".join(cell(str(f(n, r)), w) for _, w, f in columns)
                                      for n, r in rows.items()]


def table(results: dict, compiled: dict) -> str:
    lines = render(COLUMNS, results)
    if compiled:
        lines += [""] + render(COMPILE_COLUMNS, compiled)
    return "\n".join(lines)


LEGEND = """N: steps; skip: steps MagCache skipped at the recommended settings ('MagCache: skipped X/N' log line).
ovh win: the node applied with caching windowed off vs plain, target <= 1.01; A/A: plain vs plain, the
  noise floor. From interleaved rounds of short runs: step = ratio of the lower quartiles of step times
  (robust: interference only adds time), wall = ratio of total wall times (drift cancels) ± standard error.
pack ms/call: time in the pack's own code per model call (cProfile: its functions and the torch calls they
  make; an upper bound), caching windowed off / at K 0 (the full decision path on every step, skipping
  none), and in brackets K 0's share of a plain step: the overhead without timing noise.
speedup: plain / MagCache wall time; ideal = N / (N - skip); eff = speedup / ideal (target >= 0.95).
skip cost: median time of a skipped step / of a computed step (embeddings, final layer, sampler remain).
resid: residual memory expected (one per CFG branch: tokens x hidden x 4 B) / held by the run state (MiB).
peak: memory added during a run, plain / MagCache (GPU: CUDA allocator peak; CPU: process RSS high-water
  mark, coarse: the allocator reuses pages). freed: run state and residuals unreachable as soon as
  sampling returned (and, on a GPU, allocated memory back to its level before the run).
rel L2, PSNR (dB): final latent vs plain (random weights: a sanity figure, not quality).
cpu: lowest share of its threads' CPU time this process got in a timed run (< 0.85: other processes
  competed, timings less reliable). !: target missed."""


def plot_steps(name: str, r: dict, path: Path) -> None:
    """Per-step wall time, plain (gray) next to MagCache (blue computed, red skipped)."""
    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 960, 420, 70, 20, 40, 70
    plain, magc = r["step_seconds"]["plain"], r["step_seconds"]["magcache"]
    skipped = set(r["skipped_steps"])
    n = len(plain)
    top = max(plain + magc) * 1.1 or 1.0
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    slot = (W - L - R) / max(n, 1)
    y = lambda v: T + (H - T - B) * (1 - v / top)  # noqa: E731
    d.rectangle((L, T, W - R, H - B), outline=(0, 0, 0))
    for k in range(5):
        v = top * k / 4
        d.line((L, y(v), W - R, y(v)), fill=(230, 230, 230))
        d.text((6, y(v) - 6), f"{v:.3f} s", fill=(0, 0, 0))
    for i in range(n):
        x = L + i * slot
        d.rectangle((x + 1, y(plain[i]), x + slot / 2, H - B), fill=(170, 170, 170))
        color = (214, 39, 40) if i in skipped else (31, 119, 180)
        if i < len(magc):
            d.rectangle((x + slot / 2, y(magc[i]), x + slot - 1, H - B), fill=color)
        if i % max(1, n // 10) == 0:
            d.text((x, H - B + 6), str(i), fill=(0, 0, 0))
    s = r["settings"]
    d.text((L, 10), f"{name}: wall time per step, euler {n} steps, cfg {r['cfg']:g}; MagCache {s['thresh']:g} / "
                    f"{s['retention']:g} / {s['K']}: skipped {r['skipped']}/{n}, {r['speedup']:.2f}x "
                    f"(ideal {r['ideal_speedup']:.2f}x)", fill=(0, 0, 0))
    x = L
    for text, color in (("plain", (170, 170, 170)), ("MagCache, computed", (31, 119, 180)),
                        ("MagCache, skipped", (214, 39, 40))):
        d.rectangle((x, H - 28, x + 12, H - 18), fill=color)
        d.text((x + 16, H - 30), text, fill=(0, 0, 0))
        x += 30 + 7 * len(text)
    img.save(path)


def jsonable(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    return o


# -- main -----------------------------------------------------------------------------------------

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
    info = machine(device)
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
        r = results[name]
        different = [k for k in ("plain_again", "windowed", "decision") if not r["overhead"][k]["identical_to_plain"]]
        if different:
            print(f"  WARNING: output not bit-identical to plain: {', '.join(different)}")
        if r["skipped"] != r["skipped_by_probe"]:
            print(f"  WARNING: the log says {r['skipped']} skipped steps, {r['skipped_by_probe']} calls ran no block")
        print(f"  skipped {r['skipped']}/{r['steps']}, speed-up {r['speedup']:.2f}x (ideal {r['ideal_speedup']:.2f}x), "
              f"overhead (windowed, step/wall) {r['overhead']['windowed']['step_ratio']:.3f} / "
              f"{r['overhead']['windowed']['wall_ratio']:.3f}, A/A {r['overhead']['plain_again']['wall_ratio']:.3f}",
              flush=True)
    total = time.perf_counter() - t0
    print("\n" + table(results, compiled) + "\n\n" + LEGEND)
    print(f"\n{machine_line(info)}\ntotal run time {total / 60:.1f} min")
    report = {"machine": info, "argv": sys.argv[1:], "options": {k: v for k, v in vars(opts).items() if k != "out"},
              "targets": TARGETS, "total_seconds": total, "families": results, "compile": compiled,
              "definitions": LEGEND}
    (out / "benchmark.json").write_text(json.dumps(jsonable(report), indent=1))
    print(f"wrote {out / 'benchmark.json'} and {len(results)} per-step plots ({out}/<family>_steps.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
