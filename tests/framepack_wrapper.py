"""kijai's ComfyUI-FramePackWrapper for the FramePack tests, loaded from $MAGCACHE_FRAMEPACK (scripts/comfyui.py
unpacks it there from MAGCACHE_FRAMEPACK_ARCHIVES), with CPU shims for its CUDA-only parts, and a tiny model
of its own HunyuanVideoTransformer3DModel class. Sizes are ours.

The shims (the wrapper's code is otherwise run as it is):
- diffusers_helper/memory.py asks torch.cuda.current_device() at import: answered 0 while it is imported;
- FramePackSampler moves the model with move_model_to_device_with_memory_preservation, which reads CUDA
  memory statistics: replaced in its module by a plain .to(device)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

PACKAGE = "magcache_test_framepack_wrapper"


def wrapper_dir() -> Path | None:
    folder = os.environ.get("MAGCACHE_FRAMEPACK")
    return Path(folder) if folder and (Path(folder) / "nodes.py").is_file() else None


def require_wrapper() -> Path:
    """The wrapper's folder; skips without one, unless MAGCACHE_REQUIRE_FRAMEPACK=1 (CI): then it fails."""
    folder = wrapper_dir()
    if folder is None:
        message = ("no ComfyUI-FramePackWrapper: set MAGCACHE_FRAMEPACK to its folder, or run "
                   "`MAGCACHE_FRAMEPACK_ARCHIVES=../shared/framepack python3 scripts/comfyui.py test`")
        if os.environ.get("MAGCACHE_REQUIRE_FRAMEPACK") == "1":
            pytest.fail("MAGCACHE_REQUIRE_FRAMEPACK=1 but " + message)
        pytest.skip(message)
    return folder


def load():
    """The wrapper's nodes module (ComfyUI must be set up first), imported once as a package of its own."""
    if PACKAGE in sys.modules:
        return sys.modules[f"{PACKAGE}.nodes"]
    folder = require_wrapper()
    import comfy.model_patcher  # noqa: F401  (its nodes.py uses comfy.model_patcher, imported by a server before it)

    spec = importlib.util.spec_from_file_location(PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    current = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0  # memory.py: gpu = torch.device(f'cuda:{torch.cuda.current_device()}')
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[PACKAGE]
        raise
    finally:
        torch.cuda.current_device = current
    nodes = sys.modules[f"{PACKAGE}.nodes"]
    nodes.move_model_to_device_with_memory_preservation = (
        lambda model, target_device, preserved_memory_gb=0: model.to(target_device))
    return nodes


TINY = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
            num_single_layers=2, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=32,
            pooled_projection_dim=16, rope_axes_dim=(4, 6, 6), has_image_proj=True, image_proj_dim=24,
            has_clean_x_embedder=True)


def tiny_model(seed: int = 0, dynamic_swap: bool = True) -> dict:
    """A FramePackMODEL as the wrapper's loaders return it: {"transformer", "dtype"}, its transformer of the
    wrapper's class with random weights (scaled so the blocks change the hidden state visibly), DynamicSwap
    installed as the loaders do."""
    nodes = load()
    models = sys.modules[f"{PACKAGE}.diffusers_helper.models.hunyuan_video_packed"]
    torch.manual_seed(seed)
    transformer = models.HunyuanVideoTransformer3DModel(**TINY)
    with torch.no_grad():
        for p in transformer.parameters():
            p.normal_(0, 0.05)
    if dynamic_swap:
        nodes.DynamicSwapInstaller.install_model(transformer, device=torch.device("cpu"))
    return {"transformer": transformer.eval(), "dtype": torch.float32}


def conditioning(seed: int, tokens: int = 6):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, TINY["text_embed_dim"], generator=g),
             {"pooled_output": torch.randn(1, TINY["pooled_projection_dim"], generator=g)}]]


def sample(model: dict, steps: int = 25, cfg: float = 1.0, seconds: float = 0.6, window: int = 2, seed: int = 0,
           image_embeds: bool = True, teacache: bool = False) -> torch.Tensor:
    """FramePackSampler.process with the wrapper's own arguments on a 64x64 start frame: `window` latent frames
    per section, round(seconds * 30 / (window * 4)) sections (0.6 s, window 2: two sections)."""
    nodes = load()
    g = torch.Generator().manual_seed(1000 + seed)
    start = {"samples": torch.randn(1, 16, 1, 8, 8, generator=g)}
    embeds = {"last_hidden_state": torch.randn(1, 4, TINY["image_proj_dim"], generator=g)} if image_embeds else None
    (out,) = nodes.FramePackSampler().process(
        model=model, shift=0.0, positive=conditioning(1), negative=conditioning(2), latent_window_size=window,
        use_teacache=teacache, total_second_length=seconds, teacache_rel_l1_thresh=0.15, steps=steps, cfg=cfg,
        guidance_scale=10.0, seed=seed, sampler="unipc_bh1", gpu_memory_preservation=0.0, start_latent=start,
        image_embeds=embeds)
    return out["samples"]
