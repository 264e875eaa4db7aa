"""What a finished calibration run leaves behind: the profile (with where and how it was measured)
and its plot, and the text the node shows. ComfyUI is asked only for what it alone knows (the
scheduler that made the run's sigmas, its version)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional

import torch

from ..magcache import MagCacheConfig, get_preset, save_profile
from ..magcache.plot import plot_calibration, save_png
from ..magcache.text import clip
from .spec import FamilySpec

log = logging.getLogger("MagCache")


def comfyui_version() -> str:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except Exception:
        return "unknown"


def scheduler_name(model_sampling, sigmas) -> str:
    """Which ComfyUI scheduler made `sigmas` (for the profile's record), or 'custom'."""
    import comfy.samplers

    target = torch.tensor(sigmas, dtype=torch.float32)
    for name in comfy.samplers.SCHEDULER_NAMES:
        try:
            got = comfy.samplers.calculate_sigmas(model_sampling, name, len(sigmas) - 1).float().cpu()
        except Exception:
            continue
        if got.shape == target.shape and torch.allclose(got, target, rtol=1e-4, atol=1e-6):
            return name
    return "custom"


def profile_writer(spec: FamilySpec, reference: Optional[str], directory: str, name: str,
                   extra: Optional[dict] = None):
    """The calibration handle's on_result: saves profile `name` in `directory` and its plot beside it;
    returns what the node shows. A failed save raises (the engine reports it on the node).
    extra: further metadata; with "self_calibration" the message says the run was a self-calibration."""

    def on_result(result, run_info) -> dict:
        table = run_info.get("preset") or reference or (spec.presets[0] if spec.presets else None)
        meta = {"family": spec.name, "model_class": spec.model_classes[0],
                "reference": table if isinstance(table, str) else None,
                "sampler": run_info.get("sampler"),
                "scheduler": run_info.get("scheduler") or scheduler_name(run_info["model_sampling"], run_info["sigmas"]),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "comfyui_version": comfyui_version(), **(extra or {})}
        path = save_profile(directory, name, result, meta)
        shape = f"{result.steps} steps, {'CFG' if result.cfg else 'no CFG'}"
        if extra and "self_calibration" in extra:
            why = ("model_type auto_calibrate" if extra["self_calibration"].get("forced")
                   else f"{spec.name} has no published table")
            message = (f"MagCache: self-calibration ({why}): no profile for this model with {meta['sampler']} / "
                       f"{meta['scheduler']} yet, so every step was computed (nothing skipped) and the ratios "
                       f"were saved as profile '{name}' ({shape}) to {path}; the next runs use it")
        else:
            message = f"MagCache calibration: saved profile '{name}' ({shape}) to {path}"
        log.info(message)
        reference_table = get_preset(meta["reference"]) if meta["reference"] else None
        config = MagCacheConfig(*reference_table.recommended) if reference_table else MagCacheConfig()
        try:
            save_png(path.with_suffix(".png"), plot_calibration(
                result, config, reference_table, round_half_up=spec.retention_round_half_up,
                title=f"MagCache calibration '{name}': {spec.name}, {result.steps} steps"))
        except Exception as e:  # the profile is saved and usable; only its picture is missing
            log.warning("MagCache calibration: the plot of '%s' was not saved: %s", name, e)
            message += f"\nThe plot was NOT saved: {clip(str(e) or type(e).__name__)}"
        return {"path": str(path), "reference": meta["reference"], "message": message}

    return on_result
