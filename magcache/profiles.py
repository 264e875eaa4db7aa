"""Calibration profiles: named JSON files holding a calibrated ratio table and how it was made.

Reading treats a profile as untrusted data: at most MAX_BYTES, UTF-8 JSON, validated field by field;
anything else is a ProfileError whose first line names the file, the problem and what to do.
Writing is atomic (a temporary file renamed over the target), so a crash never leaves half a file
and a symlink planted at the target is replaced, never written through."""
from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from .calibration import CalibrationResult
from .presets import Preset
from .text import clip, show

SHOWN = 50  # characters of a value from the file echoed in an error

FORMAT = "magcache-profile"
VERSION = 1
# Size limit of a profile file: 1 MB (10^6 bytes). A saved CFG profile takes about 130 bytes per
# step (ratios, std and cosine distance, both branches), so the limit holds 7,000+ steps.
MAX_BYTES = 1_000_000
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,79}")  # always used with fullmatch
NAME_RULE = "use 1-80 letters, digits, spaces, '-', '_' or '.', starting with a letter or digit"
# Device names Windows refuses as file names, with any extension (CON.json, com1.x.json).
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
STALE_SECONDS = 15 * 60  # a temporary file older than this is a write that never finished (ours)
KEEP_AUTO = 20  # automatic (self-calibration) profiles kept per model, the most recently used (ours)
MAX_DIGITS = 30  # longer integers in a profile are refused (no ratio or step count needs them)


class ProfileError(ValueError):
    """A profile cannot be used or written; the first line names the file, the problem and what to do."""


def name_problem(name) -> Optional[str]:
    """Why `name` (already stripped) cannot be a profile name, or None."""
    if not isinstance(name, str):
        return f"it must be text, got {show(name)}"
    if not NAME_RE.fullmatch(name) or name.endswith((".", " ")):  # Windows drops a trailing dot or space
        return NAME_RULE
    if name.split(".")[0].rstrip(" ").upper() in WINDOWS_RESERVED:
        return "it is a reserved device name on Windows; pick another name"
    return None


def check_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else name
    problem = name_problem(name)
    if problem is not None:
        raise ProfileError(f"MagCache: profile name {show(name)} cannot be used: {problem}")
    return name


def profile_path(directory, name: str) -> Path:
    return Path(directory) / f"{check_name(name)}.json"


def list_profiles(directory) -> list[str]:
    """Names of the profiles in `directory` (file names only: nothing is parsed here). A file whose
    name is not a usable profile name is not listed, so every listed name opens its own file."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json") if name_problem(p.stem) is None and p.is_file())


def fingerprint(path) -> tuple:
    """What changes when the profile file is edited, replaced or removed (for the node's cache key)."""
    try:
        st = os.stat(path)
    except OSError:
        return ("missing",)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def remove_stale_temporaries(directory, now: Optional[float] = None) -> list[Path]:
    """Remove the hidden temporary files (.<name>.<random>.tmp) of writes that never finished (a
    process killed before the rename) once they are older than STALE_SECONDS. Returns those removed."""
    now = time.time() if now is None else now
    removed = []
    for p in Path(directory).glob(".*.tmp"):
        try:
            if p.is_file() and not p.is_symlink() and now - p.stat().st_mtime > STALE_SECONDS:
                p.unlink()
                removed.append(p)
        except OSError:
            pass  # another process removed it, or it cannot be: the next save tries again
    return removed


def write_atomic(path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder renamed over it: readers
    never see half a file, and a symlink at `path` is replaced by the file, not followed. Stale
    temporary files of earlier writes are removed first. An error (full disk, no permission) names the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from e
        raise
    return path


def touch(path) -> None:
    """Record that the profile at `path` was used (its access time; the modification time, which the
    node's cache key reads, is kept). For keeping the most recently used automatic profiles."""
    try:
        st = os.stat(path)
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError:
        pass  # a read-only folder: the profile still works, it only ages


def prune(directory, prefixes, keep: int = KEEP_AUTO) -> list[str]:
    """Keep the `keep` most recently used profiles whose names start with one of `prefixes` (one
    model's automatic profiles), remove the older ones with their plots. Returns the names removed."""
    found = []
    for p in Path(directory).glob("*.json"):
        if p.stem.startswith(tuple(prefixes)) and not p.is_symlink():
            try:
                st = p.stat()
            except OSError:
                continue
            found.append((max(st.st_atime_ns, st.st_mtime_ns), p))
    found.sort(key=lambda item: (item[0], item[1].name), reverse=True)
    removed = []
    for _, p in found[keep:]:
        try:
            p.unlink()
            p.with_suffix(".png").unlink(missing_ok=True)
            removed.append(p.stem)
        except OSError:
            pass
    return removed


def save_profile(directory, name: str, result: CalibrationResult, meta: dict[str, Any]) -> Path:
    """Write the profile atomically; a profile larger than MAX_BYTES (it could not be read back) is refused."""
    path = profile_path(directory, name)
    data = {"format": FORMAT, "version": VERSION, "name": name, **meta, "steps": result.steps,
            "cfg_interleaved": result.cfg, "ratios": result.table(), "std": result.table(result.std),
            "cos_dis": result.table(result.cos_dis)}
    text = (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")
    if len(text) > MAX_BYTES:
        raise ProfileError(f"MagCache profile '{name}' was not saved: {result.steps} steps make {len(text)} bytes, "
                           f"more than the {MAX_BYTES} byte limit for profiles; calibrate with fewer steps")
    return write_atomic(path, text)


class _TooLong(ValueError):
    pass


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_DIGITS:
        raise _TooLong(f"it holds a number with {len(digits.lstrip('-'))} digits")
    return int(digits)


def _reject_constant(name):
    raise ValueError(f"{name} is not allowed")


def _fail(path: Path, problem: str):
    raise ProfileError(f"MagCache profile '{clip(path.name)}' cannot be used: {problem}. "
                       f"Fix or delete the file, or calibrate again.\nfile: {clip(str(path), 300)}")


def _read(path: Path) -> Any:
    try:
        st = os.stat(path)
    except OSError as e:
        _fail(path, f"it cannot be read ({e.strerror or type(e).__name__})")
    if not stat.S_ISREG(st.st_mode):
        _fail(path, "it is not a regular file")
    if st.st_size > MAX_BYTES:
        _fail(path, f"it has {st.st_size} bytes, more than the {MAX_BYTES} byte limit for profiles")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        _fail(path, f"it cannot be read ({e.strerror or type(e).__name__})")
    if len(raw) > MAX_BYTES:
        _fail(path, f"it has more than the {MAX_BYTES} byte limit for profiles")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        _fail(path, f"it is not UTF-8 text (invalid byte at position {e.start})")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except RecursionError:
        _fail(path, "it is nested too deeply to be a profile")
    except _TooLong as e:
        _fail(path, str(e))
    except ValueError as e:
        _fail(path, f"not valid JSON ({clip(str(e))})")


# Optional fields and their types: a profile with one of another type is refused (a bad profile).
OPTIONAL = {"name": (str,), "model_class": (str,), "reference": (str, None), "sampler": (str, None),
            "scheduler": (str, None), "created": (str,), "comfyui_version": (str,), "self_calibration": (dict,),
            "offset": (int,), "total": (int,)}
SELF_CALIBRATION = {"fingerprint": (str,), "curve": (str,), "cfg": (bool,), "edit": (bool,), "forced": (bool,)}


def _is(value, kinds) -> bool:
    if value is None:
        return None in kinds
    if isinstance(value, bool):
        return bool in kinds
    return any(k is not None and k is not bool and isinstance(value, k) for k in kinds)


def _kinds(kinds) -> str:
    words = {str: "text", int: "a whole number", bool: "true or false", dict: "an object", None: "null"}
    return " or ".join(words[k] for k in kinds)


def load_profile(path) -> tuple[Preset, dict[str, Any]]:
    """(the profile's table as a Preset, its metadata). Raises ProfileError naming the file."""
    path = Path(path)
    data = _read(path)
    if not isinstance(data, dict):
        _fail(path, f"expected a JSON object, got {show(data, SHOWN)}")
    for key in ("format", "family", "steps", "cfg_interleaved", "ratios"):
        if key not in data:
            _fail(path, f"missing field '{key}'")
    if data["format"] != FORMAT:
        _fail(path, f"'format' is {show(data['format'], SHOWN)}, expected {FORMAT!r}")
    version = data.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _fail(path, f"'version' must be a whole number >= 1, got {show(version, SHOWN)}")
    if version > VERSION:
        _fail(path, f"it is format version {version}, written by a newer MagCache (this one reads {VERSION})")
    if not isinstance(data["family"], str) or not data["family"]:
        _fail(path, f"'family' must be a model family name, got {show(data['family'], SHOWN)}")
    steps, cfg, ratios = data["steps"], data["cfg_interleaved"], data["ratios"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        _fail(path, f"'steps' must be a whole number >= 1, got {show(steps, SHOWN)}")
    if not isinstance(cfg, bool):
        _fail(path, f"'cfg_interleaved' must be true or false, got {show(cfg, SHOWN)}")
    if not isinstance(ratios, list):
        _fail(path, f"'ratios' must be a list of numbers, got {show(ratios, SHOWN)}")
    for i, v in enumerate(ratios):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            _fail(path, f"ratios[{i}] must be a finite positive number, got {show(v, SHOWN)}")
    expected = steps * (2 if cfg else 1)
    if len(ratios) != expected:
        layout = "cond and uncond per step" if cfg else "one per step"
        _fail(path, f"{len(ratios)} ratios for {steps} steps, expected {expected} ({layout})")
    for key, kinds in OPTIONAL.items():
        if key in data and not _is(data[key], kinds):
            _fail(path, f"'{key}' must be {_kinds(kinds)}, got {show(data[key], SHOWN)}")
    auto = data.get("self_calibration")
    if auto is not None:  # the fingerprint is required; older profiles may lack the other fields
        for key, kinds in SELF_CALIBRATION.items():
            if (key in auto or key == "fingerprint") and not _is(auto.get(key), kinds):
                _fail(path, f"'self_calibration.{key}' must be {_kinds(kinds)}, got {show(auto.get(key), SHOWN)}")
    offset, total = data.get("offset", 0), data.get("total", steps)
    if offset < 0 or total < offset + steps:
        _fail(path, f"'offset' {offset} and 'total' {total} do not hold its {steps} steps")
    preset = Preset(name=f"profile:{path.stem}", steps=steps, cfg_interleaved=cfg, ratios=tuple(float(v) for v in ratios))
    meta = {k: v for k, v in data.items() if k not in ("ratios", "std", "cos_dis")}
    return preset, meta
