"""HunyuanVideo and HunyuanVideo 1.5: comfy.ldm.hunyuan_video.model.HunyuanVideo.

The single stream is image tokens first, then text, up to ComfyUI 0.8; ComfyUI 0.33 puts the text
first and says where the image tokens are (img_slice), which the engine uses. 'auto': version 1.5
(the same class with a condition-type embedding) has tables for 20 and 40 steps and takes the one
calibrated nearer to the run's step count; version 1 has tables for 720p (720x1280) and 544p
(544x960) and takes the one nearer to the run's pixel area."""
from .flux import MID
from .spec import BlockGroup, Example, FamilySpec, Fixture, nearest_steps, pixels, steps_of

AREA_720P = (720 * 1280 + 544 * 960) // 2  # between the two calibrated sizes


def variant(model, arg) -> str:
    if getattr(model, "cond_type_embedding", None) is not None:
        return nearest_steps(steps_of(arg), ("hunyuan_video1.5", "hunyuan_video1.5_40steps"))
    x = arg("x")
    if x is not None and pixels(x) < AREA_720P:
        return "hunyuan_video_544p"
    return "hunyuan_video"


TINY = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
            hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12],
            theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
            use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
TINY_15 = dict(TINY, in_channels=65, out_channels=32, use_cond_type_embedding=True, vision_in_dim=1152,
               guidance_embed=False, vec_in_dim=None)


SPEC = FamilySpec(
    name="HunyuanVideo",
    model_classes=("comfy.ldm.hunyuan_video.model.HunyuanVideo",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt")),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="first"),
    ),
    presets=("hunyuan_video", "hunyuan_video1.5", "hunyuan_video1.5_40steps", "hunyuan_video_544p"),
    variant=variant,
    fixtures=(
        Fixture("hunyuan_video", "HunyuanVideo", TINY, (1, 16, 3, 16, 16), "hunyuan_video_544p", "img_in", "final_layer",
                pooled_dim=32,
                bench=dict(unet=dict(MID, vec_in_dim=256), latent=(1, 16, 4, 32, 32), patch=(1, 2, 2), hidden=512,
                           cfg=1.0, pooled_dim=256),
                checkpoint=dict(hidden_size=128, num_heads=1, vec_in_dim=768, context_in_dim=4096,
                                axes_dim=[16, 56, 56])),
        Fixture("hunyuan_video1.5", "HunyuanVideo15", TINY_15, (1, 32, 3, 16, 16), "hunyuan_video1.5", "img_in",
                "final_layer", pooled_dim=32),
    ),
    examples=(Example("hunyuanvideo.json", "hunyuanvideo", run="hunyuan_video"),),
)
