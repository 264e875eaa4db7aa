"""The time spent in the pack's own code per model call, from a cProfile'd run: free of the machine's
timing noise. (Not named profile.py: cProfile imports the standard library's `profile`.)"""
from __future__ import annotations

import cProfile
import pstats
from pathlib import Path

import torch
from harness import sample

ROOT = Path(__file__).resolve().parents[1]
NOT_PACK = ("tests", "benchmarks", "scripts")  # in the repository but not the pack: tests, this, harness


def is_pack(filename: str) -> bool:
    path = Path(filename)
    return path.is_relative_to(ROOT) and not any(path.is_relative_to(ROOT / d) for d in NOT_PACK)


def pack_seconds_per_call(model, fam, pos, neg, steps) -> tuple[float, torch.Tensor]:
    """Time spent in the pack's own code per model call, from one cProfile'd run: its functions'
    own time (tensor arithmetic written as operators, like the residual's subtraction, counts there)
    plus the C functions they call directly (clone, cat, tolist); the blocks and ComfyUI code they
    hand on to are the model's. cProfile slows Python code more than torch kernels, so this errs
    high: an upper bound, free of the machine's timing noise."""
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
