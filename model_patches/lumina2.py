"""Lumina 2 and Z-Image (Turbo, Base): comfy.ldm.lumina.model.NextDiT (supported_models.Lumina2, ZImage).

Its `layers` loop never reads patches_replace, so the blocks are reached by the block-list swap
(hook "block_swap"): layer(hidden, mask, freqs_cis, adaln_input, ..., transformer_options=...).
noise_refiner and context_refiner run before the loop and are not part of the cached span: the head
is layers[0], the tail layers[-1].

Token layout: the layers run on one joint stream, [caption tokens (+ SigLIP and reference image tokens
for Z-Image Omni), image tokens (padded to pad_tokens_multiple on Z-Image)]. The block sees only that
stream; ComfyUI hands it no image-token slice (cap_size is local to _forward). So the cached residual is
the WHOLE joint stream's (image_tokens "all"): on a skipped call every token, caption tokens included,
is head input + residual, and the calibrated ratios average over caption and image tokens alike. The
final layer is per token and unpatchify reads only the image tokens, so the image the model returns is
what an image-token-only cache would give; only the measured ratios include the caption tokens.

There is NO published MagCache table for either model: 'auto' self-calibrates on a model's first run."""
from .spec import SELF_CALIBRATED_INPUTS, SELF_CALIBRATED_NOTE, BlockGroup, Example, FamilySpec, Fixture


def head_input(dm, put) -> list:
    """Hooks that hand the head's input (refined caption tokens, then refined image tokens) to put()."""
    caption = {}

    def on_caption(module, args, output):
        caption["t"] = output.detach()

    def on_image(module, args, output):
        put(__import__("torch").cat((caption.pop("t"), output.detach()), dim=1))

    return [dm.context_refiner[-1].register_forward_hook(on_caption),
            dm.noise_refiner[-1].register_forward_hook(on_image)]


# Tiny instances of ComfyUI's NextDiT (sizes ours; the other keys are what model_detection gives).
LUMINA2 = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, n_layers=3, n_refiner_layers=1,
               n_heads=2, n_kv_heads=2, multiple_of=16, ffn_dim_multiplier=4.0, qk_norm=True, cap_feat_dim=64,
               axes_dims=[8, 12, 12], axes_lens=[300, 512, 512], rope_theta=10000.0)
# Z-Image's modulation takes a 256-wide timestep embedding: it needs dim >= 256.
ZIMAGE = dict(LUMINA2, dim=256, n_heads=8, n_kv_heads=8, ffn_dim_multiplier=8.0 / 3.0, axes_lens=[1536, 512, 512], rope_theta=256.0,
              z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32)


# The benchmark's Z-Image (ours): 1024 image tokens of width 512, 8 layers.
BENCH = dict(unet=dict(dim=512, n_heads=8, n_kv_heads=8, n_layers=8, cap_feat_dim=512, axes_dims=[16, 24, 24]),
             latent=(1, 16, 64, 64), patch=(2, 2), hidden=512, cfg=1.0)
# A checkpoint ComfyUI's loader detects as Z-Image: it knows Z-Image by its width (3840, 30 heads), and the
# refiners keep their default depth (2 each): one layer makes 0.9B parameters, so the server run is slow.
LOADABLE_ZIMAGE = dict(dim=3840, n_heads=30, n_kv_heads=30, axes_dims=[32, 48, 48], n_layers=1, n_refiner_layers=2,
                       multiple_of=256)


def fixture(name, comfy_config, unet, bench=None, **kw) -> Fixture:
    return Fixture(name, comfy_config, unet, (1, 16, 16, 16), None, "x_embedder", "final_layer",
                   head_input=head_input, settings=(0.24, 0.2, 3), bench=bench or {}, **kw)


SPEC = FamilySpec(
    name="Lumina 2 / Z-Image",
    model_classes=("comfy.ldm.lumina.model.NextDiT",),
    groups=(BlockGroup("double_block", "layers", outputs=("img",), image_tokens="all"),),
    presets=(),  # no published table: self-calibration
    hook="block_swap",
    fixtures=(fixture("zimage", "ZImage", ZIMAGE, BENCH, checkpoint=LOADABLE_ZIMAGE, slow=True),
              fixture("lumina2", "Lumina2", LUMINA2)),
    examples=(Example("z_image_turbo.json", "text_to_image", dict(
        unet="z_image_turbo_bf16.safetensors", clip=("CLIPLoader", ["qwen_3_4b.safetensors", "lumina2", "default"]),
        vae="ae.safetensors", model_type="auto", settings=SELF_CALIBRATED_INPUTS, steps=9, cfg=1.0,
        sampling=("ModelSamplingAuraFlow", [3.0]), sampler="res_multistep", save=("SaveImage", ["MagCache_z_image"]),
        prompt="a lighthouse on a cliff at sunset, oil painting",
        note="MagCache for Z-Image Turbo (Lumina 2 and Z-Image Base the same way with their files): there is no "
             "published MagCache table, so model_type auto self-calibrates: the first run of a model computes every "
             "step and saves its ratios as a profile, later runs use it. " + SELF_CALIBRATED_NOTE
             + "; at 9 steps expect few skips. Files: models/diffusion_models/"
             "z_image_turbo_bf16.safetensors, models/text_encoders/qwen_3_4b.safetensors, models/vae/ae.safetensors."),
        run="zimage"),),
)
