"""Qwen-Image and Qwen-Image-Edit: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel (one
stream of image tokens; reference latents of the edit models are appended to it).

'auto': a run with reference latents is Qwen-Image-Edit (the authors' edit table); otherwise the
Qwen-Image table calibrated nearer to the run's step count (40 steps: the original pack's, 50:
the authors' script's)."""
from .flux import has_items
from .spec import BlockGroup, FamilySpec, nearest_steps, steps_of


def variant(model, arg) -> str:
    if has_items(arg("ref_latents")):
        return "qwen_image_edit"
    return nearest_steps(steps_of(arg), ("qwen_image", "qwen_image_50steps"))


SPEC = FamilySpec(
    name="Qwen-Image",
    model_classes=("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",),
    groups=(BlockGroup("double_block", "transformer_blocks", outputs=("img", "txt")),),
    presets=("qwen_image", "qwen_image_edit", "qwen_image_50steps"),
    variant=variant,
)
