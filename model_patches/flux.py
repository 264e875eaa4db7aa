"""Flux (dev, schnell) and Flux-Kontext: comfy.ldm.flux.model.Flux.

Double blocks carry the image stream alone (Kontext's reference tokens are appended to it, so
they are part of the cached hidden state, as in the original); single blocks carry text tokens
first, then image tokens.

'auto': a run with reference latents is Kontext, whose tables exist for 20 steps (the original
pack's) and 28 steps (the authors' script); the one calibrated nearer to the run's step count."""
from .spec import BlockGroup, FamilySpec, nearest_steps, steps_of

KONTEXT = ("flux_kontext", "flux_kontext_28steps")


def has_items(x) -> bool:
    return x is not None and len(x) > 0


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
)
