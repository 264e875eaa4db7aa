"""The MagCache skip rule, exactly as the official code applies it, and a reference predictor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .config import MagCacheConfig


@dataclass
class Accumulator:
    """Error accumulated by one branch since its last computed step."""

    ratio: float = 1.0
    err: float = 0.0
    steps: int = 0

    def reset(self) -> None:
        self.ratio, self.err, self.steps = 1.0, 0.0, 0

    def advance(self, mag_ratio: float, thresh: float, K: int) -> bool:
        """Fold in this step's ratio; True if the step may be skipped. A refusal resets."""
        self.ratio *= mag_ratio
        self.steps += 1
        self.err += abs(1.0 - self.ratio)
        if self.err < thresh and self.steps <= K:
            return True
        self.reset()
        return False


def eligible(config: MagCacheConfig, step: int, steps: int, round_half_up: bool = False) -> bool:
    """May `step` be skipped at all: past the retention boundary and inside start/end_step."""
    first, last = config.window(steps)
    return step >= config.retention_start(steps, round_half_up) and first <= step <= last


def predict_skips(config: MagCacheConfig, tables: Mapping[int, Sequence[float]], steps: int,
                  branches: Sequence[int] = (0,), batched: bool = True,
                  round_half_up: bool = False, first: int = 0, last: int | None = None) -> dict[int, list[int]]:
    """Skipped steps per branch for one euler-like run (one model evaluation per step).

    batched=True: the branches share one model call, so blocks are skipped only when every
    branch would skip; a branch computed anyway counts as computed (accumulators reset).
    batched=False: each branch is its own call and decides alone.
    first/last: the run covers only steps first..last of a `steps`-step schedule (a sampler
    that runs part of the schedule, as Wan2.2's two experts do)."""
    acc = {b: Accumulator() for b in branches}
    skipped: dict[int, list[int]] = {b: [] for b in branches}
    for step in range(first, steps if last is None else last + 1):
        ok = eligible(config, step, steps, round_half_up) and step > first  # no residual yet at the first
        wants = {}
        for b in branches:
            if ok:
                wants[b] = acc[b].advance(tables[b][step], config.thresh, config.K)
            else:
                acc[b].reset()
                wants[b] = False
        groups = [list(branches)] if batched else [[b] for b in branches]
        for group in groups:
            skip = all(wants[b] for b in group)
            for b in group:
                if skip:
                    skipped[b].append(step)
                elif wants[b]:
                    acc[b].reset()
    return skipped
