"""What names a self-calibration profile: the model (a fingerprint of its weights and patches) and the
run's shape (sampler, the sigma curve it actually used, CFG or not, edit or not).

The sigma curve is keyed by a short hash, so runs on different curves never share ratios even when
no scheduler name describes them (samplers that drop the second-to-last sigma, partial denoise,
custom sigmas); the scheduler's name, when ComfyUI's schedulers recognise the curve, stays readable in
the profile's name. A whole schedule of a recognised scheduler is keyed step-count free (the curve at
a fixed reference step count), so another step count interpolates the same profile; anything else is
keyed by its exact sigmas (rounded), so it gets its own profile per step count. (Ours.)"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Optional

import torch

from .spec import FamilySpec

PER_TENSOR = 16  # values read from every tensor, evenly strided over it (ours)
DIGITS = 4  # digits of the sigmas in the curve hash: stable across processes and versions (ours)
REFERENCE_STEPS = 16  # step count at which a recognised scheduler's curve is hashed (step-count free keys)
SEARCH = 2  # schedule lengths tried either side of the estimate when recognising a piece of a schedule


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


# -- the sigma curve -------------------------------------------------------------------------------

def curve_hash(values, tag: str = "") -> str:
    """8 hex digits of the normalised sigmas: the start to DIGITS significant digits, then every sigma
    as a fraction of the start to DIGITS decimals (so float noise near 0 does not count)."""
    values = [float(v) for v in values]
    start = values[0] if values and values[0] > 0 else 1.0
    text = f"{tag}|{start:.{DIGITS - 1}e}|" + ",".join(f"{v / start:.{DIGITS}f}" for v in values)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Curve:
    """The run's sigma curve: `scheduler` the recognised name (or 'custom'), `key` its 8-hex hash, `how`
    what was recognised: 'whole' (the scheduler's full schedule), 'dropped' (the same with the
    second-to-last sigma dropped, as dpm_2 / uni_pc sample), 'piece' (a partial denoise of it), or ''."""

    scheduler: str
    key: str
    how: str = ""


def _sigmas(model_sampling, name: str, steps: int, dropped: bool) -> Optional[torch.Tensor]:
    import comfy.samplers

    try:
        got = comfy.samplers.calculate_sigmas(model_sampling, name, steps + (1 if dropped else 0)).float().cpu()
    except Exception:
        return None
    if dropped:
        got = torch.cat((got[:-2], got[-1:]))
    return got


def _close(got, target) -> bool:
    return got is not None and got.shape == target.shape and torch.allclose(got, target, rtol=1e-4, atol=1e-6)


def identify(model_sampling, values, model_sigmas=None) -> Curve:
    """The curve of `values` (the run's sigmas, a list of floats) as ComfyUI's schedulers make it."""
    import comfy.samplers

    from ..magcache import Schedule

    exact = curve_hash(values)
    if len(values) < 2:
        return Curve("custom", exact)
    target = torch.tensor(values, dtype=torch.float32)
    steps = len(values) - 1
    names = list(comfy.samplers.SCHEDULER_NAMES)
    for dropped in (False, True):
        for name in names:
            if _close(_sigmas(model_sampling, name, steps, dropped), target):
                ref = _sigmas(model_sampling, name, REFERENCE_STEPS, dropped)
                how = "dropped" if dropped else "whole"
                return Curve(name, curve_hash(ref.tolist(), f"{name} {how}") if ref is not None else exact, how)
    try:  # a piece of a longer schedule (denoise < 1): which scheduler, for the name; the key stays exact
        placed = Schedule.from_values(values, model_sigmas) if model_sigmas is not None else None
    except ValueError:
        placed = None
    if placed is None or (placed.offset == 0 and placed.total == steps) or placed.total > 10 * steps:
        return Curve("custom", exact)  # not a piece (custom sigmas), or of a denoise under 0.1: not searched
    total = placed.total
    for n in sorted(range(max(steps + 1, total - SEARCH), total + SEARCH + 1), key=lambda n: abs(n - total)):
        for dropped in (False, True):
            for name in names:
                got = _sigmas(model_sampling, name, n, dropped)
                if got is not None and len(got) > steps + 1 and _close(got[-(steps + 1):], target):
                    return Curve(name, exact, "piece")
    return Curve("custom", exact)


# -- the model -------------------------------------------------------------------------------------

def _picks(t: torch.Tensor) -> Optional[torch.Tensor]:
    """PER_TENSOR values evenly strided over `t` (the first included), a view in its dtype on its device."""
    n = t.numel()
    if t.is_meta or n == 0:
        return None
    count, stride = min(n, PER_TENSOR), max(1, n // PER_TENSOR)
    if t.is_contiguous():
        return t.as_strided((count,), (stride,))  # one cheap view: the cost is per tensor, not per value
    return t.reshape(-1)[::stride][:count]


def model_fingerprint(patcher, diffusion_model) -> str:
    """12 hex digits from the unet config, the name, shape and dtype of every tensor of the model's
    state dict and PER_TENSOR values strided over each (the originals where this patcher holds a
    backup), and this patcher's weight patches (keys, strengths and values of each patch). One view per
    tensor and one host copy per device and dtype; stable across processes (the bytes of float32 values).
    About 20 ms for 1,000 tensors, under 1 ms for the tiny models (scripts/profile_checks.py, CPU)."""
    h = hashlib.sha256()
    config = getattr(getattr(patcher.model, "model_config", None), "unet_config", None) or {}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    backup = getattr(patcher, "backup", None) or {}
    parts: dict = {}  # (device, dtype) -> slices, read back in one copy each
    with torch.no_grad():
        for name, t in diffusion_model.state_dict().items():
            original = backup.get(f"diffusion_model.{name}")
            t = getattr(original, "weight", None) if original is not None else t
            if not isinstance(t, torch.Tensor):
                continue
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            _add(parts, name, t)
        patches = getattr(patcher, "patches", None) or {}
        for key in sorted(patches, key=str):
            h.update(str(key).encode())
            for i, entry in enumerate(patches[key]):
                h.update(repr([v for v in entry if isinstance(v, (int, float, str))]).encode())
                patch = entry[1] if len(entry) > 1 else None
                weights = getattr(patch, "weights", patch)
                for j, w in enumerate(weights if isinstance(weights, (tuple, list)) else (weights,)):
                    if isinstance(w, torch.Tensor):
                        _add(parts, f"{key}/{i}/{j}", w)
        for group in sorted(parts, key=str):
            names, values = zip(*parts[group])
            h.update("".join(names).encode())
            try:
                picked = torch.cat(values).float()
            except (RuntimeError, TypeError):  # dtypes torch cannot concatenate or convert here: their bytes
                picked = torch.cat([v.contiguous().view(torch.uint8) for v in values])
            h.update(picked.cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def _add(parts: dict, name: str, t: torch.Tensor) -> None:
    try:
        picked = _picks(t)
    except Exception:  # quantized or otherwise unreadable tensors: their name, shape and dtype still count
        return
    if picked is not None:
        parts.setdefault((str(picked.device), str(picked.dtype)), []).append((name, picked))


# -- the name --------------------------------------------------------------------------------------

def model_prefix(spec: FamilySpec, fingerprint: str, short: bool = False) -> str:
    """The start every automatic profile name of this model has ('auto <family> <fingerprint> ')."""
    family = slug(spec.name)[:30] if short else slug(spec.name)
    return f"auto {family} {fingerprint} "


def profile_name(spec: FamilySpec, fingerprint: str, sampler: str, curve: Curve, cfg: bool,
                 edit: bool = False) -> str:
    """'auto <family> <fingerprint> <sampler> <scheduler> <curve> <cfg|nocfg>[ edit]' (' edit' for runs
    with reference latents). Within the profile name rule (80 chars)."""
    tail = f"{slug(sampler)} {slug(curve.scheduler)} {curve.key} {'cfg' if cfg else 'nocfg'}{' edit' if edit else ''}"
    name = model_prefix(spec, fingerprint) + tail
    if len(name) > 80:
        name = model_prefix(spec, fingerprint, short=True) + hashlib.sha256(tail.encode()).hexdigest()[:12]
    return name
