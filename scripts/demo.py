"""Demo: a mid-size real ComfyUI Flux (random weights) sampled with and without MagCache on this
machine's CPU, through comfy.sample. Prints skipped steps, wall-time ratio and output difference.

    COMFYUI_PATH=/path/to/ComfyUI python scripts/demo.py [--steps 28] [--repeats 2]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from harness import COMFYUI, capture_log, flux_conds, load_pack, sample, setup_comfy, tiny_flux  # noqa: E402

MID_FLUX = dict(hidden_size=512, num_heads=8, axes_dim=[16, 24, 24], depth=4, depth_single_blocks=8,
                context_in_dim=512, vec_in_dim=256)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=28, help="sampling steps (Flux preset: 28)")
    ap.add_argument("--size", type=int, default=64, help="latent height/width (64 -> 1024 image tokens)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per variant, interleaved A B A B")
    ap.add_argument("--thresh", type=float, default=0.24)
    ap.add_argument("--retention", type=float, default=0.1)
    ap.add_argument("--K", type=int, default=5)
    opts = ap.parse_args()
    if COMFYUI is None:
        print("No ComfyUI found: set COMFYUI_PATH to a ComfyUI (v0.8.0) checkout.", file=sys.stderr)
        return 2
    setup_comfy(COMFYUI, sdpa=True)
    load_pack()
    import comfyui_magcache.nodes as nodes

    messages = capture_log()

    torch.set_num_threads(os.cpu_count() or 1)
    model = tiny_flux(seed=0, **MID_FLUX)
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    cached = nodes.MagCache.execute(model, "auto", opts.thresh, opts.retention, opts.K, 0, -1).result[0]
    pos, neg = flux_conds(seed=0, tokens=64, dim=512, pooled=256)
    shape = (1, 16, opts.size, opts.size)
    run = lambda m: sample(m, pos, neg, seed=42, steps=opts.steps, cfg=1.0, latent_shape=shape)  # noqa: E731

    print(f"ComfyUI: {COMFYUI}\nmodel: comfy.ldm.flux.model.Flux, {params / 1e6:.0f}M params, hidden 512, "
          f"4 double + 8 single blocks, {(opts.size // 2) ** 2} image tokens, fp32, "
          f"{torch.get_num_threads()} CPU threads, euler {opts.steps} steps, cfg 1")
    print(f"MagCache: model_type auto, thresh {opts.thresh}, retention {opts.retention}, K {opts.K}")
    with torch.inference_mode():
        run(model), run(cached)  # warm-up
        times = {"plain": [], "magcache": []}
        outs = {}
        for _ in range(opts.repeats):
            for name, m in (("plain", model), ("magcache", cached)):
                t = time.perf_counter()
                outs[name] = run(m)
                times[name].append(time.perf_counter() - t)
    plain, fast = min(times["plain"]), min(times["magcache"])
    a, b = outs["plain"].double(), outs["magcache"].double()
    rel = float((a - b).norm() / a.norm())
    mse = float(((a - b) ** 2).mean())
    psnr = 10 * math.log10(float(a.max() - a.min()) ** 2 / mse) if mse > 0 else math.inf
    print(next(m for m in reversed(messages) if m.startswith("MagCache: skipped")))
    print(f"wall time: plain {plain:.2f} s, MagCache {fast:.2f} s -> speed-up {plain / fast:.2f}x "
          f"(best of {opts.repeats}, interleaved)")
    print(f"output difference (final latent, random weights: a sanity figure, not quality): "
          f"relative L2 {rel:.4f}, PSNR {psnr:.1f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
