"""FramePack and FramePack-F1 through kijai's ComfyUI-FramePackWrapper, outside ComfyUI's sampler path.

The wrapper's FramePackMODEL is a dict holding a diffusers-style HunyuanVideoTransformer3DModel
(diffusers_helper/models/hunyuan_video_packed.py); FramePackSampler samples it with its own loop
(sample_hunyuan -> FlowMatchUniPC.sample), once per latent section. Here:
- The blocks are reached by the block-list swap (swap.py) on a copy of the transformer: the same modules,
  weights and config, its own transformer_blocks / single_transformer_blocks. The transformer handed in
  is never changed: another sampler given it runs uncached and unchanged.
- The copy's forward is the class's own, run inside a Call as ComfyUI's model calls are (engine.py). Its
  step comes from the sampler: FlowMatchUniPC.sample's sigma list and the sigma its model_fn passes, placed
  in that list (Schedule.step_index); its branch from which of the sampler's conditionings (positive,
  negative with real CFG) the call carries.
- One Run per section: each FlowMatchUniPC.sample is a full loop of `steps` steps, and the authors' scripts
  restart their counter with every section (initialize_magcache before each sample_hunyuan). Within it the
  branches keep their own state. A Run ends after its section's last model call (summary, calibration); an
  interrupted section's Run is dropped with its sampler object.
- Self-calibration keys profiles as for the other families (model fingerprint, sampler, schedule, CFG).
Nothing here imports the wrapper or ComfyUI: the wrapper's classes are recognised by name."""
from __future__ import annotations

import logging
import sys
import threading
import types
import weakref
from typing import Optional

import torch

from ..magcache import COND, UNCOND, MagCacheConfig
from . import selfcal
from .engine import CURRENT_CALL, RUN_KEY, CachedBlock, Call, Settings, end_run, new_run
from .handle import CalibrationHandle
from .profile_keys import Curve, curve_hash, model_fingerprint
from .spec import BlockGroup, FamilySpec
from .swap import swapped_lists

log = logging.getLogger("MagCache")

CLASS = "HunyuanVideoTransformer3DModel"
MODULE = "diffusers_helper.models.hunyuan_video_packed"
SAMPLER = "FlowMatchUniPC"  # diffusers_helper/k_diffusion/uni_pc_fm.py: sample() loops, model_fn(x, t) calls the model
SCHEDULE = "flux_shift"  # ours: the name profiles record for the wrapper's one schedule (get_flux_sigmas_from_mu)
DEPTH = 8  # frames between the transformer's forward and the sampler's model_fn (k_model, nn.Module.__call__)
ORIGINAL, SECTIONS = "magcache_original", "magcache_sections"  # plain attributes of the copy

# Not a registry family (no SPEC): the wrapper's model never reaches ComfyUI's MagCache node.
FRAMEPACK = FamilySpec(
    name="FramePack",
    model_classes=(f"{MODULE}.{CLASS}",),
    groups=(  # both block kinds are called block(hidden, text, temb, mask, rope) -> (hidden, text)
        BlockGroup("double_block", "transformer_blocks", outputs=("img", "txt"), swap_args=(0, 1)),
        BlockGroup("single_block", "single_transformer_blocks", outputs=("img", "txt"), swap_args=(0, 1)),
    ),
    presets=("framepack", "framepack_f1"),
    hook="block_swap",
)


class NotFramePack(ValueError):
    """The node was given something other than the wrapper's FramePackMODEL."""


def original_class(transformer) -> type:
    """The transformer's own class: the wrapper's loaders install lllyasviel's DynamicSwap, which gives every
    module a generated subclass and keeps the original in forge_backup_original_class."""
    return getattr(transformer, "__dict__", {}).get("forge_backup_original_class", type(transformer))


def transformer_of(model) -> torch.nn.Module:
    """The FramePackMODEL's transformer, checked; a copy made here gives back the transformer it copies."""
    transformer = model.get("transformer") if isinstance(model, dict) else None
    cls = original_class(transformer) if transformer is not None else type(model)
    if transformer is None or cls.__name__ != CLASS or not cls.__module__.endswith(MODULE) or not all(
            isinstance(getattr(transformer, g.attr, None), torch.nn.ModuleList) for g in FRAMEPACK.groups):
        raise NotFramePack(f"MagCache (FramePack) needs the FramePackMODEL of kijai's ComfyUI-FramePackWrapper (a dict "
                           f"holding its {CLASS}); got {type(model).__name__}"
                           + (f" holding {cls.__module__}.{cls.__name__}" if transformer is not None else ""))
    return transformer.__dict__.get(ORIGINAL, transformer)


def apply(model: dict, config: MagCacheConfig, preset=None, calibrate: Optional[CalibrationHandle] = None,
          self_calibrate: Optional[selfcal.SelfCalibration] = None) -> dict:
    """A FramePackMODEL whose transformer is a MagCache'd copy of `model`'s; `model` is not touched. MagCache
    applied to a copy starts again from the transformer it copies (the newer settings win)."""
    original = transformer_of(model)
    copy = object.__new__(type(original))  # the same (DynamicSwap) class: its attribute lookups stay the wrapper's
    copy.__dict__.update(original.__dict__)
    for key, value in original.__dict__.items():  # the module's own containers, so the copy's blocks are its own
        if isinstance(value, (dict, set)) and (key in ("_parameters", "_buffers", "_modules") or "hook" in key
                                               or key == "_non_persistent_buffers_set"):
            copy.__dict__[key] = type(value)(value)
    for attr, blocks in swapped_lists(FRAMEPACK, original, CachedBlock).items():
        copy._modules[attr] = blocks
    copy.__dict__[ORIGINAL] = original
    copy.__dict__[SECTIONS] = Sections(Settings(FRAMEPACK, config, preset, calibrate, self_calibrate))
    copy.__dict__["forward"] = types.MethodType(cached_forward, copy)  # nn.Module.__call__ calls self.forward
    return dict(model, transformer=copy)


def cached_forward(self, *args, **kwargs):
    """The copy's forward: the class's own, inside this call's Call when the sampler is the wrapper's."""
    sections: Sections = self.__dict__[SECTIONS]
    found = sections.begin(self, kwargs)
    if found is None:
        return type(self).forward(self, *args, **kwargs)
    call, end = found
    token = CURRENT_CALL.set(call)
    try:
        out = type(self).forward(self, *args, **kwargs)
    except BaseException:
        if end is not None:
            end(False)
        raise
    finally:
        CURRENT_CALL.reset(token)
    if end is not None:
        end(True)
    return out


def sampler_frame():
    """(FlowMatchUniPC, its sigma list, the sigma of this model call, the loop index) from the frames of the
    sampler that called the model, or None when the caller is not that sampler."""
    f, t = sys._getframe(2), None
    for _ in range(DEPTH + 2):
        if f is None:
            return None
        name = f.f_code.co_name
        if name in ("model_fn", "sample"):
            local = f.f_locals
            owner = local.get("self")
            if type(owner).__name__ == SAMPLER:
                if name == "model_fn":
                    t = local.get("t")
                elif t is not None:
                    return owner, local.get("sigmas"), t, local.get("i")
        f = f.f_back
    return None


class Sections:
    """The runs of one MagCache'd transformer: one per section (sampler loop) in progress, keyed by the
    sampler object, so a section's Run goes with it when the loop is left (also by an interrupt)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.runs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()
        self.warned: set = set()

    def __deepcopy__(self, memo):  # ComfyUI may deep-copy node outputs; the copy shares the live runs
        return self

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning(message)

    def begin(self, model, kwargs):
        """(this call's Call, what ends its section after it when it is the section's last call) or None: the
        call runs uncached."""
        if getattr(model, "enable_teacache", False):
            self.warn_once("teacache", "MagCache: FramePackSampler's use_teacache is on, so MagCache is off for this "
                                       "model (both would skip steps); turn use_teacache off to use MagCache")
            return None
        found = sampler_frame()
        if found is None:
            self.warn_once("sampler", f"MagCache: this FramePack model was called by another sampler than the "
                                      f"wrapper's {SAMPLER}; such calls run uncached")
            return None
        sampler, sigmas, t, i = found
        extra = getattr(sampler, "extra_args", None) or {}
        text = kwargs.get("encoder_hidden_states")
        if text is not None and text is (extra.get("positive") or {}).get("encoder_hidden_states"):
            branch = COND
        elif text is not None and text is (extra.get("negative") or {}).get("encoder_hidden_states"):
            branch = UNCOND
        else:
            self.warn_once("branch", "MagCache: a FramePack model call carried neither of the sampler's "
                                     "conditionings; such calls run uncached")
            return None
        cfg = extra.get("cfg_scale", 1.0) != 1.0  # as the wrapper's fm_wrapper: the negative runs unless cfg == 1.0
        with self.lock:
            run = self.runs.get(sampler)
            if run is None:
                run = self.runs[sampler] = new_run(self.settings, None, lambda: self.plan(model, sampler, sigmas, cfg))
        to = {RUN_KEY: run, "sample_sigmas": sigmas, "sigmas": t, "cond_or_uncond": [branch]}
        last = isinstance(i, int) and i == sigmas.shape[0] - 2 and (branch == UNCOND or not cfg)
        preset = run.preset if run.preset is not None else selfcal.MEASURING  # None: self-calibration measures
        end = (lambda completed: self.end(run, completed, sampler_name(sampler))) if last else None
        return Call(run, preset, to), end

    def plan(self, model, sampler, sigmas, cfg: bool) -> selfcal.Plan:
        """Self-calibration's plan for a section, keyed as for the other families: the model's fingerprint
        (its config and weights; no ModelPatcher holds it, so no weight patches), the sampler, the section's
        exact sigma curve (the wrapper's shift depends on the latent size) and CFG."""
        holder = types.SimpleNamespace(model=types.SimpleNamespace(model_config=types.SimpleNamespace(
            unet_config=dict(model.config))), backup={}, patches={})
        fingerprint = model_fingerprint(holder, model.__dict__[ORIGINAL])
        curve = Curve(SCHEDULE, curve_hash(sigmas.tolist()))  # one host read per section
        return selfcal.plan_for(FRAMEPACK, self.settings.self_calibrate, fingerprint, sampler_name(sampler), curve,
                                cfg)

    def end(self, run, completed: bool, sampler: str) -> None:
        with self.lock:
            for key, r in list(self.runs.items()):
                if r is run:
                    del self.runs[key]
        sched = run.state.current_schedule
        end_run(run, completed, lambda: {"sampler": sampler, "model_sampling": None,
                                         "sigmas": sched.sigmas if sched is not None else ()})


def sampler_name(sampler) -> str:
    return f"unipc_{getattr(sampler, 'variant', 'bh1')}"  # FramePackSampler's choices: unipc_bh1, unipc_bh2
