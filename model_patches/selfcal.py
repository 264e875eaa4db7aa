"""Self-calibration: 'auto' on a family without a published table (Flux.2, Lumina 2 / Z-Image), or
model_type 'auto_calibrate' on any family (fine-tunes, merges, distillations).

Once per sampling run (in the OUTER_SAMPLE wrapper) the run is keyed by the model (family + a cheap
fingerprint of its config and weights) and its shape (sampler, the sigma curve, CFG or not, reference
latents or not: profile_keys); a saved profile of that key is used (interpolated to the run's step count, like any table). Without one, the
run computes every step (its output is that of no MagCache), measures the ratios through the
calibration path (Calibration + CalibrationHandle + profile_writer) and saves them as that profile.
Nothing is kept on the shared model: the key is computed again each run."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..magcache import Preset, ProfileError, load_profile
from ..magcache.profiles import profile_path, touch
from .calibrate import profile_writer
from .handle import CalibrationHandle, unwrap
from .profile_keys import Curve, identify, model_fingerprint, model_prefix, profile_name
from .spec import FamilySpec

log = logging.getLogger("MagCache")

# What a calibrating call reads as its table when the family has none: never consulted for a
# decision (the run's threshold is 0, nothing is skipped), it only fills the slot.
MEASURING = Preset(name="self-calibration", steps=1, cfg_interleaved=False, ratios=(1.0,))


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


REFERENCE_KEY = "reference_latents"  # ComfyUI's conditioning key for reference images (ReferenceLatent node)


def is_edit(guider) -> bool:
    """Whether the run's conditioning carries reference latents (an edit: Flux.2 or Kontext edit,
    Qwen-Image-Edit, Z-Image Omni). Their tokens join the stream the blocks carry and are part of the
    cached residual, so the ratios an edit run measures are not a text-to-image run's."""
    conds = getattr(guider, "conds", None) or getattr(guider, "original_conds", None) or {}
    return any(isinstance(c, dict) and c.get(REFERENCE_KEY) is not None
               for entries in conds.values() for c in (entries or ()))


def plan(spec: FamilySpec, request: SelfCalibration, guider, args, kwargs, model_sampling) -> Plan:
    """Once per run: the saved profile for this model and run shape, or a handle that measures and
    saves it. A profile that cannot be read (or is of another model or curve) is measured again and replaced."""
    patcher = guider.model_patcher
    fingerprint = model_fingerprint(patcher, unwrap(patcher.get_model_object("diffusion_model")))
    sigmas = sigmas_of(args, kwargs)
    sampler = sampler_name(args, kwargs)
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas or [])
    curve = identify(model_sampling, values, getattr(model_sampling, "sigmas", None))
    return plan_for(spec, request, fingerprint, sampler, curve, uses_cfg(guider), is_edit(guider))


def plan_for(spec: FamilySpec, request: SelfCalibration, fingerprint: str, sampler: str, curve: Curve, cfg: bool,
             edit: bool = False) -> Plan:
    """plan() once the run's key is known (also for FramePack, whose sampler is not ComfyUI's)."""
    name = profile_name(spec, fingerprint, sampler, curve, cfg, edit)
    path = profile_path(request.directory, name)
    if path.is_file():
        try:
            preset, meta = load_profile(path)
            auto = meta.get("self_calibration") or {}
            if (meta.get("family") == spec.name and auto.get("fingerprint") == fingerprint
                    and auto.get("curve") == curve.key and auto.get("edit", False) == edit):
                touch(path)
                return Plan(name, preset=in_schedule(preset, meta))
            log.warning("MagCache: profile '%s' is not of this model and run; it is measured again", name)
        except ProfileError as e:
            log.warning("MagCache: %s; it is measured again", str(e).splitlines()[0])
    extra = {"scheduler": curve.scheduler,
             "self_calibration": {"fingerprint": fingerprint, "curve": curve.key, "curve_from": curve.how or "sigmas",
                                  "cfg": cfg, "edit": edit, "forced": request.forced}}
    writer = profile_writer(spec, None, request.directory, name, extra=extra,
                            keep=(model_prefix(spec, fingerprint), model_prefix(spec, fingerprint, short=True)))
    return Plan(name, handle=CalibrationHandle(spec, None, writer))


def in_schedule(preset: Preset, meta: dict) -> Preset:
    """A profile measured on a piece of a schedule (steps offset.. of `total`, a partial denoise) as a
    table of the whole schedule, which is how the engine indexes it (global steps). The steps outside
    the piece were never measured and are never decided on by a run on this curve; they hold 1.0 (no
    error), which is all the engine's replay of the steps before a partial run then sees: the run
    starts as a fresh one would. Ours."""
    offset, total = meta.get("offset", 0), meta.get("total", preset.steps)
    if offset == 0 and total == preset.steps:
        return preset
    per_step = 2 if preset.cfg_interleaved else 1
    ratios = ((1.0,) * (offset * per_step) + preset.ratios
              + (1.0,) * ((total - offset - preset.steps) * per_step))
    return Preset(name=preset.name, steps=total, cfg_interleaved=preset.cfg_interleaved, ratios=ratios)
