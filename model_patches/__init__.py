"""Model families MagCache supports: one spec module each, plus the registry and model_type resolution.

To add a family: write `model_patches/<family>.py` with a `SPEC = FamilySpec(...)` and list it in
FAMILY_MODULES below."""
from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Optional

from ..magcache import builtin_presets
from . import chroma, flux, hunyuan_video, qwen_image, wan, wan_vace
from .spec import BlockGroup, FamilySpec

log = logging.getLogger("MagCache")

FAMILY_MODULES = (flux, chroma, hunyuan_video, wan, wan_vace, qwen_image)
ALL_SPECS: tuple[FamilySpec, ...] = tuple(m.SPEC for m in FAMILY_MODULES)

# The original pack's model_type choices, kept so its saved workflows load.
ORIGINAL_MODEL_TYPES = (
    "flux", "flux_kontext", "chroma", "qwen_image", "hunyuan_video", "hunyuan_video1.5",
    "wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B",
    "wan2.1_vace_1.3B", "wan2.1_vace_14B",
)
# Presets this pack adds, in the order they were introduced: new ones are appended, never inserted.
ADDED_MODEL_TYPES = (
    "hunyuan_video1.5_40steps", "wan2.2_t2v_14B", "wan2.2_i2v_14B", "wan2.2_ti2v_5B",
    "qwen_image_edit", "qwen_image_50steps", "flux_kontext_28steps", "hunyuan_video_544p", "wan2.2_ti2v_5B_i2v",
)
MODEL_TYPES = ("auto",) + ORIGINAL_MODEL_TYPES + ADDED_MODEL_TYPES


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
    may run other code between blocks, so they are not assumed to work."""
    specs = available_specs() if specs is None else specs
    name = _class_path(type(diffusion_model))
    return next((s for s in specs if name in s.model_classes), None)


def _supported(specs) -> str:
    return "; ".join(f"{s.name} ({', '.join(s.model_classes)}: {', '.join(s.presets)})" for s in specs) or "none"


def resolve(model_type: str, diffusion_model, specs=None) -> tuple[FamilySpec, Optional[str]]:
    """(spec, preset) for a node's model_type on this model; preset None means 'auto' per call.

    Raises UnsupportedModel naming the model class and the supported families, or the presets
    valid for the loaded model."""
    specs = available_specs() if specs is None else specs
    found = spec_for_model(diffusion_model, specs)
    name = _class_path(type(diffusion_model))
    if found is None:
        raise UnsupportedModel(
            f"MagCache does not support this model ({name}). Supported families: {_supported(specs)}")
    if model_type == "auto":
        return found, None
    if model_type not in found.presets:
        if model_type not in builtin_presets() and not any(model_type in s.presets for s in ALL_SPECS):
            problem = f"unknown model_type '{model_type}'"
        else:
            problem = f"model_type '{model_type}' does not match the loaded model ({name})"
        raise UnsupportedModel(f"MagCache: {problem}; for this model use 'auto' or one of: "
                               f"{', '.join(found.presets)}")
    return found, model_type


__all__ = ["ADDED_MODEL_TYPES", "ALL_SPECS", "MODEL_TYPES", "ORIGINAL_MODEL_TYPES", "BlockGroup", "FamilySpec",
           "UnsupportedModel", "available_specs", "resolve", "spec_for_model"]
