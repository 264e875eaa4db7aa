"""Wan2.1 / Wan2.2 text- and image-to-video: comfy.ldm.wan.model.WanModel (one stream of image tokens).

'auto': I2V models take the 480p or 720p table from the latent size of the run; T2V models the
1.3B or 14B table by width; Wan2.2 TI2V-5B is recognised by its 48-channel latent, and takes its
image-to-video table when the run starts from an image (ComfyUI's Wan22ImageToVideoLatent masks
the first frame, so the model gets one timestep per frame). Wan2.2 A14B has the architecture of
Wan2.1 14B, so its experts need the wan2.2 presets chosen explicitly."""
from .spec import BlockGroup, Example, FamilySpec, Fixture

WIDE = 3500  # Wan 1.3B is 1536 wide, Wan2.2 5B 3072, the 14B models 5120
AREA_720P = 600_000  # pixels; between 480x832 (399,360) and 720x1280 (921,600)


def size_class(model) -> str:
    return "14B" if getattr(model, "dim", 0) >= WIDE else "1.3B"


def variant(model, arg) -> str:
    if getattr(model, "model_type", "t2v") in ("i2v", "fl2v"):
        x = arg("x")
        pixels = x.shape[-2] * x.shape[-1] * 64 if x is not None else 0  # Wan2.1 VAE: 8x spatial
        return "wan2.1_i2v_720p_14B" if pixels >= AREA_720P else "wan2.1_i2v_480p_14B"
    if getattr(model, "out_dim", 16) == 48:
        t = arg("timestep")
        return "wan2.2_ti2v_5B_i2v" if t is not None and t.ndim > 1 else "wan2.2_ti2v_5B"
    return f"wan2.1_t2v_{size_class(model)}"


def sequence_tokens(model, arg):
    """Image tokens before raylight's USP split: the latent cut into patches (ComfyUI pads it to the
    patch size); a call with reference or context latents (appended tokens) is not counted."""
    x = arg("x")
    if x is None or x.ndim != 5 or arg("reference_latent") is not None or arg("context_latents") is not None:
        return None
    n = 1
    for size, patch in zip(x.shape[2:], model.patch_size):
        n *= -(-size // patch)
    return n


def wan_tokens(x):
    """patch_embedding output [B, C, T, H, W] -> the blocks' [B, THW, C]."""
    return x.flatten(2).transpose(1, 2)


def i2v_extras(latent, g) -> dict:
    import types

    import torch

    return {"concat_latent_image": torch.randn(latent, generator=g),
            "concat_mask": torch.ones(1, 1, latent[2], latent[3] * 8, latent[4] * 8),
            "clip_vision_output": types.SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, 1280, generator=g))}


TINY = dict(image_model="wan2.1", model_type="t2v", dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=64,
            in_dim=16, out_dim=16, freq_dim=256)
MID = dict(dim=512, ffn_dim=2048, num_heads=8, num_layers=8, text_dim=512)
LOADABLE = dict(dim=128, text_dim=4096, ffn_dim=256)  # ComfyUI detects Wan from 128 wide on (text_dim fixed)
BENCH = dict(unet=MID, latent=(1, 16, 4, 32, 32), patch=(1, 2, 2), hidden=512, cfg=4.0)


def fixture(name, comfy_config, unet, latent, preset, **kw) -> Fixture:
    return Fixture(name, comfy_config, unet, latent, preset, "patch_embedding", "head", tokens=wan_tokens, **kw)


SPEC = FamilySpec(
    name="Wan",
    model_classes=("comfy.ldm.wan.model.WanModel",),
    groups=(BlockGroup("double_block", "blocks", outputs=("img",)),),
    presets=("wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B",
             "wan2.2_t2v_14B", "wan2.2_i2v_14B", "wan2.2_ti2v_5B", "wan2.2_ti2v_5B_i2v"),
    variant=variant,
    sequence_parallel=sequence_tokens,
    fixtures=(
        fixture("wan_t2v", "WAN21_T2V", TINY, (1, 16, 3, 16, 16), "wan2.1_t2v_1.3B", bench=BENCH,
                checkpoint=LOADABLE),
        fixture("wan_i2v", "WAN21_I2V", dict(TINY, model_type="i2v", in_dim=36), (1, 16, 3, 16, 16),
                "wan2.1_i2v_480p_14B", extras=i2v_extras),
        fixture("wan22_5b", "WAN22_T2V", dict(TINY, in_dim=48, out_dim=48), (1, 48, 3, 16, 16), "wan2.2_ti2v_5B"),
    ),
    examples=(Example("wan2.1_t2v.json", "wan21_t2v", run="wan_t2v"), Example("wan2.1_i2v.json", "wan21_i2v"),
              Example("wan2.1_t2v_compare.json", "wan21_t2v_compare", run="wan_t2v"),
              Example("wan2.2_t2v_a14b.json", "wan22_t2v_a14b")),
)
