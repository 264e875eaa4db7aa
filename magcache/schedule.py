"""Step index from the current sigma and the run's schedule (ComfyUI passes no step counter)."""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Optional


class DegenerateSchedule(ValueError):
    """The schedule cannot give step indices; caching is switched off for the run."""


@dataclass(frozen=True)
class Schedule:
    """A descending sigma schedule of steps + 1 values (the last is usually 0).

    offset and total place the run inside a longer schedule when it covers only part of one
    (Wan2.2's two experts as two KSamplerAdvanced, a denoise < 1): the run's step i is step
    offset + i of a total-step schedule. A run from the top of the noise range to 0 has offset 0
    and total == steps."""

    sigmas: tuple[float, ...]
    offset: int = 0
    total: int = 0

    def __post_init__(self):
        # Negated step starts, ascending, for bisect.
        object.__setattr__(self, "_neg_starts", [-s for s in self.sigmas[:-1]])
        if self.total < self.offset + self.steps:
            object.__setattr__(self, "total", self.offset + self.steps)

    @classmethod
    def from_values(cls, values, model_sigmas=None) -> "Schedule":
        """Parse and check a schedule. model_sigmas: the model's own ascending sigma table
        (model_sampling.sigmas), used to place a partial run inside the full schedule."""
        if values is None:
            raise DegenerateSchedule("the sampler passed no sample_sigmas")
        if hasattr(values, "tolist"):  # a tensor: one small host copy per run, never per step
            values = values.reshape(-1).tolist()
        values = tuple(float(v) for v in values)
        if len(values) < 2:
            raise DegenerateSchedule(f"sample_sigmas has {len(values)} value(s), need at least 2")
        if not all(math.isfinite(v) for v in values):
            raise DegenerateSchedule("sample_sigmas contains NaN or infinity")
        if any(b > a for a, b in zip(values, values[1:])):
            raise DegenerateSchedule("sample_sigmas is not descending")
        if values[0] <= values[-1]:
            raise DegenerateSchedule(f"sample_sigmas does not move (all {values[0]:g})")
        if model_sigmas is None:
            return cls(values)
        return cls(values, *placement(values, model_sigmas))

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def global_step(self, sigma: float) -> int:
        """Step index in the full schedule (offset + step_index)."""
        return self.offset + self.step_index(sigma)

    def step_index(self, sigma: float) -> int:
        """The step i whose interval holds sigma: sigmas[i] >= sigma > sigmas[i+1].

        A sigma equal to a schedule value maps to that step (euler, ancestral samplers); a sigma
        between two values maps to the step it lies in (dpmpp_2s_ancestral's midpoints); heun's
        second evaluation at sigmas[i+1] maps to step i+1. Values outside the schedule clamp
        to the first or last step."""
        tol = 1e-6 * max(abs(sigma), 1e-12)
        # Count the leading schedule values >= sigma (descending list -> bisect on negated values).
        count = bisect.bisect_right(self._neg_starts, -(sigma - tol))
        return min(max(count - 1, 0), self.steps - 1)


def _position(sigma: float, table) -> float:
    """Fractional index of sigma in the model's ascending sigma table (clamped)."""
    i = bisect.bisect_left(table, sigma)
    if i <= 0:
        return 0.0
    if i >= len(table):
        return float(len(table) - 1)
    lo, hi = table[i - 1], table[i]
    return i - 1 + (sigma - lo) / (hi - lo) if hi > lo else float(i)


def placement(sigmas, model_sigmas) -> tuple[int, int]:
    """(offset, total) of a run inside the full schedule it was cut from.

    Positions are measured in the model's sigma table, where ComfyUI's default ('simple')
    schedules are evenly spaced: the run's own spacing tells how many steps of the same
    density lie above its first sigma and below its last. A run that starts at the top of the
    table and ends at 0 gets (0, steps) whatever its scheduler."""
    table = [float(v) for v in (model_sigmas.tolist() if hasattr(model_sigmas, "tolist") else model_sigmas)]
    steps = len(sigmas) - 1
    nonzero = [s for s in sigmas if s > 0]
    if len(table) < 2 or len(nonzero) < 2:
        return 0, steps
    pos = [_position(s, table) for s in nonzero]
    spacing = (pos[0] - pos[-1]) / (len(pos) - 1)
    if spacing <= 0:
        return 0, steps
    top = len(table) - 1
    offset = max(0, round((top - pos[0]) / spacing))
    tail = 0
    if sigmas[-1] > 0:
        # Entries of the full schedule still below the run's last sigma (its last non-zero entry
        # sits one spacing above the bottom). Below that the run did reach the end: some samplers
        # (uni_pc) end at a small sigma instead of 0.
        below = (pos[-1] - (spacing - 1)) / spacing
        if below >= -0.5:
            tail = max(0, round(below)) + 1
    return _simple_placement(sigmas, pos, len(table), offset, offset + steps + tail) or (offset, offset + steps + tail)


def _simple_placement(sigmas, pos, size: int, offset: int, total: int) -> Optional[tuple[int, int]]:
    """The (offset, total) near the estimate whose 'simple' schedule holds exactly the run's sigmas.

    ComfyUI's simple scheduler takes table entry size-1-int(x*size/total) for step x: its spacing
    in the table alternates between two whole numbers, so a short run's own spacing can misjudge
    the full schedule by a step; the entries themselves tell it exactly. None when the run is not
    a piece of a simple schedule (other schedulers keep the estimate)."""
    if any(abs(p - round(p)) > 1e-6 for p in pos):
        return None
    steps = len(sigmas) - 1
    ends = sigmas[-1] <= 0
    candidates = sorted(((t, o) for t in range(total - 3, total + 4) for o in range(max(0, offset - 3), offset + 4)
                         if t > 0 and (t == o + steps if ends else t > o + steps)),
                        key=lambda c: (abs(c[0] - total) + abs(c[1] - offset), c))
    for t, o in candidates:
        ss = size / t
        if all(size - 1 - int((o + i) * ss) == round(p) for i, p in enumerate(pos)):
            return o, t
    return None
