"""Qwen-Image: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel (one stream of image tokens;
reference latents of the edit models are appended to it)."""
from .spec import BlockGroup, FamilySpec

SPEC = FamilySpec(
    name="Qwen-Image",
    model_classes=("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",),
    groups=(BlockGroup("double_block", "transformer_blocks", outputs=("img", "txt")),),
    presets=("qwen_image",),
)
