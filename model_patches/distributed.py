"""Model calls split over several processes by raylight (komikndr/raylight): what this rank holds of a
call, read at run time from raylight's own state, and the one reduction the cache needs.

raylight (facts from its source, v1.5.1, ../shared/RAYLIGHT.md):
- sequence parallel (USP: Ulysses and ring degrees): an ON_LOAD callback replaces the diffusion
  model's forward on the instance (`forward_orig`, or `_forward` for Qwen-Image and others;
  raylight/distributed_modules/usp.py); after the patch embedding the tokens
  are zero-padded at the end to a multiple of the degree and each rank of the sequence group runs
  one contiguous chunk (torch.chunk on dim 1) through the blocks; they are all-gathered after.
- CFG parallel: a DIFFUSION_MODEL wrapper (raylight/distributed_modules/cfg_utils.py) hands rank r of
  the CFG group batch row r of the call (the batch must be the CFG degree) and all-gathers the
  outputs; `transformer_options["cond_or_uncond"]` still lists every row.
- the groups are xfuser's (xfuser.core.distributed), set up before any model call.

What the engine does with it (ours): every rank decides from (step, branch) and the table alone, so the
decisions agree with no communication; under CFG parallel a rank decides for every branch of the
call (as one process does for its batched call) and keeps only its own branch's residual; residuals
stay sharded on their rank. Calibration sums (per-token ratio, its square, cosine distance, token count,
padding rows excluded) are all-reduced once, at the end of a calibration run, over the sequence
group and then the CFG group, so every rank gets the curves one process measures. A layout the pack
does not know (raylight's USP on a family whose spec has no `sequence_parallel`, pipeline parallel, a
group without raylight's patch) switches caching off: every rank sees the same state and decides so
together, each saying it once."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import torch

from .spec import FamilySpec


@dataclass(frozen=True)
class Layout:
    """What this rank holds of a model call.

    sp_degree / sp_rank: the ranks sharing one token sequence (Ulysses x ring) and this rank's chunk.
    cfg_degree / cfg_rank: >1 when raylight's CFG wrapper gives each rank one batch row.
    groups: the process groups the calibration sums are all-reduced over (sequence, then CFG).
    problem: why caching must be off on every rank, or None."""

    sp_degree: int = 1
    sp_rank: int = 0
    cfg_degree: int = 1
    cfg_rank: int = 0
    groups: tuple = ()
    problem: Optional[str] = None

    @property
    def split(self) -> bool:
        return self.sp_degree > 1 or self.cfg_degree > 1

    def local_keys(self, keys: tuple) -> Optional[tuple]:
        """The branch keys of this rank's batch rows (the call's keys without a CFG split); None if the
        call's rows cannot be divided among the CFG ranks."""
        if self.cfg_degree == 1:
            return keys
        if len(keys) % self.cfg_degree:
            return None
        n = len(keys) // self.cfg_degree
        return keys[self.cfg_rank * n:(self.cfg_rank + 1) * n]

    def valid_tokens(self, total: Optional[int], local: int) -> Optional[int]:
        """Of this rank's `local` tokens, how many are real (the padding sits at the end of the last
        chunks); None when `local` is not the chunk raylight cuts from `total` tokens."""
        if self.sp_degree == 1:
            return local if total is None or total == local else None
        if total is None or local != -(-total // self.sp_degree):
            return None
        return max(0, min(local, total - self.sp_rank * local))


SINGLE = Layout()


def _from_raylight(fn) -> bool:
    return getattr(getattr(fn, "__func__", fn), "__module__", "").startswith("raylight.")


def _raylight_wrapper(transformer_options: dict) -> bool:
    """Whether a DIFFUSION_MODEL wrapper of raylight's (its CFG split) is on this model call."""
    wrappers = (transformer_options.get("wrappers") or {}).get("diffusion_model") or {}  # WrappersMP.DIFFUSION_MODEL
    return any(_from_raylight(w) for ws in wrappers.values() for w in ws)


def detect(spec: FamilySpec, diffusion_model, transformer_options: dict) -> Layout:
    """The layout of this model call's rank; SINGLE outside raylight."""
    # raylight's USP sets its forward on the instance (forward_orig, _forward or forward, per family)
    usp = any(_from_raylight(v) for v in vars(diffusion_model).values() if callable(v))
    cfg_wrapper = _raylight_wrapper(transformer_options)
    xf = sys.modules.get("xfuser.core.distributed")
    ready = (xf is not None and torch.distributed.is_available() and torch.distributed.is_initialized()
             and xf.model_parallel_is_initialized())
    if not ready:
        if usp or cfg_wrapper:
            return Layout(problem="raylight's parallel patch is on the model but its process groups are not set up")
        return SINGLE
    sp, cfg = xf.get_sequence_parallel_world_size(), xf.get_classifier_free_guidance_world_size()
    if xf.get_pipeline_parallel_world_size() > 1:
        return Layout(problem="raylight's pipeline parallel (PipeFusion) is not supported")
    if usp != (sp > 1):
        return Layout(problem=f"raylight's sequence parallel group has {sp} ranks but the model's forward "
                              f"{'is' if usp else 'is not'} raylight's")
    if cfg_wrapper != (cfg > 1):
        return Layout(problem=f"raylight's CFG parallel group has {cfg} ranks but its CFG split "
                              f"{'is' if cfg_wrapper else 'is not'} on the model")
    if sp > 1 and spec.sequence_parallel is None:
        return Layout(problem=f"{spec.name}: how raylight's sequence parallel shards its tokens is not declared "
                              "(FamilySpec.sequence_parallel)")
    groups = tuple(g for n, g in ((sp, xf.get_sp_group), (cfg, xf.get_cfg_group)) if n > 1)
    return Layout(sp, xf.get_sequence_parallel_rank() if sp > 1 else 0, cfg,
                  xf.get_classifier_free_guidance_rank() if cfg > 1 else 0,
                  tuple(getattr(g(), "device_group", None) for g in groups))


def all_reduce(layout: Layout, sums: torch.Tensor) -> torch.Tensor:
    """`sums` (equal shape on every rank, on the device) summed over the ranks that share this run:
    the sequence group, then the CFG group. Collective: every rank calls it at the same point."""
    for group in layout.groups:
        torch.distributed.all_reduce(sums, group=group)
    return sums
