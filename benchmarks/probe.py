"""What a MagCache run did, watched from outside the engine: which model calls ran no block (forward
pre-hooks on the diffusion model and on every block the family's spec lists), their CFG layout, and
the residual memory the run state holds and whether it is released when sampling returns."""
from __future__ import annotations

import contextlib
import weakref

from harness import load_pack

load_pack()  # the pack as the package comfyui_magcache
from comfyui_magcache.magcache import streams  # noqa: E402


def _transformer_options(args, kwargs) -> dict:
    to = kwargs.get("transformer_options")
    if isinstance(to, dict):
        return to
    return next((a for a in reversed(args) if isinstance(a, dict) and "cond_or_uncond" in a), {})


class Probe:
    """Hooks on one diffusion model, on only while watching() (the plain runs share the model)."""

    def __init__(self, spec, diffusion_model):
        from comfyui_magcache.model_patches.engine import RUN_KEY

        self.run_key = RUN_KEY  # where the engine keeps the live run (see _after_call)
        self.model = diffusion_model
        # the modules themselves: a block-list swap may still be in place from an earlier run
        self.blocks = [list(getattr(diffusion_model, g.attr)._modules.values())[i] for g, i in spec.blocks(diffusion_model)]
        self.reset()

    def reset(self) -> None:
        self.blocks_run: list[int] = []  # per model call: how many blocks ran
        self.layouts: set = set()  # cond_or_uncond of the model calls
        self.held_bytes = 0
        self.refs: list = []
        self.released_at_end = True  # every run so far: run state and residuals dead when sampling returned

    @property
    def skipped(self) -> list[bool]:
        """Per model call: it ran no block."""
        return [n == 0 for n in self.blocks_run]

    @contextlib.contextmanager
    def watching(self):
        """Watch one sampling run; when it has returned, check that its run state was released."""
        hooks = [self.model.register_forward_pre_hook(self._on_call, with_kwargs=True),
                 self.model.register_forward_hook(self._after_call, with_kwargs=True)]
        hooks += [b.register_forward_pre_hook(self._on_block) for b in self.blocks]
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()
        self.released_at_end = self.released_at_end and self.released()

    def _on_call(self, module, args, kwargs):
        self.blocks_run.append(0)
        self.layouts.add(tuple(_transformer_options(args, kwargs).get("cond_or_uncond") or ()))

    def _on_block(self, module, args):
        if self.blocks_run:
            self.blocks_run[-1] += 1

    def _after_call(self, module, args, kwargs, output):
        # The one reading of the pack's internals in the benchmark: no public surface tells what
        # memory a run holds or whether it is freed. The engine keeps the live run in
        # transformer_options[RUN_KEY]; its core RunState (magcache/state.py) keeps one residual per
        # branch (branches, residual()). Nothing of the call in progress is read.
        run = _transformer_options(args, kwargs).get(self.run_key)
        if run is None:
            return
        state = run.state
        tensors = [t for k in list(state.branches) for t in streams.parts(state.residual(k))
                   if t is not None]  # several streams (LTX-2): a residual per stream
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        self.held_bytes = max(self.held_bytes, sum(storages.values()))
        bases = [t._base for t in tensors if t._base is not None]
        self.refs = [weakref.ref(o) for o in (run, state, *tensors, *bases)]

    def released(self) -> bool:
        return bool(self.refs) and all(r() is None for r in self.refs)
