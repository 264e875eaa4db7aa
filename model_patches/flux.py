"""Flux (dev, schnell) and Flux-Kontext: comfy.ldm.flux.model.Flux.

Double blocks carry the image stream alone (Kontext's reference tokens are appended to it, so
they are part of the cached hidden state, as in the original); single blocks carry text tokens
first, then image tokens."""
from .spec import BlockGroup, FamilySpec


def has_items(x) -> bool:
    return x is not None and len(x) > 0


SPEC = FamilySpec(
    name="Flux",
    model_classes=("comfy.ldm.flux.model.Flux",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt")),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="last"),
    ),
    presets=("flux", "flux_kontext"),
    variant=lambda model, arg: "flux" if not has_items(arg("ref_latents")) else "flux_kontext",
    retention_round_half_up=True,
)
