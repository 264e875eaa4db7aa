"""The declarative description of a model family: what a new family's spec file fills in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

ArgGetter = Callable[[str], Any]  # name of a diffusion-model forward argument -> its value in this call


@dataclass(frozen=True)
class BlockGroup:
    """One ModuleList of transformer blocks, in execution order.

    kind: the block kind in patches_replace["dit"] keys, e.g. "double_block".
    attr: the ModuleList attribute on the diffusion model, e.g. "double_blocks".
    outputs: the keys a replacement returns for this kind, e.g. ("img", "txt").
    image_tokens: where the image tokens sit in args["img"]: "all" (image stream only),
        "last" (text tokens first, then image: Flux single blocks) or "first" (image first).
    """

    kind: str
    attr: str
    outputs: tuple[str, ...] = ("img",)
    image_tokens: str = "all"

    def __post_init__(self):
        if self.image_tokens not in ("all", "first", "last"):
            raise ValueError(f"image_tokens must be 'all', 'first' or 'last', got {self.image_tokens!r}")


@dataclass(frozen=True)
class FamilySpec:
    """A model family MagCache can patch.

    model_class: qualified name of the ComfyUI diffusion-model class ("comfy.ldm.flux.model.Flux").
    groups: the block lists, in execution order; the first block of the first group is the head,
        the last block of the last group the tail.
    presets: the ratio-table names valid for this family; the first is what 'auto' uses unless
        `variant` picks one per model call.
    variant: optional; given the forward arguments of a call, returns the preset 'auto' uses.
    retention_round_half_up: the retention boundary is int(R*N + 0.5) (official Flux) instead of int(R*N).
    """

    name: str
    model_class: str
    groups: tuple[BlockGroup, ...]
    presets: tuple[str, ...]
    variant: Optional[Callable[[ArgGetter], str]] = None
    retention_round_half_up: bool = False

    def __deepcopy__(self, memo):  # immutable; ComfyUI deep-copies model_options at every clone
        return self

    def blocks(self, diffusion_model) -> list[tuple[BlockGroup, int]]:
        """Every (group, index) block of this model instance, in execution order."""
        return [(g, i) for g in self.groups for i in range(len(getattr(diffusion_model, g.attr)))]

    def auto_preset(self, arg: ArgGetter) -> str:
        return self.variant(arg) if self.variant is not None else self.presets[0]
