"""Flux.2 (dev, Klein): ComfyUI loads it into Flux.1's class, comfy.ldm.flux.model.Flux, with
`params.global_modulation = True` (supported_models.Flux2, model_base.Flux2; ComfyUI 0.8.0 and 0.33).

The block loop is Flux.1's (patches_replace["dit"], double blocks on the image stream, single blocks
on [text, image]), so the groups are Flux.1's. What differs is the weights and the modulation, and
there is NO published MagCache table for Flux.2: 'auto' self-calibrates on the first run of a model
(see engine.SelfCalibration), and Flux.1's tables are never read on it (each spec's `accepts`)."""
from .flux import SPEC as FLUX1
from .spec import SELF_CALIBRATED_INPUTS, SELF_CALIBRATED_NOTE, Example, FamilySpec, Fixture


def is_flux2(model) -> bool:
    return bool(getattr(getattr(model, "params", None), "global_modulation", False))


# Tiny Flux.2 of ComfyUI's class (sizes ours): the keys model_detection gives a Flux.2 checkpoint
# (axes 4 x 8 over 2 heads of 32, patch 1, 128 latent channels, no vector input, no biases).
# ComfyUI 0.8.0's model_base.Flux reads pooled_output even without a vector input: the conds carry one.
TINY = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=64,
            hidden_size=64, mlp_ratio=3.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 8, 8, 8],
            theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, txt_ids_dims=[3],
            global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
            ref_index_scale=10.0)
MID = dict(hidden_size=512, num_heads=8, axes_dim=[16, 16, 16, 16], depth=4, depth_single_blocks=8,
           context_in_dim=512)  # the benchmark's size (ours)
# A checkpoint ComfyUI's loader detects as Flux.2 (server test): heads of 128 over axes 4 x 32. ComfyUI 0.33
# derives the head count from the width; 0.8.0 fixes it at 48 (hidden 6144, 2B+ parameters: not run there).
LOADABLE = dict(hidden_size=256, num_heads=2, axes_dim=[32, 32, 32, 32])

SPEC = FamilySpec(
    name="Flux.2",
    model_classes=FLUX1.model_classes,
    groups=FLUX1.groups,
    presets=(),  # no published table: self-calibration
    retention_round_half_up=FLUX1.retention_round_half_up,
    accepts=is_flux2,
    fixtures=(Fixture("flux2", "Flux2", TINY, (1, 128, 8, 8), None, "img_in", "final_layer", guidance=3.5,
                      pooled_dim=32, settings=(0.24, 0.2, 3), text_pad=512, checkpoint=LOADABLE,
                      bench=dict(unet=MID, latent=(1, 128, 32, 32), patch=(1, 1), hidden=512, cfg=1.0, pooled_dim=32)),),
    examples=(Example("flux2.json", "text_to_image", dict(
        unet="flux2_dev_fp8mixed.safetensors", clip=("CLIPLoader", ["mistral_3_small_flux2_bf16.safetensors", "flux2",
                                                                     "default"]),
        vae="flux2-vae.safetensors", model_type="auto", settings=SELF_CALIBRATED_INPUTS, steps=20, cfg=1.0, guidance=4.0,
        latent=("EmptyFlux2LatentImage", [1024, 1024, 1]), save=("SaveImage", ["MagCache_flux2"]),
        prompt="a red fox in a snowy forest at dawn, photograph",
        note="MagCache for Flux.2 (dev; Klein the same way with its own files): there is no published MagCache "
             "table for Flux.2, so model_type auto self-calibrates: the first run of a model computes every step "
             "and saves its ratios as a profile, later runs use it. " + SELF_CALIBRATED_NOTE
             + ". Files: models/diffusion_models/flux2_dev_fp8mixed."
             "safetensors, models/text_encoders/mistral_3_small_flux2_bf16.safetensors, "
             "models/vae/flux2-vae.safetensors."), run="flux2"),),
)
