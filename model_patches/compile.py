"""Regional torch.compile: the transformer blocks of a family spec, compiled; everything around them
(MagCache's per-step decision, the block loop, the embeddings) stays eager.

Why blocks and not the whole model: a per-step Python decision inside a compiled region
recompiles every step, and a whole-model graph freezes the block loop, so block replacements added
after the first compiled run are silently ignored. Blocks are where the time goes, their inputs
keep their shapes from step to step, and blocks of one class share one compiled graph.

Nothing global is touched: no torch/dynamo/inductor configuration, no patched torch class. The
compiled blocks are swapped in for the duration of each model call by an APPLY_MODEL wrapper (as
ComfyUI's own torch.compile helper does), under the same wrapper key, so this and core's
TorchCompileModel replace each other rather than stack. The blocks are compiled per model instance
the wrapper is called for: MultiGPU CFG Split calls it for each device's own copy of the model, and
each device must run its own blocks (blocks of one class still share one graph)."""
from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from typing import Optional

import torch

from ..magcache.text import show
from .spec import FamilySpec

log = logging.getLogger("MagCache")

COMPILE_KEY = "torch.compile"  # the key of ComfyUI's own torch.compile wrapper
MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
BACKENDS = ("inductor", "cudagraphs", "eager", "aot_eager")


class CompileSettingsError(ValueError):
    """A CompileModel setting that cannot work on this device; the message says what can."""


def skip_transformer_options(guard_entries):
    """No guards on transformer_options: it changes every call (sigmas, block_index, MagCache's run)
    and blocks only pass it through; guarding on it would recompile every block and step."""
    return [("transformer_options" not in entry.name) for entry in guard_entries]


def compile_kwargs(mode: str, backend: str, fullgraph: bool, dynamic: bool, device: torch.device) -> dict:
    """torch.compile arguments for the node's inputs on `device`; CUDA-only choices fall back or fail here,
    before sampling."""
    if mode not in MODES:
        raise CompileSettingsError(f"mode must be one of {', '.join(MODES)}, got {show(mode)}")
    if backend not in BACKENDS:
        raise CompileSettingsError(f"backend must be one of {', '.join(BACKENDS)}, got {show(backend)}")
    cuda = torch.device(device).type == "cuda"
    if backend == "cudagraphs" and not cuda:
        raise CompileSettingsError(f"backend 'cudagraphs' needs a CUDA device; this model runs on "
                                   f"{torch.device(device).type}. Use backend inductor (or eager/aot_eager).")
    options: dict = {"guard_filter_fn": skip_transformer_options}
    if backend == "inductor":
        if not cuda and mode in ("reduce-overhead", "max-autotune"):
            fallback = "max-autotune-no-cudagraphs" if mode == "max-autotune" else "default"
            log.warning("MagCache CompileModel: mode '%s' uses CUDA graphs, which need a CUDA device; "
                        "using '%s' on %s", mode, fallback, torch.device(device).type)
            mode = fallback
        if mode != "default":  # torch.compile takes mode or options, not both: spell the mode out
            from torch._inductor import list_mode_options

            options.update(list_mode_options(mode))
    return {"backend": backend, "fullgraph": bool(fullgraph), "dynamic": bool(dynamic), "options": options}


# ComfyUI attention paths that ask for free memory on every call (sub-quadratic, ComfyUI's CPU default,
# and split, its low-memory option): inside a compiled block that query is a graph break, and the
# figure it returns becomes a guarded constant that recompiles when free memory changes.
MEMORY_QUERYING_ATTENTION = ("attention_sub_quad", "attention_split")


def attention_for_compile(func, *args, **kwargs):
    """The `optimized_attention_override` CompileModel sets on its clone (ours): the memory-querying
    paths run as PyTorch's SDPA (the same attention, fused, and what ComfyUI uses by default on
    CUDA), which compiles into the block's graph; every other attention function runs as chosen."""
    if getattr(func, "__name__", "") in MEMORY_QUERYING_ATTENTION:
        from comfy.ldm.modules.attention import attention_pytorch

        return attention_pytorch(*args, **kwargs)
    return func(*args, **kwargs)


def block_paths(spec: FamilySpec, diffusion_model, prefix: str = "diffusion_model") -> list[str]:
    """Attribute paths (from the BaseModel) of every block to compile, extra block lists included."""
    paths = [f"{prefix}.{group.attr}.{i}" for group, i in spec.blocks(diffusion_model)]
    for attr in spec.compile_also:
        paths += [f"{prefix}.{attr}.{i}" for i in range(len(getattr(diffusion_model, attr, ())))]
    return paths


def compile_wrapper(paths: list[str], compile_args: dict):
    """APPLY_MODEL wrapper: swap the compiled blocks of the called model in for the call, restore them
    after; run under no_grad as ComfyUI samples; if dynamo cannot compile, finish eagerly (once
    warned) rather than fail."""
    import comfy.utils
    from torch._dynamo.exc import TorchDynamoException

    broken: dict = {}
    per_model = weakref.WeakKeyDictionary()  # BaseModel -> {path: its compiled block}
    lock = threading.Lock()  # device threads of the split call this wrapper at the same time

    def compiled_blocks(model) -> dict:
        with lock:
            compiled = per_model.get(model)
            if compiled is None:
                compiled = per_model[model] = {path: torch.compile(comfy.utils.get_attr(model, path), **compile_args)
                                               for path in paths}
        return compiled

    def wrapper(executor, *args, **kwargs):
        model = executor.class_obj
        grad = torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext()
        if broken:
            with grad:
                return executor(*args, **kwargs)
        originals = {}
        try:
            for path, module in compiled_blocks(model).items():
                originals[path] = comfy.utils.get_attr(model, path)
                comfy.utils.set_attr(model, path, module)
            cargs, ckwargs = with_compile_attention(args, kwargs)
            with grad:
                return executor(*cargs, **ckwargs)
        except TorchDynamoException as e:
            # Only the message is kept: the exception's traceback holds the failing call's frames,
            # and with them its tensors (activations, the latent), for as long as the model lives.
            broken["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            log.warning("MagCache CompileModel: torch.compile failed (%s); this model runs uncompiled",
                        broken["error"])
        finally:
            for path, module in originals.items():
                comfy.utils.set_attr(model, path, module)
        with grad:
            return executor(*args, **kwargs)

    return wrapper


def with_compile_attention(args: tuple, kwargs: dict) -> tuple:
    """APPLY_MODEL's (args, kwargs) with attention_for_compile as the call's attention override,
    unless another node set one (theirs wins). transformer_options is copied, never changed in place."""
    pos = 5  # BaseModel.apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    to = kwargs.get("transformer_options", args[pos] if len(args) > pos else None)
    if not isinstance(to, dict) or "optimized_attention_override" in to:
        return args, kwargs
    to = dict(to, optimized_attention_override=attention_for_compile)
    if "transformer_options" in kwargs:
        return args, dict(kwargs, transformer_options=to)
    return args[:pos] + (to,) + args[pos + 1:], kwargs


def apply_compile(model, spec: FamilySpec, diffusion_model, kwargs: dict, prefix: Optional[str] = None):
    """A clone of `model` whose blocks run compiled."""
    from comfy.patcher_extension import WrappersMP

    model = model.clone()
    paths = block_paths(spec, diffusion_model, prefix or "diffusion_model")
    model.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY)
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, compile_wrapper(paths, kwargs))
    return model
