"""Host syncs of the patched forward on real ComfyUI (tiny Flux and Wan, CPU).

On a GPU every value the host reads from a tensor (item, float(), tolist, ...) waits for the device
queue to drain, and every activation copied to another device costs bandwidth. MagCache's per-step
decision needs the current sigma, so it may read one scalar per model call; the schedule and the
model's sigma table are read once per run. Nothing else may leave the device.

A TorchFunctionMode sees every such call made while sampling; a call is the pack's when the first
frame outside torch that made it is in the pack's own code (not in tests/). On CPU the reads are
cheap, but they are the same calls that would sync on a GPU."""
from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from comfyui_magcache.magcache import Schedule, get_preset
from harness import TINY, conds, sample, tiny_model
from torch.overrides import TorchFunctionMode

PACK_ROOT = Path(__file__).resolve().parents[2]
TESTS = PACK_ROOT / "tests"
TORCH_DIR = Path(torch.__file__).resolve().parent

HOST_READS = {"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"}
COPIES = {"cpu", "cuda", "numpy", "to"}  # "to" counts only when it names a device
ACTIVATION = 16  # elements: a tensor larger than this is an activation, not a scalar or a schedule
STEPS = 12
PER_RUN = 3  # host reads allowed once per run: sample_sigmas and model_sampling.sigmas (.tolist)
CASES = {"flux": ("flux", 1.0), "wan_t2v": ("wan2.1_t2v_1.3B", 2.0)}  # cfg 1 (distilled) / batched CFG


def origin(frame) -> str:
    """'pack', 'tests' or 'other' for the first frame outside torch at or above `frame`."""
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if not path.is_relative_to(TORCH_DIR):
            if path.is_relative_to(TESTS):
                return "tests"
            return "pack" if path.is_relative_to(PACK_ROOT) else "other"
        frame = frame.f_back
    return "other"


def names_a_device(args, kwargs) -> bool:
    """Tensor.to(...) moves data between devices when given a device (or a tensor to match)."""
    values = list(args[1:]) + [kwargs.get("device"), kwargs.get("other")]
    return any(isinstance(v, (str, torch.device, torch.Tensor)) for v in values)


class HostTraffic(TorchFunctionMode):
    """Records (model call index, origin, function name, numel) of every host read and device copy.

    call: index of the model call in progress (-1 before the first), advanced by a forward pre-hook."""

    def __init__(self):
        super().__init__()
        self.call = -1
        self.events: list[tuple[int, str, str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        watched = name in HOST_READS or (name in COPIES and (name != "to" or names_a_device(args, kwargs)))
        if watched and args and isinstance(args[0], torch.Tensor):
            self.events.append((self.call, origin(sys._getframe(1)), name, args[0].numel()))
        return func(*args, **kwargs)

    def pack(self, kinds: set) -> list[tuple[int, int]]:
        """(model call, elements) of the pack's calls of these functions."""
        return [(call, n) for call, who, name, n in self.events if who == "pack" and name in kinds]

    def count(self, kinds: set) -> int:
        """Calls of these functions by anyone (ComfyUI included)."""
        return sum(1 for e in self.events if e[2] in kinds)


def watch(dm, traffic: HostTraffic):
    def on_call(module, args):
        traffic.call += 1

    return dm.register_forward_pre_hook(on_call)


def run_watched(model, name, cfg):
    pos, neg = conds(name)
    traffic = HostTraffic()
    handle = watch(model.model.diffusion_model, traffic)
    try:
        with torch.inference_mode(), traffic:
            sample(model, pos, neg, seed=7, steps=STEPS, cfg=cfg, latent_shape=TINY[name].latent)
    finally:
        handle.remove()
    return traffic


def test_the_detector_attributes_a_read_to_the_pack(comfy):
    # Schedule.from_values is pack code and reads a tensor schedule once with .tolist()
    with HostTraffic() as traffic:
        Schedule.from_values(torch.linspace(1, 0, 5))
        torch.ones(3).tolist()  # this file's own read: not the pack's
    assert traffic.pack(HOST_READS) == [(-1, 5)]
    assert [e[1] for e in traffic.events] == ["pack", "tests"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_scalar_read_per_model_call_and_no_activation_copies(comfy, name, caplog):
    preset, cfg = CASES[name]
    thresh, retention, K = get_preset(preset).recommended
    base = tiny_model(name)
    patched = comfy.MagCache.execute(base, "auto", thresh, retention, K, 0, -1).result[0]

    plain = run_watched(base, name, cfg)
    with caplog.at_level(logging.INFO, logger="MagCache"):
        traffic = run_watched(patched, name, cfg)
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("MagCache: skipped"))
    assert not summary.startswith("MagCache: skipped 0"), summary  # the skip path was exercised
    calls = traffic.call + 1
    assert calls == plain.call + 1 == STEPS  # cfg 1 and batched CFG: one model call per step

    reads = traffic.pack(HOST_READS)
    scalar_reads = Counter(call for call, n in reads if n <= 1)
    schedule_reads = [(call, n) for call, n in reads if n > 1]
    assert max(scalar_reads.values(), default=0) <= 1, f"scalar reads per model call: {dict(scalar_reads)}"
    assert len(schedule_reads) <= PER_RUN, f"reads of whole tensors (model call, elements): {schedule_reads}"
    activation_copies = [(call, n) for call, n in traffic.pack(COPIES) if n > ACTIVATION]
    assert activation_copies == [], f"activation copies (model call, elements): {activation_copies}"
    assert plain.pack(HOST_READS | COPIES) == []

    # Nor does the pack make ComfyUI's own code read more: at most one value per call and the
    # per-run ones beyond what the unpatched model reads (skipped steps read fewer, if anything).
    assert traffic.count(HOST_READS) <= plain.count(HOST_READS) + calls + PER_RUN
    assert traffic.count(COPIES) <= plain.count(COPIES)
