"""Calibrated magnitude-ratio tables and their interpolation to any step count."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .text import show

DATA_FILE = Path(__file__).with_name("data") / "mag_ratios.json"
RECOMMENDED_FILE = Path(__file__).with_name("data") / "recommended.json"
COND, UNCOND = 0, 1  # the values ComfyUI puts in transformer_options["cond_or_uncond"]


class PresetError(ValueError):
    """A ratio table is malformed or unknown."""


def interpolate(values: Sequence[float], steps: int) -> tuple[float, ...]:
    """Nearest interpolation of one branch's ratios to `steps` entries, as the official code does:
    idx = round(arange(N) * (L - 1) / (N - 1)); for N = 1 the last entry."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PresetError(f"step count must be a whole number >= 1, got {show(steps)}")
    src = np.asarray(values, dtype=np.float64)
    if src.ndim != 1 or len(src) == 0:
        raise PresetError("cannot interpolate an empty ratio table")
    if steps == 1:
        return (float(src[-1]),)
    if len(src) == steps:
        return tuple(float(v) for v in src)
    idx = np.round(np.arange(steps) * ((len(src) - 1) / (steps - 1))).astype(int)
    return tuple(float(v) for v in src[idx])


@dataclass(frozen=True)
class Preset:
    """One calibrated ratio table.

    ratios holds one value per model call; with cfg_interleaved the cond and uncond values
    alternate (cond first), two per step."""

    name: str
    steps: int
    cfg_interleaved: bool
    ratios: tuple[float, ...]
    recommended: Optional[tuple[float, float, int]] = None  # (thresh, retention_ratio, K)

    def __post_init__(self):
        where = f"ratio table '{self.name}'"
        if not self.ratios:
            raise PresetError(f"{where} is empty")
        for i, v in enumerate(self.ratios):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise PresetError(f"{where}: entry {i} must be a finite positive number, got {show(v)}")
        expected = self.steps * (2 if self.cfg_interleaved else 1)
        if len(self.ratios) != expected:
            layout = "2 per step (cond, uncond)" if self.cfg_interleaved else "1 per step"
            raise PresetError(f"{where}: {len(self.ratios)} values for {self.steps} steps, "
                              f"expected {expected} ({layout})")

    def branch(self, branch: int) -> tuple[float, ...]:
        """The calibrated values of one branch (COND or UNCOND); uninterleaved tables serve both."""
        if not self.cfg_interleaved:
            return self.ratios
        return self.ratios[1::2] if branch == UNCOND else self.ratios[0::2]

    def tables(self, steps: int) -> dict[int, tuple[float, ...]]:
        """Per-branch ratios interpolated to `steps`: {COND: (...), UNCOND: (...)}."""
        return {b: interpolate(self.branch(b), steps) for b in (COND, UNCOND)}


@lru_cache(maxsize=None)
def builtin_presets() -> dict[str, Preset]:
    """The tables shipped with the pack (calibrated by the MagCache authors)."""
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    extra = json.loads(RECOMMENDED_FILE.read_text(encoding="utf-8"))["settings"]
    out = {}
    for name, entry in data["models"].items():
        rec = entry.get("recommended") or extra.get(name, {}).get("recommended")
        out[name] = Preset(name=name, steps=int(entry["steps"]), cfg_interleaved=bool(entry["cfg_interleaved"]),
                           ratios=tuple(float(v) for v in entry["ratios"]),
                           recommended=(float(rec[0]), float(rec[1]), int(rec[2])) if rec else None)
    return out


def get_preset(name: str) -> Preset:
    presets = builtin_presets()
    if name not in presets:
        raise PresetError(f"unknown ratio table '{name}'; known: {', '.join(sorted(presets))}")
    return presets[name]
