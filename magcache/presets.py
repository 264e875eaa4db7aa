"""Calibrated magnitude-ratio tables and their interpolation to any step count."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .rule import COND, UNCOND, TableRule
from .text import show

DATA_FILE = Path(__file__).with_name("data") / "mag_ratios.json"
RECOMMENDED_FILE = Path(__file__).with_name("data") / "recommended.json"


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


class StepTables(dict):
    """A table interpolated to a run's step count: {COND: ratios, UNCOND: ratios}, with the name
    and the rule of the table it came from."""

    def __init__(self, tables, name: str = "", rule: Optional[TableRule] = None):
        super().__init__(tables)
        self.name, self.rule = name, rule


@dataclass(frozen=True)
class Preset:
    """One calibrated ratio table.

    ratios holds one value per model call; with cfg_interleaved the cond and uncond values
    alternate (cond first), two per step. rule: how the authors' script for this table applies
    the skip rule (None: the family's default, for calibration profiles). source: where the
    table comes from; recommended_source: where its recommended settings come from.
    switch: (above_steps, name): a run of more than above_steps steps that chose this table by
    name reads table `name` instead (see chosen); switch_source: where that rule comes from."""

    name: str
    steps: int
    cfg_interleaved: bool
    ratios: tuple[float, ...]
    recommended: Optional[tuple[float, float, int]] = None  # (thresh, retention_ratio, K)
    rule: Optional[TableRule] = None
    source: str = ""
    recommended_source: str = ""
    recommended_end_step: int = -1  # end_step that goes with the recommended settings
    switch: Optional[tuple[int, str]] = None
    switch_source: str = ""

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

    def chosen(self, steps: int) -> "Preset":
        """The table a `steps`-step run reads when this one was chosen by name: itself, or the table
        its switch names above a step count (the original pack's hunyuan_video1.5 reads its
        40-step table above 20 steps). 'auto' picks among a family's tables by its own rule and
        does not go through this."""
        if self.switch is not None and steps > self.switch[0]:
            return get_preset(self.switch[1])
        return self

    def tables(self, steps: int) -> StepTables:
        """Per-branch ratios interpolated to `steps`: {COND: (...), UNCOND: (...)}, with the rule."""
        return StepTables({b: interpolate(self.branch(b), steps) for b in (COND, UNCOND)}, self.name, self.rule)


@lru_cache(maxsize=None)
def builtin_presets() -> dict[str, Preset]:
    """The tables shipped with the pack (calibrated by the MagCache authors), each with its rule,
    its recommended settings and where both come from."""
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    settings = json.loads(RECOMMENDED_FILE.read_text(encoding="utf-8"))["settings"]
    out = {}
    for name, entry in data["models"].items():
        setting = settings.get(name) or {}
        rec = setting.get("recommended")
        switch = entry.get("switch")
        out[name] = Preset(name=name, steps=int(entry["steps"]), cfg_interleaved=bool(entry["cfg_interleaved"]),
                           ratios=tuple(float(v) for v in entry["ratios"]),
                           recommended=(float(rec[0]), float(rec[1]), int(rec[2])) if rec else None,
                           rule=TableRule.from_data(entry.get("rule")), source=entry.get("source", ""),
                           recommended_source=setting.get("source", ""),
                           recommended_end_step=int(setting.get("end_step", -1)),
                           switch=(int(switch["above_steps"]), str(switch["to"])) if switch else None,
                           switch_source=(switch or {}).get("source", ""))
    for preset in out.values():
        if preset.switch is not None and (preset.switch[1] not in out or out[preset.switch[1]].switch is not None
                                          or out[preset.switch[1]].cfg_interleaved != preset.cfg_interleaved):
            raise PresetError(f"ratio table '{preset.name}': its switch names {show(preset.switch[1])}, which must be "
                              "a table of the same layout without a switch of its own")
    return out


def get_preset(name: str) -> Preset:
    presets = builtin_presets()
    if name not in presets:
        raise PresetError(f"unknown ratio table '{name}'; known: {', '.join(sorted(presets))}")
    return presets[name]
