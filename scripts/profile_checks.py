"""Profile folder listings before and after: an interrupted (self-)calibration, and runs on different sigma
curves (dpm_2 / uni_pc under five schedulers, partial denoise); plus the fingerprint's cost. Tiny Lumina 2
on CPU, in a temporary ComfyUI user folder. Run it with a ComfyUI venv's python, e.g.

    COMFYUI_PATH=<tree> <venv python> scripts/profile_checks.py

(`python3 scripts/comfyui.py env` prints both.)"""
from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import COMFYUI, TINY, conds, sample, setup_comfy, tiny_model  # noqa: E402

NAME, STEPS, STOP_AT = "lumina2", 12, 5
SETTINGS = (0.24, 0.2, 3)  # ours


def listing(folder: Path) -> list[str]:
    if not folder.is_dir():
        return ["  (no folder)"]
    return [f"  {p.name}  {p.stat().st_size} bytes  sha256 {hashlib.sha256(p.read_bytes()).hexdigest()[:12]}"
            for p in sorted(folder.iterdir())] or ["  (empty)"]


def show(title: str, folder: Path) -> list[str]:
    lines = listing(folder)
    print(f"{title}:\n" + "\n".join(lines))
    return lines


def stopped(model, pos, neg, error, **kw) -> None:
    def callback(step, x0, x, total):
        if step + 1 == STOP_AT:
            raise error
    try:
        sample(model, pos, neg, seed=3, steps=STEPS, latent_shape=TINY[NAME].latent, callback=callback, **kw)
    except BaseException as e:  # noqa: B036 (InterruptProcessingException is a BaseException)
        if e is not error:
            raise
    else:
        raise AssertionError("the run was not stopped")


def main() -> None:
    torch.set_num_threads(1)
    setup_comfy(COMFYUI)
    import comfy.model_management
    import folder_paths

    import comfyui_magcache.nodes as nodes
    from comfyui_magcache.model_patches.profile_keys import model_fingerprint

    tmp = Path(tempfile.mkdtemp(prefix="magcache-profiles-"))
    folder_paths.set_user_directory(str(tmp))
    folder = tmp / "magcache"
    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    shape = TINY[NAME].latent
    patched = nodes.MagCache.execute(model, "auto", *SETTINGS, 0, -1).result[0]
    errors = {"InterruptProcessingException": comfy.model_management.InterruptProcessingException(),
              "torch.OutOfMemoryError": torch.OutOfMemoryError("CUDA out of memory")}

    print(f"== 1. interrupt at step {STOP_AT} of {STEPS} (tiny Lumina 2, ComfyUI {COMFYUI})")
    sample(patched, pos, neg, seed=1, steps=STEPS, latent_shape=shape)  # a complete self-calibration (euler simple)
    cal, _ = nodes.MagCacheCalibration.execute(model, "auto", "my_calibration").result
    sample(cal, pos, neg, seed=1, steps=STEPS, latent_shape=shape)  # a complete calibration node run
    before = show("before", folder)
    for what, error in errors.items():
        stopped(patched, pos, neg, error, scheduler="karras")  # a new self-calibration (karras), stopped
        stopped(patched, pos, neg, error)  # euler simple reads its profile; nothing to measure
        again, _ = nodes.MagCacheCalibration.execute(model, "auto", "my_calibration").result
        stopped(again, pos, neg, error, scheduler="beta")  # a recalibration into my_calibration, stopped
        after = show(f"after self-calibration (karras) and my_calibration (beta) stopped by {what}", folder)
        print("  identical:", after == before)

    print("\n== 2. sigma curves: dpm_2 / uni_pc x 5 schedulers, euler / dpm_2 x denoise 0.3 / 0.6 / 0.9 (10 steps)")
    for p in folder.iterdir():
        p.unlink()
    configs = [(s, c, 1.0) for s in ("dpm_2", "uni_pc") for c in ("simple", "exponential", "beta", "karras", "normal")]
    configs += [(s, "simple", d) for s in ("euler", "dpm_2") for d in (0.3, 0.6, 0.9)]
    latent = torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(5))
    show("before", folder)
    for rerun in (False, True):
        for sampler, scheduler, denoise in configs:
            sample(patched, pos, neg, seed=1 + rerun, steps=10, sampler=sampler, scheduler=scheduler, denoise=denoise,
                   latent=latent)
        names = sorted(p.stem for p in folder.glob("*.json"))
        print(f"after {'the same 16 runs again' if rerun else f'{len(configs)} runs'}: {len(names)} profiles")
        if not rerun:
            print("\n".join(f"  {n}" for n in names))

    print("\n== 3. fingerprint cost (median of 20, CPU)")
    for name in ("lumina2", "flux", "wan_t2v", "flux2"):
        m = tiny_model(name)
        dm = m.model.diffusion_model
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            model_fingerprint(m, dm)
            times.append(time.perf_counter() - t0)
        tensors = len(dm.state_dict())
        print(f"  tiny {name}: {sorted(times)[10] * 1e3:.1f} ms, {tensors} tensors")
    # the cost grows with the number of tensors, not their size (16 values read from each): a module with
    # 1,000 tensors stands in for a full-size model (several hundred tensors)
    many = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(256, 256)) for _ in range(1000))
    fake = type("Patcher", (), {"model": None, "backup": {}, "patches": {}})()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        model_fingerprint(fake, many)
        times.append(time.perf_counter() - t0)
    print(f"  1,000 tensors of 256 x 256: {sorted(times)[10] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
