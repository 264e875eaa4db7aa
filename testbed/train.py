"""Train a testbed (testbed/models.py) with rectified flow on its drawn data, and save its checkpoint.

    COMFYUI_PATH=/path/to/ComfyUI python testbed/train.py hunyuan_image|wan_video [--steps N] [--out PATH]

Rectified flow as these models are trained: x_t = (1 - s) x0 + s noise, the model predicts
noise - x0 (ComfyUI's FLOW model type), s drawn half from the model's own shifted sampling schedule
and half uniformly. Class conditioning with 10% dropout to the empty prompt (so CFG works). AdamW,
warm-up then cosine decay, gradient clipping, EMA of the weights (what is saved, in fp16). Fixed
seeds; the testbed's torch threads (its `threads`, what its committed checkpoint was trained with:
the thread count changes the rounding, so the same count reproduces it bit for bit), or
TESTBED_THREADS (2 threads spin each other on a busy machine: 8x the CPU time measured here; on an
idle machine they are faster); a fixed number of optimizer steps (models.Testbed.train), chosen to
take at most 15 minutes on 2 idle CPU cores (measured: README, Quality). copy_saved (a testbed's
train setting) keeps copies of what autograd saves, for blocks that add in place. All settings are
ours. Not run in CI: the checkpoints are committed.
Ends by sampling 16 (class, seed) cases through ComfyUI and printing the checker's accuracy."""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

DROPOUT = 0.1
EMA = 0.998
WARMUP = 100


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def batch(tb, g, n):
    from comfyui_magcache.testbed import data

    classes = torch.randint(0, data.CLASSES, (n,), generator=g)
    x0 = torch.stack([data.draw(tb.kind, int(c), g) for c in classes])
    if tb.kind == "image":
        x0 = x0[:, :, None]  # one latent frame
    keep = torch.rand(n, generator=g) >= DROPOUT
    ctx, pooled = zip(*(data.prompt(int(c) if k else None) for c, k in zip(classes, keep)))
    return x0, torch.cat(ctx), torch.cat(pooled)


def sigmas(g, n, shift):
    t = torch.rand(n, generator=g)
    shifted = shift * t / (1 + (shift - 1) * t)
    return torch.where(torch.rand(n, generator=g) < 0.5, shifted, t).clamp(1e-3, 1.0)


def _rope1(x, freqs_cis):
    """Rotary embedding in plain torch (ComfyUI's own fallback): comfy_kitchen's kernel has no autograd."""
    x_ = x.to(dtype=freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs_cis[..., 0] * x_[..., 0] + freqs_cis[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def trainable_rope() -> None:
    """For training only: the rope functions the testbeds' classes call, as plain torch."""
    import comfy.ldm.flux.math as flux_math
    import comfy.ldm.wan.model as wan_model

    flux_math.apply_rope1 = wan_model.apply_rope1 = _rope1
    flux_math.apply_rope = lambda xq, xk, freqs_cis: (_rope1(xq, freqs_cis), _rope1(xk, freqs_cis))


def forward(model, x, sigma, ctx, pooled):
    t = model.model_sampling.timestep(sigma)
    return model.diffusion_model(x, t, ctx, y=pooled, transformer_options={})


def main() -> int:
    from harness import COMFYUI, setup_comfy

    from comfyui_magcache.testbed import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(models.TESTBEDS))
    ap.add_argument("--steps", type=int, help="optimizer steps (default: the testbed's)")
    ap.add_argument("--out", type=Path, help="checkpoint path (default: testbed/checkpoints/<name>.safetensors)")
    ap.add_argument("--eval", type=int, default=16, help="samples checked at the end (0: none)")
    ap.add_argument("--resume", type=Path, help="continue from this checkpoint (its weights; a new schedule)")
    opts = ap.parse_args()
    if COMFYUI is None:
        print("set COMFYUI_PATH to a ComfyUI source tree", file=sys.stderr)
        return 2
    setup_comfy(COMFYUI, sdpa=True)
    tb = models.TESTBEDS[opts.name]
    cfg = dict(tb.train)
    torch.set_num_threads(int(os.environ.get("TESTBED_THREADS", cfg.get("threads", 1))))
    torch.manual_seed(0)
    trainable_rope()
    steps = opts.steps or cfg["steps"]
    copy_saved = bool(cfg.get("copy_saved", False))
    out = opts.out or tb.checkpoint
    model = models.build(opts.name)
    dm = model.diffusion_model
    if opts.resume:
        import safetensors.torch

        dm.load_state_dict({k: v.float() for k, v in safetensors.torch.load_file(str(opts.resume)).items()})
    dm.train()
    params = [p for p in dm.parameters()]
    n_params = sum(p.numel() for p in params)
    ema = copy.deepcopy(dm.state_dict())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.01, betas=(0.9, 0.99))
    shift = float(model.model_sampling.shift)
    g = torch.Generator().manual_seed(1)
    print(f"{opts.name}: {type(dm).__name__}, {n_params / 1e6:.2f}M params, {steps} steps, batch {cfg['batch']}, "
          f"lr {cfg['lr']}, shift {shift}", flush=True)
    t0, c0 = time.monotonic(), cpu_seconds()
    losses = []
    for step in range(steps):
        lr = cfg["lr"] * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        x0, ctx, pooled = batch(tb, g, cfg["batch"])
        noise = torch.randn(x0.shape, generator=g)
        s = sigmas(g, len(x0), shift)
        sv = s.view(-1, *([1] * (x0.ndim - 1)))
        xt = (1 - sv) * x0 + sv * noise
        # ComfyUI's Flux-style blocks (HunyuanVideo's) add in place into tensors autograd saved;
        # saving copies keeps their backward right (the weights and the forward are ComfyUI's own).
        # The copies cost time (6% of a WanModel step, whose blocks do not need them): only where asked.
        with torch.autograd.graph.saved_tensors_hooks(torch.Tensor.clone, lambda t: t) if copy_saved \
                else contextlib.nullcontext():
            pred = forward(model, xt, s, ctx, pooled)
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(EMA, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in dm.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v, alpha=1 - decay)
        losses.append(float(loss))
        if step % 100 == 0 or step == steps - 1:
            recent = sum(losses[-100:]) / len(losses[-100:])
            print(f"step {step:5d}  loss {recent:.4f}  lr {lr:.2e}  {time.monotonic() - t0:6.0f} s wall  "
                  f"{cpu_seconds() - c0:6.0f} s CPU", flush=True)
    wall, cpu = time.monotonic() - t0, cpu_seconds() - c0
    import safetensors.torch

    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"testbed": opts.name, "steps": str(steps), "batch": str(cfg["batch"]), "lr": str(cfg["lr"]),
            "train_wall_s": f"{wall:.0f}", "train_cpu_s": f"{cpu:.0f}", "threads": str(torch.get_num_threads()),
            "torch": torch.__version__,
            "final_loss": f"{sum(losses[-100:]) / len(losses[-100:]):.4f}"}
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in ema.items()}, str(out), metadata=meta)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB): {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU "
          f"({torch.get_num_threads()} torch threads)", flush=True)
    (out.with_suffix(".json")).write_text(json.dumps(meta, indent=1) + "\n")
    if opts.eval:
        evaluate(opts.name, out, opts.eval)
    return 0


def evaluate(name, path, n):
    import comfy.sd

    from comfyui_magcache.testbed import models

    patcher = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.float32})
    good = 0
    with torch.inference_mode():
        for cls, seed in models.cases(n):
            ok = models.check(name, models.sample(patcher, cls, seed, cfg=2.0), cls)
            good += ok
    print(f"checker accuracy (30 steps, cfg 2): {good}/{n}", flush=True)
    return good


if __name__ == "__main__":
    sys.exit(main())
