"""HunyuanVideo and HunyuanVideo 1.5: comfy.ldm.hunyuan_video.model.HunyuanVideo.

Unlike Flux, the single stream puts the image tokens first, then the text. Version 1.5 is the same
class with a condition-type embedding; its tables exist for 20 and 40 steps, and 'auto' takes the
one calibrated nearer to the run's step count."""
from .spec import BlockGroup, FamilySpec, steps_of


def variant(model, arg) -> str:
    if getattr(model, "cond_type_embedding", None) is not None:
        return "hunyuan_video1.5_40steps" if steps_of(arg) > 30 else "hunyuan_video1.5"
    return "hunyuan_video"


SPEC = FamilySpec(
    name="HunyuanVideo",
    model_classes=("comfy.ldm.hunyuan_video.model.HunyuanVideo",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt")),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="first"),
    ),
    presets=("hunyuan_video", "hunyuan_video1.5", "hunyuan_video1.5_40steps"),
    variant=variant,
)
