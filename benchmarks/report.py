"""What the benchmark prints and writes: machine line, per-family lines, the table and its legend, the
per-step plots (drawn by magcache/plot.py) and benchmark.json."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path

import torch

TARGETS = {"overhead": 1.01, "efficiency": 0.95}


# -- machine --------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device, comfyui: Path) -> dict:
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        sys.path.insert(0, str(comfyui))
        import comfyui_version

        info["comfyui"] = comfyui_version.__version__
    except Exception:
        info["comfyui"] = "unknown"
    return info


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['threads']} torch threads{gpu}; "
            f"torch {info['torch']}, Python {info['python']}, ComfyUI {info['comfyui']}")


def family_lines(r: dict) -> list[str]:
    """Printed after each family: warnings, then its main figures."""
    lines = []
    different = [k for k in ("plain_again", "windowed", "decision") if not r["overhead"][k]["identical_to_plain"]]
    if different:
        lines.append(f"  WARNING: output not bit-identical to plain: {', '.join(different)}")
    if r["skipped"] != r["skipped_by_probe"]:
        lines.append(f"  WARNING: the log says {r['skipped']} skipped steps, "
                     f"{r['skipped_by_probe']} calls ran no block")
    win, aa = r["overhead"]["windowed"], r["overhead"]["plain_again"]
    lines.append(f"  skipped {r['skipped']}/{r['steps']}, speed-up {r['speedup']:.2f}x "
                 f"(ideal {r['ideal_speedup']:.2f}x), overhead (windowed, step/wall) {win['step_ratio']:.3f} / "
                 f"{win['wall_ratio']:.3f}, A/A {aa['wall_ratio']:.3f}")
    return lines


# -- table ----------------------------------------------------------------------------------------

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
    limit = TARGETS["overhead"]
    return f"{check(o['step_ratio'], limit, True)}/{check(o['wall_ratio'], limit, True)}{se}"


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


# -- files ----------------------------------------------------------------------------------------

PLAIN, COMPUTED, SKIPPED = (170, 170, 170), (31, 119, 180), (214, 39, 40)


def plot_steps(name: str, r: dict, path: Path) -> None:
    """Per-step wall time, plain (gray) next to MagCache (blue computed, red skipped)."""
    from comfyui_magcache.magcache.plot import plot_step_bars
    from PIL import Image

    plain, magc = r["step_seconds"]["plain"], r["step_seconds"]["magcache"]
    skipped = set(r["skipped_steps"])
    n, s = len(plain), r["settings"]
    title = (f"{name}: wall time per step, euler {n} steps, cfg {r['cfg']:g}; MagCache {s['thresh']:g} / "
             f"{s['retention']:g} / {s['K']}: skipped {r['skipped']}/{n}, {r['speedup']:.2f}x "
             f"(ideal {r['ideal_speedup']:.2f}x)")
    marked = [SKIPPED if i in skipped else COMPUTED for i in range(len(magc))]
    legend = [("plain", PLAIN), ("MagCache, computed", COMPUTED), ("MagCache, skipped", SKIPPED)]
    picture = plot_step_bars([(plain, PLAIN), (magc, marked)], title, legend)
    Image.fromarray(picture).save(path)


def jsonable(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    return o


def write_json(path: Path, report: dict) -> None:
    path.write_text(json.dumps(jsonable(report), indent=1))
