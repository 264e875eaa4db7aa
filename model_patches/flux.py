"""Flux (dev, schnell) and Flux-Kontext: comfy.ldm.flux.model.Flux.

Double blocks carry the image stream alone (Kontext's reference tokens are appended to it, so
they are part of the cached hidden state, as in the original); single blocks carry text tokens
first, then image tokens.

'auto': a run with reference latents is Kontext, whose tables exist for 20 steps (the original
pack's) and 28 steps (the authors' script); the one calibrated nearer to the run's step count.
Flux.2 shares the class (params.global_modulation): it is its own family (flux2.py), refused here."""
from .spec import BlockGroup, Example, FamilySpec, Fixture, nearest_steps, steps_of

KONTEXT = ("flux_kontext", "flux_kontext_28steps")


def has_items(x) -> bool:
    return x is not None and len(x) > 0


# Tiny and benchmark-size models of ComfyUI's Flux class (sizes ours); a loadable checkpoint needs
# hidden 3072 (ComfyUI's detection), so the server run is slow.
TINY = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64, hidden_size=64,
            mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12], theta=10000,
            patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])
MID = dict(hidden_size=512, num_heads=8, axes_dim=[16, 24, 24], depth=4, depth_single_blocks=8, context_in_dim=512)
LOADABLE = dict(hidden_size=3072, num_heads=24, axes_dim=[16, 56, 56], depth=1, depth_single_blocks=1,
                context_in_dim=4096)


def variant(model, arg) -> str:
    if not has_items(arg("ref_latents")):
        return "flux"
    return nearest_steps(steps_of(arg), KONTEXT)


SPEC = FamilySpec(
    name="Flux",
    model_classes=("comfy.ldm.flux.model.Flux",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt")),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="last"),
    ),
    presets=("flux", "flux_kontext", "flux_kontext_28steps"),
    variant=variant,
    retention_round_half_up=True,
    accepts=lambda model: not getattr(getattr(model, "params", None), "global_modulation", False),  # not Flux.2
    fixtures=(Fixture(
        "flux", "Flux", TINY, (1, 16, 16, 16), "flux", "img_in", "final_layer", pooled_dim=32, guidance=3.5,
        bench=dict(unet=dict(MID, vec_in_dim=256), latent=(1, 16, 64, 64), patch=(2, 2), hidden=512, cfg=1.0,
                   pooled_dim=256),
        checkpoint=dict(LOADABLE, vec_in_dim=768), slow=True),),
    examples=(Example("flux.json", "flux", run="flux"), Example("flux_kontext.json", "flux_kontext"),
              Example("calibration.json", "calibration"),
              Example("flux_kontext_calibration.json", "flux_kontext_calibration")),
)
