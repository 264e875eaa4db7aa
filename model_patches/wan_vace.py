"""Wan2.1 VACE: comfy.ldm.wan.model.VaceWanModel. Its hint blocks (vace_blocks) run between the
main blocks, outside the block replacements, looked up through vace_layers_mapping: on skipped
calls that mapping reads as empty, so no hint block runs either."""
from .spec import BlockGroup, Example, FamilySpec
from .wan import BENCH, LOADABLE, MID, TINY, fixture, size_class


def vace_extras(latent, g) -> dict:
    """VACE control video: 16 latent + 16 inactive channels, 8x8 mask cells."""
    import torch

    return {"vace_frames": [torch.randn(1, 32, *latent[2:], generator=g)],
            "vace_mask": [torch.ones(1, 64, *latent[2:])], "vace_strength": [1.0]}


SPEC = FamilySpec(
    name="Wan VACE",
    model_classes=("comfy.ldm.wan.model.VaceWanModel",),
    groups=(BlockGroup("double_block", "blocks", outputs=("img",)),),
    presets=("wan2.1_vace_1.3B", "wan2.1_vace_14B"),
    variant=lambda model, arg: f"wan2.1_vace_{size_class(model)}",
    hint_maps=("vace_layers_mapping",),
    compile_also=("vace_blocks",),
    fixtures=(fixture(
        "wan_vace", "WAN21_Vace", dict(TINY, model_type="vace", vace_layers=1, vace_in_dim=96), (1, 16, 3, 16, 16),
        "wan2.1_vace_1.3B", extras=vace_extras, bench=dict(BENCH, unet=dict(MID, vace_layers=4)),
        checkpoint=LOADABLE),),
    examples=(Example("wan2.1_vace.json", "wan21_vace", run="wan_vace"),),
)
