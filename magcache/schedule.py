"""Step index from the current sigma and the run's schedule (ComfyUI passes no step counter)."""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass


class DegenerateSchedule(ValueError):
    """The schedule cannot give step indices; caching is switched off for the run."""


@dataclass(frozen=True)
class Schedule:
    """A descending sigma schedule of steps + 1 values (the last is usually 0)."""

    sigmas: tuple[float, ...]

    def __post_init__(self):
        # Negated step starts, ascending, for bisect.
        object.__setattr__(self, "_neg_starts", [-s for s in self.sigmas[:-1]])

    @classmethod
    def from_values(cls, values) -> "Schedule":
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
        return cls(values)

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

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
