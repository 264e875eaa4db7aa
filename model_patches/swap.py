"""The block-list swap, for block loops that never read patches_replace (Lumina 2 / Z-Image, HiDream).

An object patch on the clone replaces a block ModuleList by a CachedBlockList: the same block modules
under the same names, whose iteration and indexing hand each block out wrapped in a SwappedBlock, which
routes the call through the block's hook (engine.CachedBlock) as a block replacement would be."""
from __future__ import annotations

import functools

import torch

from .spec import FamilySpec


class SwappedBlock:
    """One block of a swapped list as its loop calls it, routed through the same head/tail logic as a
    block replacement: block(hidden, *args, **kwargs) -> hidden, or, with the group's swap_args, the
    hidden states passed as those keywords and returned in that order (HiDream's double blocks)."""

    __slots__ = ("module", "cached")

    def __init__(self, module, cached):
        self.module, self.cached = module, cached

    def __getattr__(self, name):  # a loop reading a block's submodules (FramePack's TeaCache: norm1) gets the block's
        return getattr(self.module, name)

    def __call__(self, *args, **kwargs):
        group = self.cached.group
        to = kwargs.get("transformer_options") or {}
        if not group.swap_args:
            if not args:  # the hidden state passed by keyword: not how the spec says the loop calls it
                self.cached.refuse(to, f"{group.attr} blocks were not called with the hidden state first")
                return self.module(*args, **kwargs)

            def original(a):
                return {group.key: self.module(a[group.key], *args[1:], **kwargs)}

            return self.cached({group.key: args[0], "transformer_options": to}, {"original_block": original})[group.key]
        if not all(name in kwargs if isinstance(name, str) else name < len(args) for name in group.swap_args):
            kind = "keywords" if all(isinstance(n, str) for n in group.swap_args) else "arguments"
            self.cached.refuse(to, f"{group.attr} blocks were not called with the {kind} "
                                   f"{', '.join(map(str, group.swap_args))}")  # called another way than the spec says
            return self.module(*args, **kwargs)

        def original(a):
            pos, kw = list(args), dict(kwargs)
            for out, name in zip(group.outputs, group.swap_args):
                (kw if isinstance(name, str) else pos)[name] = a[out]
            got = self.module(*pos, **kw)
            return dict(zip(group.outputs, got if len(group.outputs) > 1 else (got,)))

        given = {out: kwargs[name] if isinstance(name, str) else args[name]
                 for out, name in zip(group.outputs, group.swap_args)}
        out = self.cached(dict(given, transformer_options=to), {"original_block": original})
        return tuple(out[k] for k in group.outputs) if len(group.outputs) > 1 else out[group.key]


class CachedBlockList(torch.nn.ModuleList):
    """The block-list swap: the same block modules under the same names (so weight patches, LoRA,
    offloading and CompileModel's per-call swaps see the original blocks), but iterating or indexing
    it, as a block loop does, hands each block out wrapped in a SwappedBlock."""

    def __init__(self, modules, cached: dict):
        super().__init__(modules)
        self.__dict__["magcache_blocks"] = cached  # index -> CachedBlock; plain attribute, not a submodule

    def _wrap(self, i: int, module):
        cached = self.magcache_blocks.get(i)
        return SwappedBlock(module, cached) if cached is not None else module

    def __iter__(self):
        return (self._wrap(i, m) for i, m in enumerate(self._modules.values()))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return torch.nn.ModuleList(list(self._modules.values())[idx])
        return self._wrap(idx % len(self), super().__getitem__(idx))


def swapped_lists(spec: FamilySpec, diffusion_model, hook) -> dict:
    """{attribute: CachedBlockList} for a block_swap family: every group's list, same modules, wrapped;
    hook(group, is_head, is_tail) makes each block's hook (engine.CachedBlock)."""
    blocks = spec.blocks(diffusion_model)
    out: dict = {}
    for n, (group, i) in enumerate(blocks):
        out.setdefault(group.attr, {})[i] = hook(group, n == 0, n == len(blocks) - 1)
    return {attr: CachedBlockList(list(getattr(diffusion_model, attr)._modules.values()), cached)
            for attr, cached in out.items()}


def own_swapped_lists(main, copy) -> None:
    """CallbacksMP ON_DEEPCLONE_MULTIGPU / ON_MATCH_MULTIGPU_CLONES: a device's copy of the model (MultiGPU
    CFG Split) inherits the main model's object patches, whose swapped lists hold the MAIN model's block
    modules; each swapped list is rebuilt around the copy's own modules (same hooks), so every device
    runs its own blocks, and CompileModel's per-call swaps of one device never touch another's list."""
    for path, swapped in list(copy.object_patches.items()):
        if not isinstance(swapped, CachedBlockList):
            continue
        backup = getattr(copy, "object_patches_backup", None) or {}
        # the copy's own list: its unpatched original, or the list now on its model (unpatched, or its own swap)
        own = backup[path] if path in backup else functools.reduce(getattr, path.split("."), copy.model)
        copy.add_object_patch(path, CachedBlockList(list(own._modules.values()), swapped.magcache_blocks))


def follow_device_copies(model, key: str) -> None:
    """Register own_swapped_lists on a ModelPatcher for the device copies ComfyUI's multi-GPU split makes
    (ComfyUI versions with comfy.multigpu; others have no such callbacks and no copies)."""
    from comfy.patcher_extension import CallbacksMP

    for name in ("ON_DEEPCLONE_MULTIGPU", "ON_MATCH_MULTIGPU_CLONES"):
        kind = getattr(CallbacksMP, name, None)
        if kind is not None:
            model.remove_callbacks_with_key(kind, key)
            model.add_callback_with_key(kind, key, own_swapped_lists)


def install_swap(model, spec: FamilySpec, diffusion_model, prefix: str, hook, key: str) -> None:
    """On the clone `model`: every swapped list as an object patch at prefix.<attr>, and the callbacks that
    give each device copy of the multi-GPU split lists of its own blocks."""
    for attr, blocks in swapped_lists(spec, diffusion_model, hook).items():
        model.add_object_patch(f"{prefix}.{attr}", blocks)
    follow_device_copies(model, key)
