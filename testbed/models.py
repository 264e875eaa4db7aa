"""The trained testbeds: which ComfyUI class, its config, where its checkpoint is, and how to load,
condition, sample and check it through ComfyUI itself (library mode; scripts/harness.setup_comfy
must have run). Sizes and settings are ours.

TRAINED lists the testbeds whose checkpoint is committed (testbed/checkpoints/<name>.safetensors,
fp16, ComfyUI key names: what UNETLoader reads from models/diffusion_models)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from . import data

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class Testbed:
    name: str
    kind: str  # "image" or "video" (testbed.data)
    comfy_config: str  # class in comfy.supported_models
    unet: Mapping[str, Any]
    latent: tuple  # sampled latent shape, batch 1
    train: Mapping[str, Any] = field(default_factory=dict)  # testbed/train.py settings (its docstring)

    @property
    def checkpoint(self) -> Path:
        return CHECKPOINTS / f"{self.name}.safetensors"


TESTBEDS = {
    # HunyuanVideo used as an image model (one latent frame): the single blocks carry the text tokens
    # in the cached stream, as Flux's do.
    "hunyuan_image": Testbed(
        "hunyuan_image", "image", "HunyuanVideo",
        dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=data.POOLED_DIM,
             context_in_dim=data.TEXT_DIM, hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=2,
             depth_single_blocks=4, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2], qkv_bias=True,
             guidance_embed=False, byt5=False, meanflow=False, use_cond_type_embedding=False,
             vision_in_dim=None, meanflow_sum=False),
        (1, data.CHANNELS, 1, data.IMAGE_SIZE, data.IMAGE_SIZE),
        dict(steps=2000, batch=16, lr=1e-3, threads=1, copy_saved=True)),
    # Wan2.1 text-to-video: 3 latent frames of a square moving right. ComfyUI's loader fixes
    # num_heads = dim // 128 and patch (1, 2, 2) (test_quality checks the config round-trips).
    "wan_video": Testbed(
        "wan_video", "video", "WAN21_T2V",
        dict(image_model="wan2.1", model_type="t2v", dim=128, ffn_dim=512, num_heads=1, num_layers=4,
             text_dim=data.TEXT_DIM, in_dim=16, out_dim=16, freq_dim=256),
        (1, data.CHANNELS, data.VIDEO_FRAMES, data.VIDEO_SIZE, data.VIDEO_SIZE),
        dict(steps=6600, batch=12, lr=1.5e-3, threads=2)),
}
TRAINED = tuple(n for n, t in TESTBEDS.items() if t.checkpoint.is_file())


def build(name: str):
    """A fresh model_base of the testbed's ComfyUI class (fp32, CPU), weights initialised for training."""
    import comfy.supported_models

    tb = TESTBEDS[name]
    config = getattr(comfy.supported_models, tb.comfy_config)(dict(tb.unet))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname, p in model.diffusion_model.named_parameters():
            if p.ndim == 1:  # biases zero, norm scales one
                p.fill_(1.0 if "norm" in pname and pname.endswith("weight") else 0.0)
            elif "modulation" in pname and p.ndim == 3:  # Wan's learned modulation tables
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for pname, p in model.diffusion_model.named_parameters():  # outputs start at zero (DiT practice)
            if pname.startswith(("final_layer.linear", "head.head")):
                p.zero_()
    return model


def load(name: str):
    """The committed checkpoint through ComfyUI's own loader (what UNETLoader runs), fp32 on CPU."""
    import comfy.sd

    tb = TESTBEDS[name]
    if not tb.checkpoint.is_file():
        raise FileNotFoundError(f"{tb.checkpoint} missing: train it with python testbed/train.py {name}")
    return comfy.sd.load_diffusion_model(str(tb.checkpoint), model_options={"dtype": torch.float32})


def conds(cls: int):
    """(positive, negative) as ComfyUI's encoders give them: the class's prompt and the empty prompt."""
    out = []
    for c in (cls, None):
        context, pooled = data.prompt(c)
        out.append([[context, {"pooled_output": pooled}]])
    return out


def to_model_space(patcher, latent: torch.Tensor) -> torch.Tensor:
    """The sampler's output (the VAE's latent space) -> the space the data is drawn in."""
    return patcher.model.process_latent_in(latent)


def sample(patcher, cls: int, seed: int, steps: int = 30, cfg: float = 4.0, sampler="euler", scheduler="simple"):
    """One sample of class `cls` through comfy.sample.sample (as KSampler runs it), in model space."""
    import comfy.sample

    tb = TESTBEDS[_name_of(patcher)]
    latent = torch.zeros(tb.latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    pos, neg = conds(cls)
    out = comfy.sample.sample(patcher, noise, steps, cfg, sampler, scheduler, pos, neg, latent, seed=seed,
                              disable_pbar=True)
    return to_model_space(patcher, out)


def _name_of(patcher) -> str:
    dm = patcher.model.diffusion_model
    cls = type(dm).__name__
    for name, tb in TESTBEDS.items():
        if (tb.comfy_config == "HunyuanVideo") == (cls == "HunyuanVideo"):
            return name
    raise ValueError(f"not a testbed model: {cls}")


def check(name: str, latent: torch.Tensor, cls: int) -> bool:
    """The checker on one sampled latent ([1, C, T, H, W] model space)."""
    tb = TESTBEDS[name]
    x = latent[0]
    return data.check(tb.kind, x[:, 0] if tb.kind == "image" else x, cls)


def cases(n: int, seed0: int = 0):
    """(class, seed) pairs: n samples spread over the classes, fixed seeds."""
    return [(i % data.CLASSES, seed0 + i) for i in range(n)]
