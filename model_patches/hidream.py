"""HiDream I1 (full, dev, fast) and HiDream E1 (edit): comfy.ldm.hidream.model.HiDreamImageTransformer2DModel
(supported_models.HiDream; the same loop in ComfyUI 0.8.0 and 0.33).

Its block loop (_forward) never reads patches_replace, so the blocks are reached by the block-list swap
(hook "block_swap"). The elements of both ModuleLists are HiDreamImageBlock, which hands its arguments on
to the real block (HiDreamImageTransformerBlock / HiDreamImageSingleTransformerBlock); the loop calls them
with keywords only:
- double_stream_blocks: block(image_tokens=, image_tokens_masks=, text_tokens=[initial text, this block's
  llama layer], adaln_input=, rope=, transformer_options=) -> (image tokens, text tokens); the loop keeps
  the initial text's part of the text tokens.
- single_stream_blocks: one stream [image tokens, initial text]; each block gets it with this block's
  llama layer appended, block(image_tokens=[image, initial text, llama], ...) -> a tensor of the same
  tokens, cut back after the block. The image tokens come first (image_tokens "first"); the head's
  image-token count (double_stream_blocks[0]'s image_tokens) is where they end.
After the blocks the loop keeps the image tokens and runs final_layer on them.

Token layout checked in the loop of both versions: image_tokens_masks is always None (_forward calls
patchify without img_sizes), so no padding tokens sit among the image tokens; a latent of any aspect is
padded to the patch size and all its tokens are image tokens. HiDream E1 (edit) concatenates the
reference latent (image_cond) to the noise along the width before patchifying, so its reference tokens
are part of the image tokens from the first block on and are cached with them (as Kontext's). The MoE
feed-forward routes per token and changes no token count or order. ComfyUI 0.33's HiDream-O1
(supported_models.HiDreamO1) is another class (comfy.ldm.hidream_o1.model.HiDreamO1Transformer, a
pixel-space transformer with another loop): not matched, refused at the node.

There is NO published MagCache table for HiDream: 'auto' self-calibrates on a model's first run."""
from .spec import SELF_CALIBRATED_INPUTS, SELF_CALIBRATED_NOTE, BlockGroup, Example, FamilySpec, Fixture

LLAMA_LAYERS, LLAMA_TOKENS, LLAMA_DIM = 4, 6, 32  # the tiny llama3 hidden states (ComfyUI: 32 layers of 4096)


def llama3(latent, g) -> dict:
    """What ComfyUI's HiDream text encoder adds to the conditioning beside the t5 context and the pooled
    clip-l + clip-g output: every llama3 layer's hidden states, [batch, layers, tokens, width]
    (model_base.HiDream reads conditioning_llama3)."""
    import torch

    return {"conditioning_llama3": torch.randn(1, LLAMA_LAYERS, LLAMA_TOKENS, LLAMA_DIM, generator=g)}


def llama_layers(blocks: int) -> list:
    """Which llama3 layer each block reads (as model_detection's list: the last layer repeated at the end)."""
    return [min(i, LLAMA_LAYERS - 1) for i in range(blocks)]


# A tiny HiDream of ComfyUI's class (sizes ours; the keys are those model_detection gives a HiDream checkpoint).
TINY = dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=16, num_layers=2, num_single_layers=2,
            attention_head_dim=16, num_attention_heads=2, caption_channels=[64, LLAMA_DIM], text_emb_dim=32,
            num_routed_experts=3, num_activated_experts=2, axes_dims_rope=[8, 4, 4], max_resolution=[128, 128],
            llama_layers=llama_layers(4))
# The benchmark's size (ours): width 512, 2 + 2 blocks with HiDream's 4 experts / 2 active (65M parameters:
# the experts make a block 3-4x a Flux block), 1024 image tokens.
BENCH = dict(unet=dict(attention_head_dim=64, num_attention_heads=8, caption_channels=[512, LLAMA_DIM],
                       num_routed_experts=4, axes_dims_rope=[32, 16, 16]),
             latent=(1, 16, 64, 64), patch=(2, 2), hidden=512, cfg=5.0, pooled_dim=32)

SPEC = FamilySpec(
    name="HiDream",
    model_classes=("comfy.ldm.hidream.model.HiDreamImageTransformer2DModel",),
    groups=(BlockGroup("double_block", "double_stream_blocks", outputs=("img", "txt"),
                       swap_args=("image_tokens", "text_tokens")),
            BlockGroup("single_block", "single_stream_blocks", image_tokens="first", swap_args=("image_tokens",))),
    presets=(),  # no published table: self-calibration
    hook="block_swap",
    fixtures=(Fixture("hidream", "HiDream", TINY, (1, 16, 16, 16), None, "x_embedder", "final_layer", text_dim=64,
                      pooled_dim=32, extras=llama3, settings=(0.24, 0.2, 3), bench=BENCH),),
    examples=(Example("hidream_i1.json", "text_to_image", dict(
        unet="hidream_i1_full_fp16.safetensors",
        clip=("QuadrupleCLIPLoader", ["clip_l_hidream.safetensors", "clip_g_hidream.safetensors",
                                      "t5xxl_fp8_e4m3fn_scaled.safetensors",
                                      "llama_3.1_8b_instruct_fp8_scaled.safetensors"]),
        vae="ae.safetensors", model_type="auto", settings=SELF_CALIBRATED_INPUTS, steps=30, cfg=5.0,
        sampling=("ModelSamplingSD3", [3.0]), negative="blurry", save=("SaveImage", ["MagCache_hidream_i1"]),
        prompt="a lighthouse on a cliff at sunset, oil painting",
        note="MagCache for HiDream I1 full (dev and fast the same way with their files and ComfyUI's settings for "
             "them: dev 28 steps, cfg 1, lcm, shift 6): there is no published MagCache table for HiDream, so "
             "model_type auto self-calibrates: the first run of a model computes every step and saves its ratios "
             "as a profile, later runs use it. " + SELF_CALIBRATED_NOTE
             + ". Files: models/diffusion_models/hidream_i1_full_fp16.safetensors, "
             "models/text_encoders/clip_l_hidream.safetensors + clip_g_hidream.safetensors + "
             "t5xxl_fp8_e4m3fn_scaled.safetensors + llama_3.1_8b_instruct_fp8_scaled.safetensors, "
             "models/vae/ae.safetensors.")),),
)
