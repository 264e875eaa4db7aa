"""The calibration handle and the compiled-model unwrap: what the engine, self-calibration and the
nodes all use. A module of its own so that engine.py and selfcal.py need not import each other
(tests/unit/test_import_graph.py keeps the pack's import graph free of cycles)."""
from __future__ import annotations

from typing import Optional

from ..magcache import CalibrationResult
from .spec import FamilySpec


class CalibrationHandle:
    """A calibration result that exists once a calibration run has finished (MAGCACHE_RATIOS).

    The calibration node hands it out before sampling; its calibration run fills it (and calls
    on_result, which saves the profile); a MagCache node given the handle reads it when it samples."""

    def __init__(self, spec: FamilySpec, reference: Optional[str] = None, on_result=None):
        self.spec, self.reference, self.on_result = spec, reference, on_result
        self.result: Optional[CalibrationResult] = None
        self.info: dict = {}

    def __deepcopy__(self, memo):
        return self

    def finish(self, result: CalibrationResult, run_info: dict) -> None:
        self.result = result
        if self.on_result is not None:
            self.info = self.on_result(result, run_info) or {}


def unwrap(diffusion_model):
    """The module under a torch.compile wrapper, if any."""
    return getattr(diffusion_model, "_orig_mod", diffusion_model)
