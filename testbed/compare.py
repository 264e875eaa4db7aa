"""Side-by-side runs on a trained testbed: the plain model, MagCache, ComfyUI core's EasyCache and
LazyCache, and fewer steps, on the same (class, seed) cases; what each computed, how long it took,
its error to the reference and the checker's verdict. Shared by benchmarks/quality.py, the demo
and tests/integration/test_quality.py.

Error is measured on the final latent in model space (no VAE): PSNR with the reference's own range
(max - min) as peak, and SSIM (Gaussian window 7, sigma 1.5, over every channel and frame as a 2-D
map), averaged over the cases. Compute is counted where the blocks run: the batch rows entering the
first transformer block, against steps x branches of the plain run (embeddings and the final layer,
which MagCache still runs and EasyCache does not, are a few percent of a call)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import models

STEPS = 30  # the reference's step count (ours)


def psnr(ref: torch.Tensor, x: torch.Tensor) -> float:
    ref, x = ref.double(), x.double()
    mse = float(((ref - x) ** 2).mean())
    peak = float(ref.max() - ref.min())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def ssim(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Mean SSIM of two latents [..., H, W]: every leading index a 2-D map, data range of ref."""
    a = ref.double().reshape(-1, 1, *ref.shape[-2:])
    b = x.double().reshape(-1, 1, *x.shape[-2:])
    k = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(k ** 2) / (2 * 1.5 ** 2))
    g = (g / g.sum())
    win = (g[:, None] * g[None, :])[None, None]
    L = float(ref.max() - ref.min())
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2

    def f(t):
        return F.conv2d(F.pad(t, (3, 3, 3, 3), mode="reflect"), win)

    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def first_block(dm):
    for attr in ("double_blocks", "blocks"):
        blocks = getattr(dm, attr, None)
        if blocks is not None and len(blocks):
            return blocks[0]
    raise ValueError(f"no block list on {type(dm).__name__}")


class BlockRows:
    """Counts the batch rows (one per branch evaluated) that enter the first transformer block."""

    def __init__(self, dm):
        self.rows = 0
        self.handle = first_block(dm).register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("img", kwargs.get("x"))
        self.rows += int(x.shape[0])

    def close(self):
        self.handle.remove()


@dataclass
class Variant:
    """One way of sampling: `make(patcher) -> patcher` and the step count it samples."""

    method: str  # plain, fewer steps, MagCache, EasyCache, EasyCache (input copied), LazyCache
    label: str
    make: Callable
    steps: int = STEPS
    settings: dict = field(default_factory=dict)


@dataclass
class Result:
    variant: Variant
    outputs: list
    wall: float
    rows: int
    correct: int

    def row(self, reference: Optional["Result"], cfg: float) -> dict:
        branches = 2 if cfg != 1.0 else 1
        full = STEPS * branches * len(self.outputs)
        out = {"method": self.variant.method, "label": self.variant.label, "steps": self.variant.steps,
               **self.variant.settings, "computed": self.rows / len(self.outputs),
               "speedup_compute": full / self.rows if self.rows else math.inf,
               "wall_s": self.wall, "accuracy": self.correct / len(self.outputs),
               "correct": self.correct, "samples": len(self.outputs)}
        if reference is not None:
            out["speedup_wall"] = reference.wall / self.wall
            out["psnr"] = sum(psnr(r, o) for r, o in zip(reference.outputs, self.outputs)) / len(self.outputs)
            out["ssim"] = sum(ssim(r, o) for r, o in zip(reference.outputs, self.outputs)) / len(self.outputs)
        return out


def run(name: str, patcher, variant: Variant, cases, cfg: float) -> Result:
    model = variant.make(patcher)
    counter = BlockRows(patcher.model.diffusion_model)
    outputs, correct = [], 0
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for cls, seed in cases:
                out = models.sample(model, cls, seed, steps=variant.steps, cfg=cfg)
                outputs.append(out)
        wall = time.perf_counter() - t0
    finally:
        counter.close()
    correct = sum(models.check(name, o, cls) for o, (cls, _) in zip(outputs, cases))
    return Result(variant, outputs, wall, counter.rows, correct)


# ---- the variants -------------------------------------------------------------------------------

def plain(steps: int = STEPS) -> Variant:
    return Variant("plain" if steps == STEPS else "fewer steps", f"{steps} steps", lambda p: p, steps,
                   {"sampled_steps": steps})


def calibrate(name: str, patcher, cfg: float, cases=((0, 1000),), steps: int = STEPS):
    """MagCache's own calibration of the model (MagCacheCalibration, through ComfyUI's sampler) on
    `cases` (not the benchmark's): the handle MagCache's 'ratios' input takes. Saves no profile."""
    from comfyui_magcache.model_patches import engine
    from comfyui_magcache.nodes import family_of

    spec = family_of(patcher)
    handle = engine.CalibrationHandle(spec, None, None)
    recording = engine.apply(patcher, spec, _config(0.0), None, calibrate=handle)
    with torch.inference_mode():
        for cls, seed in cases:
            models.sample(recording, cls, seed, steps=steps, cfg=cfg)
    return handle


def _config(thresh, retention=0.2, K=2):
    from comfyui_magcache.magcache import MagCacheConfig

    return MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)


def magcache(handle, thresh: float, retention: float = 0.2, K: int = 2) -> Variant:
    import comfyui_magcache.nodes as nodes

    def make(p):
        return nodes.MagCache.execute(p, "auto", thresh, retention, K, 0, -1, ratios=handle).result[0]

    return Variant("MagCache", f"MagCache {thresh:g}/{retention:g}/{K}", make,
                   settings={"thresh": thresh, "retention": retention, "K": K})


def copy_input(executor, *args, **kwargs):
    """A DIFFUSION_MODEL wrapper that hands the model a copy of its input (see easycache())."""
    return executor(args[0].clone(), *args[1:], **kwargs)


def easycache(thresh: float, copied: bool = False, lazy: bool = False) -> Variant:
    """Core EasyCache (or LazyCache) at its default start/end percent. copied: EasyCache's skip adds
    its cached difference INTO the diffusion model's input tensor (x[...] += diff in
    apply_cache_diff); in fp32 that tensor is the very one model_base then uses to turn the output
    into the denoised latent (calculate_input and .to(dtype) return it as it is), so a skipped step's
    denoised is computed from a corrupted x. In bf16/fp16 (a cast makes a copy) that cannot happen;
    copying the input first gives EasyCache its intended behaviour here."""
    from comfy_extras import nodes_easycache

    node = nodes_easycache.LazyCacheNode if lazy else nodes_easycache.EasyCacheNode

    def make(p):
        if copied:  # added first, so it runs outside EasyCache's wrapper (wrappers run in the order added)
            p = p.clone()
            p.add_wrapper_with_key("diffusion_model", "copy_input", copy_input)
        return node.execute(p, thresh, 0.15, 0.95, False).result[0]

    method = "LazyCache" if lazy else ("EasyCache (input copied)" if copied else "EasyCache")
    return Variant(method, f"{method} {thresh:g}", make, settings={"thresh": thresh})
