"""Real ComfyUI, tiny real models, CPU: helpers for the integration layer (and the demo).

Nothing of ComfyUI is copied: its own classes are built with small configs and random weights."""
from __future__ import annotations

import contextlib
import logging
import sys
import types
from pathlib import Path

import torch

FLUX = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
            hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12],
            theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])


def setup_comfy(path: Path, sdpa: bool = False) -> None:
    """Make `import comfy` work in library mode on CPU (sdpa: PyTorch attention, faster on mid-size models)."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    for name in ("torchvision", "torchaudio"):
        try:
            __import__(name)
        except Exception:
            # No wheel of it loads beside torch's CPU build; ComfyUI imports it at module level on
            # paths MagCache never runs. The stand-ins import, and raise if anything uses them.
            standins = str(Path(__file__).resolve().parents[1] / "scripts" / "standins")
            if standins not in sys.path:
                sys.path.append(standins)
            sys.modules.pop(name, None)
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported
    args.use_pytorch_cross_attention = args.use_pytorch_cross_attention or sdpa
    import comfy.model_management  # noqa: F401


CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=64, hidden_size=64,
              mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12], theta=10000,
              patch_size=2, qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=64, n_layers=2, txt_ids_dims=[],
              vec_in_dim=None)
HUNYUAN_VIDEO = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
                     hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2,
                     axes_dim=[8, 12, 12], theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True,
                     byt5=False, meanflow=False, use_cond_type_embedding=False, vision_in_dim=None,
                     meanflow_sum=False)
HUNYUAN_VIDEO_15 = dict(HUNYUAN_VIDEO, in_channels=65, out_channels=32, use_cond_type_embedding=True,
                        vision_in_dim=1152, guidance_embed=False, vec_in_dim=None)
WAN = dict(image_model="wan2.1", model_type="t2v", dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=64,
           in_dim=16, out_dim=16, freq_dim=256)
WAN_I2V = dict(WAN, model_type="i2v", in_dim=36)
WAN_VACE = dict(WAN, model_type="vace", vace_layers=1, vace_in_dim=96)
WAN22_5B = dict(WAN, in_dim=48, out_dim=48)
QWEN_IMAGE = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                  attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 12, 12))

# name -> (comfy.supported_models class, unet config, latent shape, conditioning extras builder)
TINY = {
    "flux": ("Flux", FLUX, (1, 16, 16, 16)),
    "chroma": ("Chroma", CHROMA, (1, 16, 16, 16)),
    "hunyuan_video": ("HunyuanVideo", HUNYUAN_VIDEO, (1, 16, 3, 16, 16)),
    "hunyuan_video1.5": ("HunyuanVideo15", HUNYUAN_VIDEO_15, (1, 32, 3, 16, 16)),
    "wan_t2v": ("WAN21_T2V", WAN, (1, 16, 3, 16, 16)),
    "wan_i2v": ("WAN21_I2V", WAN_I2V, (1, 16, 3, 16, 16)),
    "wan_vace": ("WAN21_Vace", WAN_VACE, (1, 16, 3, 16, 16)),
    "wan22_5b": ("WAN22_T2V", WAN22_5B, (1, 48, 3, 16, 16)),
    "qwen_image": ("QwenImage", QWEN_IMAGE, (1, 16, 1, 16, 16)),
}


def tiny_model(name: str, seed: int = 0, **overrides):
    """A ComfyUI ModelPatcher around one of ComfyUI's own diffusion-model classes, tiny, random (seeded)."""
    import comfy.model_patcher
    import comfy.supported_models

    cls_name, unet_config, _ = TINY[name]
    config = getattr(comfy.supported_models, cls_name)(dict(unet_config, **overrides))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_flux(seed: int = 0, **overrides):
    return tiny_model("flux", seed, **overrides)


def conds(name: str, seed: int = 0, tokens: int = 8, neg_tokens: int | None = None, **extra):
    """(positive, negative) conditioning for a tiny model, as ComfyUI's encoders and nodes give it.
    neg_tokens: a negative prompt length ComfyUI cannot batch with the positive's (e.g. 8 and 5),
    so cond and uncond run as separate model calls."""
    g = torch.Generator().manual_seed(seed)
    _, unet_config, latent = TINY[name]
    dim = unet_config.get("context_in_dim") or unet_config.get("text_dim") or unet_config.get("joint_attention_dim")
    out = []
    for side in ("positive", "negative"):
        d = {}
        if name in ("flux", "chroma") or name.startswith("hunyuan"):  # their model_base reads pooled_output
            d["pooled_output"] = torch.randn(1, unet_config.get("vec_in_dim") or 32, generator=g)
        if name == "flux":
            d["guidance"] = 3.5
        if name.startswith("wan_i2v"):
            d["concat_latent_image"] = torch.randn(latent, generator=g)
            d["concat_mask"] = torch.ones(1, 1, latent[2], latent[3] * 8, latent[4] * 8)
            d["clip_vision_output"] = types.SimpleNamespace(
                penultimate_hidden_states=torch.randn(1, 257, 1280, generator=g))
        if name == "wan_vace":
            d["vace_frames"] = [torch.randn(1, 32, latent[2], latent[3], latent[4], generator=g)]
            d["vace_mask"] = [torch.ones(1, 64, latent[2], latent[3], latent[4])]
            d["vace_strength"] = [1.0]
        d.update(extra.get(side, {}))
        n = tokens if side == "positive" or neg_tokens is None else neg_tokens
        out.append([[torch.randn(1, n, dim, generator=g), d]])
    return out


def flux_conds(seed: int = 0, ref_latents: dict | None = None, tokens: int = 8, dim: int = 64, pooled: int = 32):
    """(positive, negative) conditioning as ComfyUI's text encoders would give it.
    ref_latents: {"positive": [latent], "negative": [...]} adds Kontext reference latents."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for side in ("positive", "negative"):
        extra = {"pooled_output": torch.randn(1, pooled, generator=g), "guidance": 3.5}
        if ref_latents and side in ref_latents:
            extra["reference_latents"] = ref_latents[side]
        out.append([[torch.randn(1, tokens, dim, generator=g), extra]])
    return out


def sample(model, positive, negative, seed=0, steps=12, cfg=2.0, sampler="euler", scheduler="simple",
           latent_shape=(1, 16, 16, 16), latent=None, **kwargs):
    """comfy.sample.sample as KSampler (or, with start_step/last_step/disable_noise, KSamplerAdvanced) runs it."""
    import comfy.sample

    latent = torch.zeros(latent_shape) if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               seed=seed, disable_pbar=True, **kwargs)


@contextlib.contextmanager
def observe(diffusion_model):
    """Record (step, cond_or_uncond) of every model call and of every call of the first block,
    plus what went into the first block and the final layer. Hooks are removed on exit."""
    from comfyui_magcache.magcache import Schedule

    log = {"model": [], "block0": [], "img_in": [], "final_in": []}
    current = {}

    def where(to):
        sched = Schedule.from_values(to["sample_sigmas"])
        return sched.step_index(float(to["sigmas"][0])), tuple(to["cond_or_uncond"])

    def on_model(module, args, kwargs):
        current["at"] = where(kwargs["transformer_options"])
        log["model"].append(current["at"])

    def on_block0(module, args, kwargs):
        log["block0"].append(where(kwargs["transformer_options"]))

    def on_img_in(module, args, output):
        log["img_in"].append((current["at"], output.detach().clone()))

    def on_final(module, args):
        log["final_in"].append((current["at"], args[0].detach().clone()))

    first_block = diffusion_model.double_blocks[0]
    handles = [diffusion_model.register_forward_pre_hook(on_model, with_kwargs=True),
               first_block.register_forward_pre_hook(on_block0, with_kwargs=True),
               diffusion_model.img_in.register_forward_hook(on_img_in),
               diffusion_model.final_layer.register_forward_pre_hook(on_final)]
    try:
        yield log
    finally:
        for h in handles:
            h.remove()


def skipped_steps(log, branch: int) -> list[int]:
    """Steps at which `branch` was evaluated by the model but block 0 never ran for it."""
    seen = {s for s, cou in log["model"] if branch in cou}
    computed = {s for s, cou in log["block0"] if branch in cou}
    return sorted(seen - computed)


def capture_log() -> list[str]:
    """The 'MagCache' logger's messages, collected in a list and kept off stdout."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("MagCache")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return messages
