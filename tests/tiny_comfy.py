"""Real ComfyUI, tiny real models, CPU: helpers for the integration layer (and the demo).

Nothing of ComfyUI is copied: its own classes are built with small configs and random weights."""
from __future__ import annotations

import contextlib
import importlib.machinery
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
    try:
        import torchvision  # noqa: F401
    except Exception:
        # PyPI torchvision does not load beside torch's CPU wheel; ComfyUI only imports it at module
        # level on paths these tests never call (cosmos, cascade). An empty stand-in is enough.
        for name in ("torchvision", "torchvision.transforms"):
            mod = types.ModuleType(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = mod
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported
    args.use_pytorch_cross_attention = args.use_pytorch_cross_attention or sdpa
    import comfy.model_management  # noqa: F401


def tiny_flux(seed: int = 0, **overrides):
    """A ComfyUI ModelPatcher around comfy.ldm.flux.model.Flux with random (seeded) weights."""
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.Flux(dict(FLUX, **overrides))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


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
           latent_shape=(1, 16, 16, 16)):
    import comfy.sample

    latent = torch.zeros(latent_shape)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               seed=seed, disable_pbar=True)


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
