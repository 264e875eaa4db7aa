"""Calibration maths: magnitude ratios of consecutive residuals, per CFG branch, in float32.

ratio_t = mean over batch and tokens of ||r_t|| / ||r_{t-1}|| (L2 over channels), with r the
residual of the transformer blocks (last block output minus first block input, image tokens).
A residual of several streams skipped together (LTX-2: video, audio; magcache.streams) gives one
ratio over the tokens of all its streams, each token's norm over its own stream's channels (ours:
the authors have no multi-stream model).
Also recorded, as the official code does: the std of those per-token ratios and the mean cosine
distance between r_t and r_{t-1}. The first step of a branch has no predecessor: 1.0, 0, 0."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional

import torch
import torch.nn.functional as F

from . import streams
from .presets import COND, UNCOND, Preset
from .streams import Hidden


def step_stats(prev: Hidden, cur: Hidden) -> torch.Tensor:
    """[ratio, std, cosine distance] of residual `cur` against the previous one, as a float32
    tensor on the residuals' device (no host sync). Several streams: over all their tokens."""
    pairs = [(p.float(), c.float()) for p, c in zip(streams.parts(prev), streams.parts(cur))]
    per_token = torch.cat([(c.norm(dim=-1) / p.norm(dim=-1)).flatten() for p, c in pairs])
    cos = torch.cat([(1 - F.cosine_similarity(c, p, dim=-1, eps=1e-8)).flatten() for p, c in pairs])
    return torch.stack((per_token.mean(), per_token.std() if per_token.numel() > 1 else per_token.new_zeros(()),
                        cos.mean()))


@dataclass
class CalibrationResult:
    """Per-branch curves of one calibration run."""

    steps: int
    ratios: dict[int, list[float]]  # COND / UNCOND -> one value per step
    std: dict[int, list[float]]
    cos_dis: dict[int, list[float]]

    @property
    def cfg(self) -> bool:
        return UNCOND in self.ratios

    def table(self, values: Optional[dict] = None) -> list[float]:
        """The values in the shipped tables' layout: cond, uncond alternating with CFG."""
        values = self.ratios if values is None else values
        if not self.cfg:
            return list(values[COND])
        return [v for pair in zip(values[COND], values[UNCOND]) for v in pair]

    def preset(self, name: str) -> Preset:
        return Preset(name=name, steps=self.steps, cfg_interleaved=self.cfg, ratios=tuple(self.table()))


class IncompleteCalibration(ValueError):
    """A calibration run stopped before every step of a branch was measured: nothing may be saved from it."""


@dataclass
class Calibration:
    """Collects residual statistics during one sampling run (first evaluation of each step only)."""

    _prev: dict[Hashable, Hidden] = field(default_factory=dict)
    _stats: dict[tuple[Hashable, int], torch.Tensor] = field(default_factory=dict)

    def record(self, key: Hashable, step: int, residual: Hidden) -> None:
        """key: a branch chunk (cond_or_uncond value, uuid); residual: its image-token residual."""
        if (key, step) in self._stats:
            return  # a repeated evaluation of the step (heun, dpmpp_2s)
        prev = self._prev.get(key)
        cur = streams.detach_float(residual)
        if prev is None or not streams.same_layout(prev, cur):
            self._stats[(key, step)] = torch.tensor([1.0, 0.0, 0.0], device=streams.device(residual))
        else:
            self._stats[(key, step)] = step_stats(prev, cur)
        self._prev[key] = cur

    def reached(self) -> int:
        """Steps measured so far: one more than the highest step recorded (0 before any)."""
        return 1 + max((step for _, step in self._stats), default=-1)

    def result(self, steps: int, offset: int = 0) -> Optional[CalibrationResult]:
        """The curves per branch over the run's own steps (chunks of one branch averaged), or None if
        nothing was recorded. offset: the run's first step in the schedule it was cut from (a partial
        denoise records steps offset..offset+steps-1). A branch with a step never recorded (the run
        was interrupted, or a step was not measured) raises IncompleteCalibration: no value is made up."""
        if not self._stats:
            return None
        host = {k: v.tolist() for k, v in self._stats.items()}  # one device-to-host copy per run
        out = {"ratios": {}, "std": {}, "cos_dis": {}}
        branches = sorted({UNCOND if key[0] == UNCOND else COND for key, _ in host})
        if branches == [UNCOND]:
            branches = [COND]  # an uncond-only run still calibrates one curve
        for b in branches:
            per_step = {}
            for (key, step), v in host.items():
                if (UNCOND if key[0] == UNCOND else COND) == b or len(branches) == 1:
                    per_step.setdefault(step - offset, []).append(v)
            missing = [s for s in range(steps) if s not in per_step]
            if missing:
                raise IncompleteCalibration(
                    f"{'uncond' if b == UNCOND else 'cond'} branch measured {steps - len(missing)} of {steps} steps "
                    f"(first missing: step {missing[0] + 1})")
            for i, name in enumerate(("ratios", "std", "cos_dis")):
                out[name][b] = [sum(v[i] for v in per_step[s]) / len(per_step[s]) for s in range(steps)]
        return CalibrationResult(steps=steps, **out)

    def release(self) -> None:
        self._prev.clear()
        self._stats.clear()
