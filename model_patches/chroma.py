"""Chroma: comfy.ldm.chroma.model.Chroma. Flux-like layout (text first in the single stream);
blocks listed in skip_mmdit / skip_dit never run, so they are neither head nor tail."""
from .flux import LOADABLE, MID
from .spec import BlockGroup, Example, FamilySpec, Fixture

TINY = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=64, hidden_size=64, mlp_ratio=4.0,
            num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12], theta=10000, patch_size=2,
            qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=64, n_layers=2, txt_ids_dims=[], vec_in_dim=None)


SPEC = FamilySpec(
    name="Chroma",
    model_classes=("comfy.ldm.chroma.model.Chroma",),
    groups=(
        BlockGroup("double_block", "double_blocks", outputs=("img", "txt"), skip_attr="skip_mmdit"),
        BlockGroup("single_block", "single_blocks", outputs=("img",), image_tokens="last", skip_attr="skip_dit"),
    ),
    presets=("chroma",),
    fixtures=(Fixture(
        "chroma", "Chroma", TINY, (1, 16, 16, 16), "chroma", "img_in", "final_layer", pooled_dim=32,
        bench=dict(unet=dict(MID, out_dim=512, hidden_dim=256), latent=(1, 16, 64, 64), patch=(2, 2), hidden=512,
                   cfg=4.0),
        checkpoint=dict(LOADABLE, in_dim=64, out_dim=3072, hidden_dim=5120, n_layers=5), slow=True),),
    examples=(Example("chroma.json", "chroma", run="chroma"),
              Example("chroma_calibration.json", "chroma_calibration")),
)
