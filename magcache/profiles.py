"""Calibration profiles: named JSON files holding a calibrated ratio table and how it was made.

Reading treats a profile as data only: JSON, validated field by field, with an error naming the
file and the problem."""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .calibration import CalibrationResult
from .presets import Preset

FORMAT = "magcache-profile"
VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,79}$")


class ProfileError(ValueError):
    """A profile cannot be used; the message names the file and the problem."""


def check_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else name
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith("."):
        raise ProfileError(f"profile name {name!r} is not usable: use 1-80 letters, digits, spaces, '-', '_' "
                           "or '.', starting with a letter or digit")
    return name


def profile_path(directory, name: str) -> Path:
    return Path(directory) / f"{check_name(name)}.json"


def list_profiles(directory) -> list[str]:
    """Names of the profiles in `directory` (file names only: nothing is parsed here)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json") if p.is_file() and NAME_RE.match(p.stem))


def save_profile(directory, name: str, result: CalibrationResult, meta: dict[str, Any]) -> Path:
    """Write the profile atomically (a temporary file renamed over the target)."""
    path = profile_path(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, "name": name, **meta, "steps": result.steps,
            "cfg_interleaved": result.cfg, "ratios": result.table(), "std": result.table(result.std),
            "cos_dis": result.table(result.cos_dis)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _reject_constant(name):
    raise ValueError(f"{name} is not allowed")


def load_profile(path) -> tuple[Preset, dict[str, Any]]:
    """(the profile's table as a Preset, its metadata). Raises ProfileError naming the file."""
    path = Path(path)
    where = f"MagCache profile {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ProfileError(f"{where}: cannot be read ({e.strerror or e})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise ProfileError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a JSON object")
    for key in ("format", "family", "steps", "cfg_interleaved", "ratios"):
        if key not in data:
            raise ProfileError(f"{where}: missing field '{key}'")
    if data["format"] != FORMAT:
        raise ProfileError(f"{where}: 'format' is {data['format']!r}, expected {FORMAT!r}")
    steps, cfg, ratios = data["steps"], data["cfg_interleaved"], data["ratios"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ProfileError(f"{where}: 'steps' must be a whole number >= 1, got {steps!r}")
    if not isinstance(cfg, bool):
        raise ProfileError(f"{where}: 'cfg_interleaved' must be true or false, got {cfg!r}")
    if not isinstance(ratios, list):
        raise ProfileError(f"{where}: 'ratios' must be a list of numbers")
    for i, v in enumerate(ratios):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ProfileError(f"{where}: ratios[{i}] must be a finite positive number, got {v!r}")
    expected = steps * (2 if cfg else 1)
    if len(ratios) != expected:
        layout = "cond and uncond per step" if cfg else "one per step"
        raise ProfileError(f"{where}: {len(ratios)} ratios for {steps} steps, expected {expected} ({layout})")
    preset = Preset(name=f"profile:{path.stem}", steps=steps, cfg_interleaved=cfg, ratios=tuple(float(v) for v in ratios))
    meta = {k: v for k, v in data.items() if k not in ("ratios", "std", "cos_dis")}
    return preset, meta
