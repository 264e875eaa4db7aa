"""Demo: what MagCache does to a picture. A tiny diffusion transformer of ComfyUI's own HunyuanVideo
class, trained here to draw coloured shapes per class (testbed/), sampled through ComfyUI on this
machine's CPU: the plain run, MagCache, core EasyCache (as it is, and with its input copied) and
fewer steps at the same compute, side by side in one PNG, each labelled with its speed-up by
compute and its PSNR to the plain run.

    COMFYUI_PATH=/path/to/ComfyUI python scripts/demo.py [--out artifacts/demo.png] [--steps 30]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from harness import COMFYUI, setup_comfy  # noqa: E402

MODEL = "hunyuan_image"
CLASSES = (0, 1, 2, 3)  # one row each (seed = row)
CFG = 2.0
EASYCACHE = 0.1  # ours: the EasyCache threshold nearest 2x by compute on this model at cfg 2 (benchmarks/quality.py)
TILE = 8  # latent pixel -> TILE x TILE screen pixels


def picture(columns, out: Path):
    """columns: [((title lines), subtitle, [latent per row], [checker verdict per row])] -> one PNG."""
    import numpy as np
    from PIL import Image, ImageDraw

    from comfyui_magcache.testbed import data

    n = columns[0][2][0].shape[-1] * TILE
    pad, head = 12, 58
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max([n] + [int(probe.textlength(s)) + 8 for title, sub, _, _ in columns for s in (*title, sub)])
    img = Image.new("RGB", (pad + len(columns) * (width + pad), head + len(columns[0][2]) * (n + pad) + 20), "white")
    d = ImageDraw.Draw(img)
    for j, (title, sub, latents, verdicts) in enumerate(columns):
        x = pad + j * (width + pad)
        for k, line in enumerate(title):  # the method, then its settings
            d.text((x, 6 + 14 * k), line, fill=(0, 0, 0))
        d.text((x, 36), sub, fill=(60, 60, 60))
        for i, (lat, ok) in enumerate(zip(latents, verdicts)):
            rgb = data.to_rgb(lat[0, :, 0])  # [3, H, W]
            tile = (rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8).repeat(TILE, 0).repeat(TILE, 1)
            y = head + i * (n + pad)
            img.paste(Image.fromarray(tile), (x, y))
            d.ellipse((x + n - 12, y + 4, x + n - 4, y + 12), fill=(40, 180, 60) if ok else (220, 40, 40))
    d.text((pad, img.height - 16), "dot: the testbed's checker accepts (green) or rejects (red) the sample; "
                                   "PSNR on the final latent against the plain run", fill=(60, 60, 60))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "demo.png")
    ap.add_argument("--steps", type=int, default=30, help="steps of the plain run")
    opts = ap.parse_args()
    if COMFYUI is None:
        print("No ComfyUI found: set COMFYUI_PATH to a ComfyUI checkout.", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    setup_comfy(COMFYUI, sdpa=True)
    torch.set_num_threads(os.cpu_count() or 1)
    import comfyui_version

    from comfyui_magcache.magcache.evidence import evidence_settings
    from comfyui_magcache.testbed import compare, models

    compare.STEPS = opts.steps
    patcher = models.load(MODEL)
    tb = models.TESTBEDS[MODEL]
    params = sum(p.numel() for p in patcher.model.diffusion_model.parameters())
    print(f"ComfyUI {comfyui_version.__version__}: {tb.comfy_config} trained testbed ({params / 1e6:.1f}M params, "
          f"{tb.checkpoint.relative_to(ROOT)}), euler {opts.steps} steps, cfg {CFG:g}, "
          f"{len(CLASSES)} samples, {torch.get_num_threads()} CPU threads")
    handle = compare.calibrate(MODEL, patcher, CFG, steps=opts.steps)
    thresh, retention, K = evidence_settings(handle.result.preset("demo"), opts.steps)
    print(f"MagCache: calibrated on one run of another seed; settings by the pack's evidence rule: "
          f"thresh {thresh:g}, retention {retention:g}, K {K}")
    cases = [(c, i) for i, c in enumerate(CLASSES)]
    variants = [compare.plain(opts.steps), compare.magcache(handle, thresh, retention, K),
                compare.easycache(EASYCACHE), compare.easycache(EASYCACHE, copied=True),
                compare.plain(opts.steps // 2)]
    titles = ["plain", "MagCache", "EasyCache (core, as is)", "EasyCache, input copied", "fewer steps"]
    columns, reference = [], None
    for title, v in zip(titles, variants):
        res = compare.run(MODEL, patcher, v, cases, CFG)
        reference = reference or res
        row = res.row(reference, CFG)
        verdicts = [models.check(MODEL, o, c) for o, (c, _) in zip(res.outputs, cases)]
        if reference is res:
            sub = f"{opts.steps} steps, reference"
        else:
            sub = f"{row['speedup_compute']:.2f}x compute, {row['psnr']:.1f} dB"
        columns.append(((title, v.label) if title != "plain" else (f"plain {opts.steps} steps",), sub,
                        res.outputs, verdicts))
        print(f"{title:26s} {v.label:30s} {row['speedup_compute']:.2f}x compute, {row['speedup_wall']:.2f}x wall, "
              f"PSNR {row['psnr']:.1f} dB, SSIM {row['ssim']:.3f}, checker {row['correct']}/{row['samples']}")
    picture(columns, opts.out)
    print(f"picture: {opts.out}  ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
