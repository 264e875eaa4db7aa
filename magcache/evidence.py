"""Settings from evidence for a family without a published table (ours: the rule, derived here
from the authors' published tables and settings).

At their recommended settings, on their own tables at their own step counts, the authors' presets
skip a fraction of the steps (published_skip_fractions()); the median of those fractions is the
speed the authors chose to recommend. For a self-calibrated profile the pack keeps the shape most
of their settings use (retention 0.2, K 2) and takes the smallest threshold that skips at least
that median fraction of the steps on the profile itself (evidence_thresh())."""
from __future__ import annotations

from statistics import median
from typing import Optional

from .config import MagCacheConfig
from .presets import COND, UNCOND, Preset, builtin_presets
from .rule import predict_skips

RETENTION, K = 0.2, 2  # the most common shape of the published settings (see published_settings())
GRID = tuple(round(0.005 * i, 3) for i in range(1, 201))  # thresholds tried: 0.005 .. 1.0


def _branches(preset: Preset):
    return (COND, UNCOND) if preset.cfg_interleaved else (COND,)


def skip_fraction(preset: Preset, config: MagCacheConfig, steps: Optional[int] = None) -> float:
    """Fraction of the steps the rule skips (all branches batched, as ComfyUI runs CFG)."""
    steps = steps or preset.steps
    skips = predict_skips(config, preset.tables(steps), steps, branches=_branches(preset))
    return len(skips[COND]) / steps


def published_settings() -> dict[str, tuple]:
    """Every shipped table's recommended (thresh, retention, K) with its end_step (authors' sources
    in magcache/data/recommended.json)."""
    return {name: (*p.recommended, p.recommended_end_step) for name, p in builtin_presets().items()
            if p.recommended is not None}


def published_skip_fractions() -> dict[str, float]:
    out = {}
    for name, (thresh, retention, k, end_step) in published_settings().items():
        preset = builtin_presets()[name]
        config = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=k, end_step=end_step)
        out[name] = skip_fraction(preset, config)
    return out


def target_fraction() -> float:
    """The median skip fraction of the published settings."""
    return median(published_skip_fractions().values())


def evidence_thresh(preset: Preset, steps: Optional[int] = None, fraction: Optional[float] = None,
                    retention: float = RETENTION, k: int = K) -> float:
    """The smallest threshold of GRID that skips at least `fraction` (default: target_fraction())
    of the steps on `preset` (a self-calibrated profile) at `steps`; if none does, the smallest
    that skips the most."""
    fraction = target_fraction() if fraction is None else fraction
    best, best_frac = GRID[-1], -1.0
    for t in GRID:
        f = skip_fraction(preset, MagCacheConfig(thresh=t, retention_ratio=retention, K=k), steps)
        if f >= fraction - 1e-9:
            return t
        if f > best_frac:
            best, best_frac = t, f
    return best


def evidence_settings(preset: Preset, steps: Optional[int] = None) -> tuple[float, float, int]:
    return evidence_thresh(preset, steps), RETENTION, K
