"""A picture of a calibration: ratio curve per branch against the table it replaces, with the steps
the given settings would skip marked; and per-step bars (the benchmark's step times). Drawn with
Pillow (which ComfyUI ships)."""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from .calibration import CalibrationResult
from .config import MagCacheConfig
from .presets import COND, UNCOND, Preset
from .profiles import write_atomic
from .rule import predict_skips

W, H, LEFT, RIGHT, TOP, BOTTOM = 960, 440, 70, 20, 40, 70
COLORS = {COND: (31, 119, 180), UNCOND: (255, 127, 14)}
REFERENCE = (150, 150, 150)
SKIP = (214, 39, 40)


def plot_step_bars(series, title: str = "", legend=(), unit: str = "s") -> np.ndarray:
    """Bars per step, the series side by side: series = [(values, color)], color one RGB for every
    bar or a list of one per step (to mark some steps); legend = [(text, RGB)]. An RGB image
    (H, W, 3, uint8)."""
    n = max((len(values) for values, _ in series), default=0)
    top = max((v for values, _ in series for v in values), default=0) * 1.1 or 1.0
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    slot = (W - LEFT - RIGHT) / max(n, 1)
    bar = slot / max(len(series), 1)

    def y(v):
        return TOP + (H - TOP - BOTTOM) * (1 - v / top)

    d.rectangle((LEFT, TOP, W - RIGHT, H - BOTTOM), outline=(0, 0, 0))
    for k in range(5):  # y grid and labels
        v = top * k / 4
        d.line((LEFT, y(v), W - RIGHT, y(v)), fill=(230, 230, 230))
        d.text((6, y(v) - 6), f"{v:.3f} {unit}", fill=(0, 0, 0))
    for i in range(n):
        x = LEFT + i * slot
        for j, (values, color) in enumerate(series):
            if i < len(values):
                fill = color[i] if isinstance(color[0], (tuple, list)) else color
                x0, x1 = x + j * bar + 1, max(x + (j + 1) * bar - 1, x + j * bar + 1)
                d.rectangle((x0, y(values[i]), x1, H - BOTTOM), fill=tuple(fill))
        if i % max(1, n // 10) == 0:  # x labels
            d.text((x, H - BOTTOM + 6), str(i), fill=(0, 0, 0))
    d.text((LEFT, 10), title, fill=(0, 0, 0))
    x = LEFT
    for text, color in legend:
        d.rectangle((x, H - 28, x + 12, H - 18), fill=tuple(color))
        d.text((x + 16, H - 30), text, fill=(0, 0, 0))
        x += 24 + 7 * len(text)
    return np.array(img, dtype=np.uint8)


def plot_calibration(result: CalibrationResult, config: MagCacheConfig, reference: Optional[Preset] = None,
                     title: str = "", round_half_up: bool = False) -> np.ndarray:
    """An RGB image (H, W, 3, uint8)."""
    n = result.steps
    branches = [COND, UNCOND] if result.cfg else [COND]
    ref = reference.tables(n) if reference is not None else {}
    curves = [result.ratios[b] for b in branches] + [ref[b] for b in branches if b in ref]
    lo = min(min(c) for c in curves)
    hi = max(max(c) for c in curves)
    pad = max((hi - lo) * 0.08, 1e-3)
    lo, hi = lo - pad, hi + pad

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)

    def xy(step, value):
        x = LEFT + (W - LEFT - RIGHT) * (step / max(n - 1, 1))
        y = TOP + (H - TOP - BOTTOM) * (1 - (value - lo) / (hi - lo))
        return x, y

    d.rectangle((LEFT, TOP, W - RIGHT, H - BOTTOM), outline=(0, 0, 0))
    for k in range(5):  # y grid and labels
        v = lo + (hi - lo) * k / 4
        _, y = xy(0, v)
        d.line((LEFT, y, W - RIGHT, y), fill=(230, 230, 230))
        d.text((6, y - 6), f"{v:.3f}", fill=(0, 0, 0))
    for step in range(0, n, max(1, n // 10)):  # x labels
        x, _ = xy(step, lo)
        d.text((x - 4, H - BOTTOM + 6), str(step), fill=(0, 0, 0))
    one = xy(0, 1.0)[1]
    if TOP <= one <= H - BOTTOM:
        d.line((LEFT, one, W - RIGHT, one), fill=(190, 190, 190))

    for b in branches:
        if b in ref:
            d.line([xy(i, v) for i, v in enumerate(ref[b])], fill=REFERENCE, width=1)
        d.line([xy(i, v) for i, v in enumerate(result.ratios[b])], fill=COLORS[b], width=2)
        for i, v in enumerate(result.ratios[b]):
            x, y = xy(i, v)
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=COLORS[b])

    skips = predict_skips(config, result.preset("calibrated").tables(n), n, branches=branches,
                          round_half_up=round_half_up)[COND]
    for step in skips:
        x, _ = xy(step, lo)
        d.rectangle((x - 3, H - BOTTOM - 10, x + 3, H - BOTTOM - 2), fill=SKIP)

    d.text((LEFT, 10), title, fill=(0, 0, 0))
    legend = [("cond", COLORS[COND])] + ([("uncond", COLORS[UNCOND])] if result.cfg else [])
    if reference is not None:
        legend.append((f"table {reference.name}", REFERENCE))
    legend.append((f"skipped at thresh {config.thresh:g}, retention {config.retention_ratio:g}, K {config.K}: "
                   f"{len(skips)}/{n} steps", SKIP))
    x = LEFT
    for text, color in legend:
        d.rectangle((x, H - 28, x + 12, H - 18), fill=color)
        d.text((x + 16, H - 30), text, fill=(0, 0, 0))
        x += 24 + 7 * len(text)
    return np.array(img, dtype=np.uint8)


def plot_lines(series, title: str = "", xlabel: str = "", ylabel: str = "") -> np.ndarray:
    """Lines through points: series = [(label, [(x, y), ...], RGB)], each drawn in x order with its
    points marked. An RGB image (H, W, 3, uint8)."""
    pts = [p for _, points, _ in series for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    y_lo, y_hi = min(p[1] for p in pts), max(p[1] for p in pts)
    x_hi, y_hi = max(x_hi, x_lo + 1e-3), max(y_hi, y_lo + 1e-3)
    pad = (y_hi - y_lo) * 0.06
    y_lo, y_hi = y_lo - pad, y_hi + pad
    img = Image.new("RGB", (W, H + 40), "white")
    d = ImageDraw.Draw(img)
    bottom = H + 40 - BOTTOM - 30

    def xy(x, y):
        return (LEFT + (W - LEFT - RIGHT) * (x - x_lo) / (x_hi - x_lo),
                TOP + (bottom - TOP) * (1 - (y - y_lo) / (y_hi - y_lo)))

    d.rectangle((LEFT, TOP, W - RIGHT, bottom), outline=(0, 0, 0))
    for k in range(5):
        y = y_lo + (y_hi - y_lo) * k / 4
        d.line((LEFT, xy(x_lo, y)[1], W - RIGHT, xy(x_lo, y)[1]), fill=(230, 230, 230))
        d.text((6, xy(x_lo, y)[1] - 6), f"{y:.3g}", fill=(0, 0, 0))
        x = x_lo + (x_hi - x_lo) * k / 4
        d.line((xy(x, y_lo)[0], TOP, xy(x, y_lo)[0], bottom), fill=(230, 230, 230))
        d.text((xy(x, y_lo)[0] - 10, bottom + 6), f"{x:.2f}", fill=(0, 0, 0))
    d.text((W // 2 - 4 * len(xlabel), bottom + 22), xlabel, fill=(0, 0, 0))
    d.text((6, TOP - 16), ylabel, fill=(0, 0, 0))
    for _, points, color in series:
        ok = sorted(p for p in points if math.isfinite(p[0]) and math.isfinite(p[1]))
        if len(ok) > 1:
            d.line([xy(*p) for p in ok], fill=tuple(color), width=2)
        for p in ok:
            x, y = xy(*p)
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tuple(color))
    d.text((LEFT, 10), title, fill=(0, 0, 0))
    x, y = LEFT, H + 40 - 34
    for label, _, color in series:
        if x + 24 + 7 * len(label) > W:
            x, y = LEFT, y + 16
        d.rectangle((x, y + 2, x + 12, y + 12), fill=tuple(color))
        d.text((x + 16, y), label, fill=(0, 0, 0))
        x += 28 + 7 * len(label)
    return np.array(img, dtype=np.uint8)


def save_png(path, picture: np.ndarray):
    """Save an RGB array as PNG atomically; a symlink at `path` is replaced, never written through."""
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return write_atomic(path, buf.getvalue())
