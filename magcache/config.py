"""MagCache settings: one validated, immutable record per node application."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .text import show


class MagCacheConfigError(ValueError):
    """A MagCache setting is out of range; the message names the setting and what is accepted."""


# The accepted ranges hold those of the original node's widgets, so saved workflows stay valid;
# retention_ratio goes beyond the original 0.3 because the authors publish 0.4 (Wan2.2 T2V-A14B).
# nodes.py builds its widgets from these numbers: one source of truth.
THRESH_RANGE = (0.0, 0.3)
RETENTION_RANGE = (0.1, 1.0)
K_RANGE = (0, 6)
START_STEP_RANGE = (0, 10000)
END_STEP_RANGE = (-10000, 10000)


def _number(name: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MagCacheConfigError(f"{name} must be a number from {lo} to {hi}, got {show(value)}")
    if not (isinstance(value, float) and math.isfinite(value) or isinstance(value, int) and abs(value) < 2 ** 53) \
            or not lo <= value <= hi:  # a huge int is not made a float (OverflowError)
        raise MagCacheConfigError(f"{name} must be a number from {lo} to {hi}, got {show(value)}")
    return float(value)


def _whole(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MagCacheConfigError(f"{name} must be a whole number from {lo} to {hi}, got {show(value)}")
    return value


@dataclass(frozen=True)
class MagCacheConfig:
    """The user's MagCache settings.

    Args:
        thresh: error budget (magcache_thresh); a step may be skipped while the accumulated skip
            error is within it (<= or <, as the table's rule says). 0 never skips.
        retention_ratio: fraction of the first steps that are always computed.
        K: most consecutive skipped steps (magcache_K); 0 never skips.
        start_step: first step on which skipping is allowed.
        end_step: last step on which skipping is allowed; negative counts from the end
            (-1 is the last step).
    """

    thresh: float = 0.06
    retention_ratio: float = 0.2
    K: int = 2
    start_step: int = 0
    end_step: int = -1

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "thresh", _number("magcache_thresh", self.thresh, *THRESH_RANGE))
        set_(self, "retention_ratio", _number("retention_ratio", self.retention_ratio, *RETENTION_RANGE))
        set_(self, "K", _whole("magcache_K", self.K, *K_RANGE))
        set_(self, "start_step", _whole("start_step", self.start_step, *START_STEP_RANGE))
        set_(self, "end_step", _whole("end_step", self.end_step, *END_STEP_RANGE))
        if self.end_step >= 0 and self.end_step < self.start_step:
            raise MagCacheConfigError(
                f"end_step ({self.end_step}) is before start_step ({self.start_step}); "
                "use end_step >= start_step, or a negative end_step to count from the last step")

    def retention_start(self, steps: int, round_half_up: bool = False) -> int:
        """First step index at which skipping may happen by step-based retention (int(R*N); Flux:
        int(R*N + 0.5)). Tables whose rule counts model calls differ per branch: see rule.TableRule."""
        return int(self.retention_ratio * steps + (0.5 if round_half_up else 0.0))

    def window(self, steps: int) -> tuple[int, int]:
        """Inclusive (first, last) step indices of the start_step/end_step window for `steps` steps."""
        last = self.end_step if self.end_step >= 0 else steps + self.end_step
        return self.start_step, min(last, steps - 1)
