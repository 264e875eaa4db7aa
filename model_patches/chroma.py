"""Chroma: comfy.ldm.chroma.model.Chroma. Flux-like layout (text first in the single stream);
blocks listed in skip_mmdit / skip_dit never run, so they are neither head nor tail."""
from .spec import BlockGroup, FamilySpec

SPEC = FamilySpec(
    name="Chroma",
    model_classes=("comfy.ldm.chroma.model.Chroma",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt"), skip_attr="skip_mmdit"),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="last", skip_attr="skip_dit"),
    ),
    presets=("chroma",),
)
