"""Wan2.1 VACE: comfy.ldm.wan.model.VaceWanModel. Its hint blocks (vace_blocks) run between the
main blocks, outside the block replacements, looked up through vace_layers_mapping: on skipped
calls that mapping reads as empty, so no hint block runs either."""
from .spec import BlockGroup, FamilySpec
from .wan import size_class

SPEC = FamilySpec(
    name="Wan VACE",
    model_classes=("comfy.ldm.wan.model.VaceWanModel",),
    groups=(BlockGroup("double_block", "blocks", outputs=("img",)),),
    presets=("wan2.1_vace_1.3B", "wan2.1_vace_14B"),
    variant=lambda model, arg: f"wan2.1_vace_{size_class(model)}",
    hint_maps=("vace_layers_mapping",),
    compile_also=("vace_blocks",),
)
