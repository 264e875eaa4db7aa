"""Self-calibration: 'auto' on a family without a published table (Flux.2, Lumina 2 / Z-Image), or
model_type 'auto_calibrate' on any family (fine-tunes, merges, distillations).

Once per sampling run (in the OUTER_SAMPLE wrapper) the run is keyed by the model (family + a cheap
fingerprint of its config and weights) and its shape (sampler, scheduler, CFG or not, reference latents
or not); a saved profile of that key is used (interpolated to the run's step count, like any table). Without one, the
run computes every step (its output is that of no MagCache), measures the ratios through the
calibration path (Calibration + CalibrationHandle + profile_writer) and saves them as that profile.
Nothing is kept on the shared model: the key is computed again each run."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Optional

import torch

from ..magcache import Preset, ProfileError, load_profile
from ..magcache.profiles import profile_path
from .calibrate import profile_writer, scheduler_name
from .handle import CalibrationHandle, unwrap
from .spec import FamilySpec

log = logging.getLogger("MagCache")

# What a calibrating call reads as its table when the family has none: never consulted for a
# decision (the run's threshold is 0, nothing is skipped), it only fills the slot.
MEASURING = Preset(name="self-calibration", steps=1, cfg_interleaved=False, ratios=(1.0,))
SLICE = 32  # values read from each end of each sampled weight tensor
SAMPLED = 7  # weight tensors sampled, spread over the model


@dataclass(frozen=True)
class SelfCalibration:
    """What the node asks for: self-calibrate, with profiles in `directory`. forced: model_type
    'auto_calibrate' (the family has tables, the user wants this model measured instead)."""

    directory: str
    forced: bool = False

    def __deepcopy__(self, memo):
        return self


@dataclass
class Plan:
    """The run's part in self-calibration: `preset` when a profile exists, else `handle` to measure."""

    name: str
    preset: Optional[Preset] = None
    handle: object = None


def _tensor_bits(t) -> bytes:
    try:
        flat = t.detach().reshape(-1)
        part = torch.cat((flat[:SLICE], flat[-SLICE:])) if flat.numel() > 2 * SLICE else flat
        return part.float().cpu().numpy().tobytes()
    except Exception:  # quantized or meta tensors: their shape and dtype still count
        return b""


def model_fingerprint(patcher, diffusion_model) -> str:
    """12 hex digits from the unet config, a few small slices of a few weight tensors (the originals
    where this patcher holds a backup) and this patcher's weight patches (LoRA keys, strengths and
    a slice of each patch). Cheap: about 7 x 64 values read, once per run."""
    h = hashlib.sha256()
    config = getattr(getattr(patcher.model, "model_config", None), "unet_config", None) or {}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    params = list(diffusion_model.named_parameters())
    n = len(params)
    picks = sorted({0, 1, n // 3, n // 2, (2 * n) // 3, n - 2, n - 1} & set(range(n)))[:SAMPLED]
    backup = getattr(patcher, "backup", None) or {}
    for i in picks:
        name, p = params[i]
        original = backup.get(f"diffusion_model.{name}")
        t = getattr(original, "weight", None) if original is not None else p
        t = p if t is None else t
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        h.update(_tensor_bits(t))
    for key in sorted(getattr(patcher, "patches", None) or {}):
        h.update(str(key).encode())
        for entry in patcher.patches[key]:
            h.update(repr([v for v in entry if isinstance(v, (int, float, str))]).encode())
            patch = entry[1] if len(entry) > 1 else None
            weights = getattr(patch, "weights", patch)
            first = next((w for w in (weights if isinstance(weights, (tuple, list)) else (weights,))
                          if isinstance(w, torch.Tensor)), None)
            if first is not None:
                h.update(_tensor_bits(first))
    return h.hexdigest()[:12]


def sampler_name(args, kwargs) -> str:
    sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
    fn = getattr(sampler, "sampler_function", None)
    return getattr(fn, "__name__", type(sampler).__name__).removeprefix("sample_")


def sigmas_of(args, kwargs):
    return args[3] if len(args) > 3 else kwargs.get("sigmas")


def uses_cfg(guider) -> bool:
    """Whether the run evaluates an uncond branch: ComfyUI skips it at cfg 1 (guiders without a cfg:
    cond only)."""
    cfg = getattr(guider, "cfg", 1.0)
    try:
        return not math.isclose(float(cfg), 1.0)
    except (TypeError, ValueError):
        return True


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


REFERENCE_KEY = "reference_latents"  # ComfyUI's conditioning key for reference images (ReferenceLatent node)


def is_edit(guider) -> bool:
    """Whether the run's conditioning carries reference latents (an edit: Flux.2 or Kontext edit,
    Qwen-Image-Edit, Z-Image Omni). Their tokens join the stream the blocks carry and are part of the
    cached residual, so the ratios an edit run measures are not a text-to-image run's."""
    conds = getattr(guider, "conds", None) or getattr(guider, "original_conds", None) or {}
    return any(isinstance(c, dict) and c.get(REFERENCE_KEY) is not None
               for entries in conds.values() for c in (entries or ()))


def profile_name(spec: FamilySpec, fingerprint: str, sampler: str, scheduler: str, cfg: bool, edit: bool = False) -> str:
    """The profile's name: 'auto <family> <fingerprint> <sampler> <scheduler> <cfg|nocfg>[ edit]' (no step
    count: another step count interpolates the same profile; ' edit' for runs with reference latents).
    Within the profile name rule (80 chars)."""
    tail = f"{slug(sampler)} {slug(scheduler)} {'cfg' if cfg else 'nocfg'}{' edit' if edit else ''}"
    name = f"auto {slug(spec.name)} {fingerprint} {tail}"
    if len(name) > 80:
        name = f"auto {slug(spec.name)[:30]} {fingerprint} {hashlib.sha256(tail.encode()).hexdigest()[:12]}"
    return name


def plan(spec: FamilySpec, request: SelfCalibration, guider, args, kwargs, model_sampling) -> Plan:
    """Once per run: the saved profile for this model and run shape, or a handle that measures and
    saves it. A profile that cannot be read (or is of another model) is measured again and replaced."""
    patcher = guider.model_patcher
    fingerprint = model_fingerprint(patcher, unwrap(patcher.get_model_object("diffusion_model")))
    sigmas = sigmas_of(args, kwargs)
    sampler = sampler_name(args, kwargs)
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas or [])
    scheduler = scheduler_name(model_sampling, values) if len(values) > 1 else "custom"
    cfg = uses_cfg(guider)
    edit = is_edit(guider)
    name = profile_name(spec, fingerprint, sampler, scheduler, cfg, edit)
    path = profile_path(request.directory, name)
    if path.is_file():
        try:
            preset, meta = load_profile(path)
            auto = meta.get("self_calibration") or {}
            if (meta.get("family") == spec.name and auto.get("fingerprint") == fingerprint
                    and bool(auto.get("edit", False)) == edit):
                return Plan(name, preset=preset)
            log.warning("MagCache: profile '%s' is not of this model; it is measured again", name)
        except ProfileError as e:
            log.warning("MagCache: %s; it is measured again", str(e).splitlines()[0])
    extra = {"self_calibration": {"fingerprint": fingerprint, "cfg": cfg, "edit": edit, "forced": request.forced}}
    writer = profile_writer(spec, None, request.directory, name, extra=extra)
    return Plan(name, handle=CalibrationHandle(spec, None, writer))
