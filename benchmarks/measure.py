"""Timing: one sampling run (wall time, per-step times, memory, log lines, CPU share), interleaved
rounds of variants, and the statistics taken from them."""
from __future__ import annotations

import gc
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from harness import sample

# A CPU run in which this process got less than this share of its threads' CPU time competed with
# other processes (clean runs measure 0.92-0.99 on 2 cores); its round is run again (--retries).
CLEAN_SHARE = 0.85


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
            base = before["allocated"]
            return {"kind": "cuda allocator", "peak_extra": torch.cuda.max_memory_allocated(self.device) - base,
                    "after_extra": torch.cuda.memory_allocated(self.device) - base}
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


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


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


# -- statistics -----------------------------------------------------------------------------------

def best(results: list) -> RunResult:
    return min(results, key=lambda r: r.seconds)


def difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double().cpu(), b.double().cpu()
    mse = float(((a - b) ** 2).mean())
    rel = float((a - b).norm() / a.norm())
    psnr = 10 * math.log10(float(a.max() - a.min()) ** 2 / mse) if mse > 0 else math.inf
    return {"rel_l2": rel, "psnr_db": psnr, "identical": bool(torch.equal(a, b))}


def skipped_from_log(lines: list) -> tuple[int, int] | None:
    """(X, N) from the run's 'MagCache: skipped X/N steps ...' log line."""
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


def wall_ratios(runs: dict, name: str, base: str = "plain") -> list[float]:
    return [a.seconds / b.seconds for a, b in rounds_used(runs, name, base)]


def standard_error(values: list[float]) -> float | None:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def step_quartile(results: list) -> float:
    """Lower quartile of the step times (first steps left out: they carry the per-run work).
    Other processes and the allocator only ever add time, so the fast steps show the true cost
    with far less scatter than a mean or a single run's total."""
    used = [r for r in results if clean(r)] or results
    return statistics.quantiles([s for r in used for s in r.step_seconds[1:]], n=4)[0]


def per_variant(runs: dict, attr: str) -> dict:
    """{variant: [run.attr, ...]}: seconds, cpu_share or load of every run, for the JSON."""
    return {name: [getattr(r, attr) for r in rs] for name, rs in runs.items()}
