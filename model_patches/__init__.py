"""Model families MagCache supports: one spec module each, plus the registry and model_type resolution.

To add a family: write `model_patches/<family>.py` with a `SPEC = FamilySpec(...)`. Every module of
this package that defines SPEC is a family (found here, in name order); nothing else is edited."""
from __future__ import annotations

import importlib
import logging
import pkgutil
from functools import lru_cache
from typing import Optional

from ..magcache import builtin_presets
from ..magcache.text import clip, show
from .spec import BlockGroup, Example, FamilySpec, Fixture

log = logging.getLogger("MagCache")

FAMILY_MODULES = tuple(m for m in (importlib.import_module(f"{__name__}.{info.name}")
                                    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name))
                       if isinstance(getattr(m, "SPEC", None), FamilySpec))
ALL_SPECS: tuple[FamilySpec, ...] = tuple(m.SPEC for m in FAMILY_MODULES)
# Every family's tiny instances by name: what the tests and the benchmark sample.
FIXTURES: dict[str, tuple[FamilySpec, Fixture]] = {f.name: (s, f) for s in ALL_SPECS for f in s.fixtures}
# Every example workflow a family ships, by file name.
EXAMPLES: dict[str, tuple[FamilySpec, Example]] = {e.file: (s, e) for s in ALL_SPECS for e in s.examples}

# The original pack's model_type choices, kept so its saved workflows load.
ORIGINAL_MODEL_TYPES = (
    "flux", "flux_kontext", "chroma", "qwen_image", "hunyuan_video", "hunyuan_video1.5",
    "wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B",
    "wan2.1_vace_1.3B", "wan2.1_vace_14B",
)
# Our presets after them, in the data file's order (new tables are appended there).
ADDED_MODEL_TYPES = tuple(p for p in builtin_presets() if p not in ORIGINAL_MODEL_TYPES
                          and any(p in spec.presets for spec in ALL_SPECS))
# 'auto' on a family without a table self-calibrates; 'auto_calibrate' asks for that on any family.
AUTO_CALIBRATE = "auto_calibrate"
MODEL_TYPES = ("auto",) + ORIGINAL_MODEL_TYPES + ADDED_MODEL_TYPES + (AUTO_CALIBRATE,)
# The MagCache node's settings_from (ours, after the original's inputs): 'auto' takes thresh / retention / K from
# the evidence rule (magcache.evidence) on a self-calibrated profile, the inputs elsewhere; 'inputs' always the inputs.
SETTINGS_FROM = ("auto", "inputs")


class UnsupportedModel(ValueError):
    """The model or the chosen model_type cannot be used; the message says what can."""


def _class_exists(path: str) -> bool:
    module, _, name = path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except Exception:  # any import failure of that ComfyUI module disables the family only
        return False


@lru_cache(maxsize=None)
def available_specs(specs: tuple[FamilySpec, ...] = ALL_SPECS) -> tuple[FamilySpec, ...]:
    """The families whose model class exists in the running ComfyUI; others are logged and left out."""
    out = []
    for spec in specs:
        missing = [c for c in spec.model_classes if not _class_exists(c)]
        if not missing:
            out.append(spec)
        else:
            log.warning("MagCache: %s support disabled: %s is not in this ComfyUI", spec.name, ", ".join(missing))
    return tuple(out)


def _class_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def spec_for_model(diffusion_model, specs=None) -> Optional[FamilySpec]:
    """The family of a diffusion model, by its exact class: subclasses (Wan S2V, Chroma Radiance, ...)
    may run other code between blocks, so they are not assumed to work. Where one class holds several
    families (Flux.1 / Flux.2), each spec's `accepts` says which instances are its own."""
    specs = available_specs() if specs is None else specs
    name = _class_path(type(diffusion_model))
    return next((s for s in specs if name in s.model_classes and s.takes(diffusion_model)), None)


def unsupported_reason(diffusion_model, specs=None) -> str:
    """Why MagCache cannot use this model, in a few words a user understands."""
    cls = type(diffusion_model)
    for base in cls.__mro__[1:]:
        family = next((s for s in (specs or ALL_SPECS) if _class_path(base) in s.model_classes), None)
        if family is not None:
            return f"it is {clip(cls.__name__, 60)}, a variant of {family.name} with its own code between blocks"
    if "unet" in cls.__name__.lower() or "openaimodel" in cls.__module__:
        return "this is a UNet; MagCache works on diffusion transformers"
    return f"there is no MagCache support for {clip(cls.__name__, 60)} models"


def unsupported_message(diffusion_model, specs) -> str:
    return (f"MagCache cannot accelerate this model: {unsupported_reason(diffusion_model, specs)}. "
            "Bypass the MagCache node for it.\n"
            f"Supported families: {', '.join(s.name for s in specs) or 'none in this ComfyUI'}.\n"
            f"Loaded model class: {clip(_class_path(type(diffusion_model)), 200)}")


def resolve(model_type: str, diffusion_model, specs=None) -> tuple[FamilySpec, Optional[str]]:
    """(spec, preset) for a node's model_type on this model; preset None means 'auto' per call.

    Raises UnsupportedModel saying why the model cannot be used (first line) with the supported
    families and the model class after it, or naming the presets valid for the loaded model."""
    specs = available_specs() if specs is None else specs
    found = spec_for_model(diffusion_model, specs)
    name = _class_path(type(diffusion_model))
    if found is None:
        raise UnsupportedModel(unsupported_message(diffusion_model, specs))
    if model_type in ("auto", AUTO_CALIBRATE):
        return found, None
    if model_type not in found.presets:
        if model_type not in builtin_presets() and not any(model_type in s.presets for s in ALL_SPECS):
            problem = f"unknown model_type {show(model_type)}"
        else:
            problem = f"model_type {show(model_type)} does not match the loaded model ({name})"
        choices = (f"'auto' or one of: {', '.join(found.presets)} ('{AUTO_CALIBRATE}' measures this model itself)"
                   if found.presets else
                   f"'auto' ({found.name} has no published table: 'auto' calibrates it on its first run)")
        raise UnsupportedModel(f"MagCache: {problem}; for this model use {choices}")
    return found, model_type


__all__ = ["ADDED_MODEL_TYPES", "AUTO_CALIBRATE", "ALL_SPECS", "EXAMPLES", "FIXTURES", "Example", "MODEL_TYPES",
           "ORIGINAL_MODEL_TYPES", "SETTINGS_FROM", "BlockGroup",
           "FamilySpec", "Fixture", "UnsupportedModel", "available_specs", "resolve", "spec_for_model",
           "unsupported_message"]
