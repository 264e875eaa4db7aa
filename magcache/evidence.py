"""Settings from evidence for a family without a published table (ours: the rule, derived here
from the authors' published tables and settings).

At their recommended settings, on their own tables at their own step counts, the authors' presets
skip a fraction of the steps (published_skip_fractions()); the median of those fractions (0.5) is
the speed the authors chose to recommend. For a self-calibrated profile the pack takes the median
retention (0.2) and the median K (3) of the published settings, and the smallest threshold that
skips at least that median fraction of the steps on the profile itself (evidence_thresh()).
The MagCache node applies it to every self-calibrated profile (settings_from 'auto'): evidence_config()."""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from statistics import median
from typing import Optional

from .config import MagCacheConfig
from .presets import COND, UNCOND, Preset, builtin_presets
from .rule import predict_skips

GRID = tuple(round(0.005 * i, 3) for i in range(1, 61))  # thresholds tried: 0.005 .. 0.3 (the node's range)


def _branches(preset: Preset):
    return (COND, UNCOND) if preset.cfg_interleaved else (COND,)


def skip_fraction(preset: Preset, config: MagCacheConfig, steps: Optional[int] = None, tables=None) -> float:
    """Fraction of the steps the rule skips (all branches batched, as ComfyUI runs CFG); only steps inside
    config's start/end window can be (rule.eligible)."""
    steps = steps or preset.steps
    skips = predict_skips(config, tables or preset.tables(steps), steps, branches=_branches(preset))
    return len(skips[COND]) / steps


def published_settings() -> dict[str, tuple]:
    """Every shipped table's recommended (thresh, retention, K) with its end_step (authors' sources
    in magcache/data/recommended.json)."""
    return {name: (*p.recommended, p.recommended_end_step) for name, p in builtin_presets().items()
            if p.recommended is not None}


@lru_cache(maxsize=None)
def _published_skip_fractions() -> tuple:
    out = []
    for name, (thresh, retention, k, end_step) in published_settings().items():
        preset = builtin_presets()[name]
        config = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=k, end_step=end_step)
        out.append((name, skip_fraction(preset, config)))
    return tuple(out)


def published_skip_fractions() -> dict[str, float]:
    return dict(_published_skip_fractions())


def median_shape() -> tuple[float, int]:
    """(retention, K): the medians of the published settings' (0.2, 3)."""
    settings = published_settings().values()
    return median(s[1] for s in settings), int(median(s[2] for s in settings))


def target_fraction() -> float:
    """The median skip fraction of the published settings."""
    return median(published_skip_fractions().values())


def evidence_thresh(preset: Preset, steps: Optional[int] = None, fraction: Optional[float] = None,
                    retention: Optional[float] = None, k: Optional[int] = None,
                    window: tuple[int, int] = (0, -1)) -> float:
    """The smallest threshold of GRID that skips at least `fraction` (default: target_fraction())
    of the steps on `preset` (a self-calibrated profile) at `steps`, skipping only inside `window`
    (start_step, end_step); if none does, the smallest that skips the most."""
    fraction = target_fraction() if fraction is None else fraction
    if retention is None or k is None:
        retention, k = median_shape()
    steps = steps or preset.steps
    tables = preset.tables(steps)
    best, best_frac = GRID[-1], -1.0
    for t in GRID:
        config = MagCacheConfig(thresh=t, retention_ratio=retention, K=k, start_step=window[0], end_step=window[1])
        f = skip_fraction(preset, config, steps, tables)
        if f >= fraction - 1e-9:
            return t
        if f > best_frac:
            best, best_frac = t, f
    return best


def evidence_settings(preset: Preset, steps: Optional[int] = None,
                      window: tuple[int, int] = (0, -1)) -> tuple[float, float, int]:
    """(thresh, retention, K) by the rule for a self-calibrated profile."""
    retention, k = median_shape()
    return evidence_thresh(preset, steps, retention=retention, k=k, window=window), retention, k


def evidence_config(preset: Preset, steps: int, base: MagCacheConfig) -> MagCacheConfig:
    """`base` (the node's settings) with thresh, retention and K from the rule on `preset` at `steps`;
    its start_step / end_step window is kept and the rule counts only skips inside it."""
    thresh, retention, k = evidence_settings(preset, steps, (base.start_step, base.end_step))
    return replace(base, thresh=thresh, retention_ratio=retention, K=k)
