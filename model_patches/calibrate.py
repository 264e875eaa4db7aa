"""What a finished calibration run leaves behind: the profile (with where and how it was measured)
and its plot, and the text the node shows. ComfyUI is asked only for what it alone knows (the
scheduler that made the run's sigmas, its version)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional

import torch

from ..magcache import MagCacheConfig, get_preset, save_profile
from ..magcache import profiles as profile_files
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
    from .profile_keys import identify

    if sigmas is None:
        return "custom"
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    return identify(model_sampling, values, getattr(model_sampling, "sigmas", None)).scheduler


def profile_writer(spec: FamilySpec, reference: Optional[str], directory: str, name: str,
                   extra: Optional[dict] = None, keep: tuple = ()):
    """The calibration handle's on_result: saves profile `name` in `directory` and its plot beside it;
    returns what the node shows. A failed save raises (the engine reports it on the node).
    extra: further metadata; with "self_calibration" the message says the run was a self-calibration.
    keep: name prefixes of one model's automatic profiles, of which the KEEP_AUTO most recently used
    are kept after the save (older ones removed)."""

    def on_result(result, run_info) -> dict:
        table = run_info.get("preset") or reference or (spec.presets[0] if spec.presets else None)
        meta = {"family": spec.name, "model_class": spec.model_classes[0],
                "reference": table if isinstance(table, str) else None,
                "sampler": run_info.get("sampler"),
                "scheduler": (extra or {}).get("scheduler") or scheduler_name(run_info["model_sampling"],
                                                                              run_info["sigmas"]),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "comfyui_version": comfyui_version(), **(extra or {})}
        if run_info.get("offset", 0) or run_info.get("total", result.steps) != result.steps:
            meta.update(offset=run_info["offset"], total=run_info["total"])  # a piece of a longer schedule
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
        limit = profile_files.KEEP_AUTO
        removed = profile_files.prune(directory, keep, limit) if keep else []
        if removed:
            message += (f"\nRemoved the {len(removed)} least recently used automatic profile(s) of this model "
                        f"(at most {limit} are kept): {', '.join(removed)}")
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


def stopped(run) -> str:
    """A calibration run (engine.Run) that did not complete (interrupted, out of memory, any error):
    nothing is saved and an existing profile of that name is kept; said on the node and in the log."""
    sched = run.state.current_schedule
    what = "self-calibration" if run.plan is not None else "calibration"
    where = f" at step {max(0, run.calibration.reached() - sched.offset)} of {sched.steps}" if sched else ""
    run.calibration.release()
    message = f"MagCache {what} interrupted{where}: nothing saved, existing profile kept"
    log.warning(message)
    return message
