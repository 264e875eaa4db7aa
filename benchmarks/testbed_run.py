"""What the testbed benchmarks (quality.py, calibration_quality.py, skip_cost.py) share: ComfyUI set
up in library mode with 1 torch thread, the models asked for, the report's header (command, machine,
reference run) and the JSON report written at the end with the run's wall time."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def start(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the options and set ComfyUI up (COMFYUI_PATH); exit 2 without a ComfyUI tree."""
    from harness import COMFYUI, setup_comfy

    opts = ap.parse_args()
    if COMFYUI is None:
        print("set COMFYUI_PATH to a ComfyUI source tree", file=sys.stderr)
        sys.exit(2)
    setup_comfy(COMFYUI, sdpa=True)
    torch.set_num_threads(1)
    return opts


def model_names(opts: argparse.Namespace) -> list:
    """--models as a list; by default every trained testbed."""
    from comfyui_magcache.testbed import models

    return opts.models.split(",") if opts.models else list(models.TRAINED)


def new_report(script: str) -> dict:
    """The report's header: the command that ran, the machine, the reference run; models to fill."""
    import comfyui_version

    from comfyui_magcache.testbed import compare

    return {"command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, CPU, fp32, torch "
                       f"{torch.__version__.split('+')[0]}, ComfyUI {comfyui_version.__version__}",
            "reference": f"{compare.STEPS} steps, euler, simple", "models": {}}


def finish(report: dict, out: Path, started: float) -> int:
    """Write `report` (with its wall time since `started`, time.monotonic()) to `out` as JSON."""
    report["wall_minutes"] = round((time.monotonic() - started) / 60, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {out} ({report['wall_minutes']} min)")
    return 0
