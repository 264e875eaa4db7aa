"""Qwen-Image and Qwen-Image-Edit: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel (one
stream of image tokens; reference latents of the edit models are appended to it).

'auto': a run with reference latents is Qwen-Image-Edit (the authors' edit table); otherwise the
Qwen-Image table calibrated nearer to the run's step count (40 steps: the original pack's, 50:
the authors' script's)."""
from .flux import has_items
from .spec import BlockGroup, Example, FamilySpec, Fixture, nearest_steps, steps_of


def variant(model, arg) -> str:
    if has_items(arg("ref_latents")):
        return "qwen_image_edit"
    return nearest_steps(steps_of(arg), ("qwen_image", "qwen_image_50steps"))


def sequence_tokens(model, arg):
    """Image tokens before raylight's USP split: the latent's and every reference latent's patches
    (ComfyUI pads each to the patch size), in that order."""
    latents = [arg("x")] + list(arg("ref_latents") or [])
    if any(x is None or x.ndim != 5 for x in latents):
        return None
    p = model.patch_size
    return sum(x.shape[2] * -(-x.shape[3] // p) * -(-x.shape[4] // p) for x in latents)


TINY = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=2,
            attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 12, 12))


SPEC = FamilySpec(
    name="Qwen-Image",
    model_classes=("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",),
    groups=(BlockGroup("double_block", "transformer_blocks", outputs=("img", "txt")),),
    presets=("qwen_image", "qwen_image_edit", "qwen_image_50steps"),
    variant=variant,
    sequence_parallel=sequence_tokens,
    fixtures=(Fixture(
        "qwen_image", "QwenImage", TINY, (1, 16, 1, 16, 16), "qwen_image", "img_in", "norm_out",
        bench=dict(unet=dict(attention_head_dim=64, num_attention_heads=8, num_layers=8, joint_attention_dim=512,
                             axes_dims_rope=(16, 24, 24)), latent=(1, 16, 1, 64, 64), patch=(1, 2, 2), hidden=512,
                   cfg=4.0)),),
    examples=(Example("qwen_image.json", "qwen_image"), Example("qwen_image_edit.json", "qwen_image_edit")),
)
