"""HunyuanVideo and HunyuanVideo 1.5: comfy.ldm.hunyuan_video.model.HunyuanVideo.

Unlike Flux, the single stream puts the image tokens first, then the text. 'auto': version 1.5
(the same class with a condition-type embedding) has tables for 20 and 40 steps and takes the one
calibrated nearer to the run's step count; version 1 has tables for 720p (720x1280) and 544p
(544x960) and takes the one nearer to the run's pixel area."""
from .spec import BlockGroup, FamilySpec, nearest_steps, pixels, steps_of

AREA_720P = (720 * 1280 + 544 * 960) // 2  # between the two calibrated sizes


def variant(model, arg) -> str:
    if getattr(model, "cond_type_embedding", None) is not None:
        return nearest_steps(steps_of(arg), ("hunyuan_video1.5", "hunyuan_video1.5_40steps"))
    x = arg("x")
    if x is not None and pixels(x) < AREA_720P:
        return "hunyuan_video_544p"
    return "hunyuan_video"


SPEC = FamilySpec(
    name="HunyuanVideo",
    model_classes=("comfy.ldm.hunyuan_video.model.HunyuanVideo",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt")),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="first"),
    ),
    presets=("hunyuan_video", "hunyuan_video1.5", "hunyuan_video1.5_40steps", "hunyuan_video_544p"),
    variant=variant,
)
