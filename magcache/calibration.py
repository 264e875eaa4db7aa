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


def step_sums(prev: Hidden, cur: Hidden) -> torch.Tensor:
    """[sum of per-token ratios, sum of their squares, sum of cosine distances, tokens] of residual
    `cur` against the previous one, float64 on the residuals' device (no host sync). Sums, so the
    tokens of one residual held in parts (raylight's sequence parallel: a chunk per rank) add up to
    the whole's."""
    pairs = [(p.float(), c.float()) for p, c in zip(streams.parts(prev), streams.parts(cur))]
    per_token = torch.cat([(c.norm(dim=-1) / p.norm(dim=-1)).flatten() for p, c in pairs]).double()
    cos = torch.cat([(1 - F.cosine_similarity(c, p, dim=-1, eps=1e-8)).flatten() for p, c in pairs]).double()
    tokens = per_token.new_full((), per_token.numel())
    return torch.stack((per_token.sum(), per_token.square().sum(), cos.sum(), tokens))


def stats_of(sums: torch.Tensor) -> torch.Tensor:
    """[ratio, std (unbiased, as torch.std), cosine distance] from step_sums (or several added), float32;
    no tokens: the first step's 1, 0, 0."""
    n = sums[..., 3]
    mean = sums[..., 0] / n.clamp(min=1)
    var = (sums[..., 1] - sums[..., 0] * mean) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.clamp(min=0).sqrt(), torch.zeros_like(var))
    return torch.stack((torch.where(n > 0, mean, torch.ones_like(mean)), std, sums[..., 2] / n.clamp(min=1)),
                       dim=-1).float()


def step_stats(prev: Hidden, cur: Hidden) -> torch.Tensor:
    """[ratio, std, cosine distance] of residual `cur` against the previous one, as a float32
    tensor on the residuals' device (no host sync). Several streams: over all their tokens."""
    return stats_of(step_sums(prev, cur))


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
    """Collects residual statistics during one sampling run (first evaluation of each step only).

    Per (branch chunk, step): [1 (reached), step_sums], on the device. The chunks of a branch pool
    their tokens (equal-sized chunks: the mean of their ratios)."""

    _prev: dict[Hashable, Hidden] = field(default_factory=dict)
    _sums: dict[tuple[Hashable, int], torch.Tensor] = field(default_factory=dict)

    def record(self, key: Hashable, step: int, residual: Hidden) -> None:
        """key: a branch chunk (cond_or_uncond value, uuid); residual: its image-token residual (on a
        rank of raylight's sequence parallel: this rank's real tokens of it)."""
        if (key, step) in self._sums:
            return  # a repeated evaluation of the step (heun, dpmpp_2s)
        prev = self._prev.get(key)
        cur = streams.detach_float(residual)
        if prev is None or not streams.same_layout(prev, cur):
            sums = torch.zeros(4, dtype=torch.float64, device=streams.device(residual))
        else:
            sums = step_sums(prev, cur)
        self._sums[(key, step)] = torch.cat((sums.new_ones(1), sums))
        self._prev[key] = cur

    def reached(self) -> int:
        """Steps measured so far: one more than the highest step recorded (0 before any)."""
        return 1 + max((step for _, step in self._sums), default=-1)

    def result(self, steps: int, offset: int = 0, reduce=None) -> Optional[CalibrationResult]:
        """The curves per branch over the run's own steps, or None if nothing was recorded. offset: the
        run's first step in the schedule it was cut from (a partial denoise records steps
        offset..offset+steps-1). A branch with a step never recorded (the run was interrupted, or a step
        was not measured) raises IncompleteCalibration: no value is made up. reduce: sums a
        [2, steps, 5] tensor over the ranks of a run split by raylight (distributed.all_reduce), so every
        rank gets one process's curves; collective, so it is called even with nothing recorded here."""
        if not self._sums and reduce is None:
            return None
        device = next(iter(self._sums.values())).device if self._sums else None
        packed = torch.zeros(2, steps, 5, dtype=torch.float64, device=device)  # the same shape on every rank
        for (key, step), v in self._sums.items():
            if 0 <= step - offset < steps:
                packed[1 if key[0] == UNCOND else 0, step - offset] += v
        if reduce is not None:
            packed = reduce(packed)
        host = torch.cat((packed[..., :1].float(), stats_of(packed[..., 1:])), dim=-1).tolist()  # one copy per run
        seen = {UNCOND if key[0] == UNCOND else COND for key, _ in self._sums}  # here, or on another rank:
        rows_of = {b: rows for b, rows in ((COND, host[0]), (UNCOND, host[1]))
                   if b in seen or any(r[0] > 0 for r in rows)}
        if not rows_of:
            return None
        if list(rows_of) == [UNCOND]:  # an uncond-only run still calibrates one curve
            rows_of = {COND: rows_of[UNCOND]}
        out = {"ratios": {}, "std": {}, "cos_dis": {}}
        for b, rows in rows_of.items():
            missing = [s for s in range(steps) if rows[s][0] <= 0]
            if missing:
                raise IncompleteCalibration(
                    f"{'uncond' if b == UNCOND else 'cond'} branch measured {steps - len(missing)} of {steps} steps "
                    f"(first missing: step {missing[0] + 1})")
            for i, name in enumerate(("ratios", "std", "cos_dis")):
                out[name][b] = [rows[s][1 + i] for s in range(steps)]
        return CalibrationResult(steps=steps, **out)

    def release(self) -> None:
        self._prev.clear()
        self._sums.clear()
