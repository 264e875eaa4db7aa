"""Kandinsky 5 (Video Lite / Pro T2V and I2V, Image Lite): comfy.ldm.kandinsky5.model.Kandinsky5.

ComfyUI loads the video models (supported_models.Kandinsky5) and the image models
(supported_models.Kandinsky5Image) into this one class; Kandinsky5.forward_orig is the same in ComfyUI
0.8.0 and 0.33.0. Its loop over `visual_transformer_blocks` looks up patches_replace["dit"]
[("double_block", i)] (args {"x", "context", "time_embed", "freqs", "transformer_options"}, ["x"] back),
but the `original_block` it hands a replacement calls the block as block(x=..., context=...), keywords
TransformerDecoderBlock.forward(visual_embed, text_embed, time_embed, freqs, ...) does not take: in both
versions any replacement that runs the original block fails with a TypeError (measured). So the blocks
are reached by the block-list swap (hook "block_swap"), through the loop's other branch, which calls
block(visual_embed, context, time_embed, freqs=..., transformer_options=...) and takes the hidden state
back. Should ComfyUI fix the keywords, the loop still calls blocks without replacements this way.

Outside the cached span: the text embedding, the `text_transformer_blocks` (they refine the text before
the visual loop, run on every call, skipped or not, and feed the visual blocks' cross-attention), the
time and pooled-text embeddings, the visual embedding, and after the loop `out_layer` (modulated norm,
projection, unpatchify). The head is visual_transformer_blocks[0], the tail the last one (Video Lite: 32
visual blocks, 2 text blocks, as the class defaults; ComfyUI counts them from each checkpoint).

Token layout: the visual blocks see one stream, the patch-embedded latent [B, T, H, W, C] flattened to
[B, T*H*W, C]; text reaches them by cross-attention only, so every token of the stream is an image token
(image_tokens "all"). Image Lite runs the same blocks on one latent frame.

Image-to-video (Kandinsky5ImageToVideo): the conditioning carries `time_dim_replace`, the clean latent of
the start image, which _forward writes over the first latent frames of the model input before the visual
embedding (and a concat mask marking them). Those frames' tokens stay in the cached stream like every
other token: the whole stream's residual is cached and measured, and on a skipped step they too leave
the tail as head input (re-embedded from the clean frames) + cached residual. Nothing is special-cased;
the tests run text-to-video, image-to-video (these conds) and text-to-image.

There is NO published MagCache table for Kandinsky 5: 'auto' self-calibrates on a model's first run."""
from .spec import SELF_CALIBRATED_INPUTS, SELF_CALIBRATED_NOTE, BlockGroup, Example, FamilySpec, Fixture

# Tiny instances of ComfyUI's class (sizes ours; in_text_dim / in_text_dim2 are the widths of the tiny text and
# pooled conditioning, 3584 (Qwen2.5-VL) and 768 (CLIP-L) in the real models).
# head_dim = sum(axes_dims) = 32: two heads at model_dim 64. The video model's input is the 16-channel
# latent + ComfyUI's concat_cond (16 image + 1 mask channels): 33 channels x a 1x2x2 patch = 132.
VIDEO = dict(image_model="kandinsky5", in_visual_dim=16, out_visual_dim=16, in_text_dim=64, in_text_dim2=32,
             time_dim=64, model_dim=64, ff_dim=128, visual_embed_dim=132, patch_size=(1, 2, 2), num_text_blocks=1,
             num_visual_blocks=3, axes_dims=(8, 12, 12))
# Image Lite: no concat_cond (16 channels x 1x2x2 = 64), rope not rescaled (as model_detection sets it).
IMAGE = dict(VIDEO, visual_embed_dim=64, rope_scale_factor=(1.0, 1.0, 1.0))
# The benchmark's size (ours): hidden 512, 8 heads of 64, 8 visual blocks (58.9M parameters), 1024 image tokens,
# the benchmark's text and pooled widths; CFG as the SFT models use it.
BENCH = dict(unet=dict(model_dim=512, ff_dim=2048, time_dim=512, num_visual_blocks=8, axes_dims=(16, 24, 24),
                       in_text_dim=512, in_text_dim2=512),
             latent=(1, 16, 4, 32, 32), patch=(1, 2, 2), hidden=512, cfg=5.0, pooled_dim=512)
SETTINGS = (0.24, 0.2, 3)  # ours: no published setting exists


def i2v_extras(latent, g) -> dict:
    """What Kandinsky5ImageToVideo adds to both conds: the start image's latent (one latent frame) and
    the concat mask that is 0 on it."""
    import torch

    mask = torch.ones(1, 1, *latent[2:])
    mask[:, :, :1] = 0.0
    return {"time_dim_replace": torch.randn(latent[0], latent[1], 1, *latent[3:], generator=g), "concat_mask": mask}


def fixture(name: str, comfy_config: str, unet: dict, latent: tuple, **kw) -> Fixture:
    return Fixture(name, comfy_config, unet, latent, None, "visual_embeddings", "out_layer", pooled_dim=32,
                   settings=SETTINGS, **kw)


SPEC = FamilySpec(
    name="Kandinsky 5",
    model_classes=("comfy.ldm.kandinsky5.model.Kandinsky5",),
    groups=(BlockGroup("double_block", "visual_transformer_blocks", outputs=("x",), key="x"),),
    presets=(),  # no published table: self-calibration
    hook="block_swap",  # ComfyUI's original_block for this loop passes keywords the block does not take
    fixtures=(fixture("kandinsky5", "Kandinsky5", VIDEO, (1, 16, 3, 16, 16), bench=BENCH),
              fixture("kandinsky5_i2v", "Kandinsky5", VIDEO, (1, 16, 3, 16, 16), extras=i2v_extras),
              fixture("kandinsky5_image", "Kandinsky5Image", IMAGE, (1, 16, 16, 16))),
    examples=(Example("kandinsky5_t2v_lite.json", "text_to_image", dict(
        unet="kandinsky5lite_t2v_sft_5s.safetensors",
        clip=("DualCLIPLoader", ["qwen_2.5_vl_7b_fp8_scaled.safetensors", "clip_l.safetensors", "kandinsky5",
                                 "default"]),
        vae="hunyuan_video_vae_bf16.safetensors", model_type="auto", settings=SELF_CALIBRATED_INPUTS, steps=50, cfg=5.0,
        latent=("EmptyHunyuanLatentVideo", [768, 512, 121, 1]),
        decode=("VAEDecodeTiled", [256, 64, 64, 8]),
        save=("SaveAnimatedWEBP", ["MagCache_kandinsky5", 24.0, False, 90, "default"]),
        prompt="a red fox runs through a snowy forest at dawn, cinematic",
        negative="static, blurry, low quality",
        note="MagCache for Kandinsky 5.0 T2V Lite (SFT 5s; the 10s, I2V and Image Lite models the same way with "
             "their files): there is no published MagCache table for Kandinsky 5, so model_type auto "
             "self-calibrates: the first run of a model computes every step and saves its ratios as a profile, "
             "later runs with the same sampler, scheduler and CFG use it. " + SELF_CALIBRATED_NOTE
             + "; lower thresh or K if motion or detail suffers. "
             "50 steps with CFG 5 are ours too (the SFT model's 100 model calls per video on ComfyUI's "
             "Kandinsky 5 page). Files: models/diffusion_models/kandinsky5lite_t2v_sft_5s.safetensors, "
             "models/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors + clip_l.safetensors, "
             "models/vae/hunyuan_video_vae_bf16.safetensors.")),),
)
