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
        raise CompileSettingsError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if backend not in BACKENDS:
        raise CompileSettingsError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
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
            with grad:
                return executor(*args, **kwargs)
        except TorchDynamoException as e:
            broken["error"] = e
            log.warning("MagCache CompileModel: torch.compile failed (%s: %s); this model runs uncompiled",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        finally:
            for path, module in originals.items():
                comfy.utils.set_attr(model, path, module)
        with grad:
            return executor(*args, **kwargs)

    return wrapper


def apply_compile(model, spec: FamilySpec, diffusion_model, kwargs: dict, prefix: Optional[str] = None):
    """A clone of `model` whose blocks run compiled."""
    from comfy.patcher_extension import WrappersMP

    model = model.clone()
    paths = block_paths(spec, diffusion_model, prefix or "diffusion_model")
    model.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY)
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, compile_wrapper(paths, kwargs))
    return model
