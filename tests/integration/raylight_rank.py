"""One process of a raylight run, as test_raylight.py starts it: `python raylight_rank.py <job.json>`.

With world 1 it is the one-process reference (no raylight). Otherwise it sets up what raylight's
RayWorker sets up (torch.distributed over gloo on CPU instead of NCCL, which needs a GPU; xfuser's groups
through raylight's initialize_xfuser_parallel; raylight's USP callback and CFG wrapper on the patcher),
applies MagCache through RayMagCache's actor function (pickled by value and back, as Ray sends it), and
samples: without MagCache, with a table, and with self-calibration (a run that measures, then one that
uses the profile). Writes outputs, skipped steps per branch and the measured ratios to job["out"]."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "scripts"))
sys.path.insert(0, str(HERE.parent))


@contextlib.contextmanager
def cuda_reported_available():
    """xfuser 0.4.5 binds its long-context attention only if CUDA is available when raylight imports it
    (../shared/RAYLIGHT.md); nothing runs on CUDA."""
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        yield
    finally:
        torch.cuda.is_available = real


def set_up_raylight(job: dict, rank: int, world: int):
    sys.path.insert(0, job["raylight_src"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    with cuda_reported_available():
        import raylight  # noqa: F401
        from raylight.distributed_worker.parallel_group_manager import initialize_xfuser_parallel
    initialize_xfuser_parallel(rank, world, {"is_xdit": True, "ulysses_degree": job["ulysses"],
                                             "ring_degree": job["ring"], "cfg_degree": job["cfg"],
                                             "attention": "TORCH_MATH", "sync_ulysses": False})


def add_raylight_patches(model, job: dict) -> None:
    """What RayWorker.patch_usp / patch_cfg do (raylight/distributed_worker/ray_worker.py)."""
    import comfy.patcher_extension as pe
    from raylight.distributed_modules.cfg import CFGParallelInjectRegistry
    from raylight.distributed_modules.usp import USPInjectRegistry

    if job["ulysses"] * job["ring"] > 1:
        model.add_callback(pe.CallbacksMP.ON_LOAD, USPInjectRegistry.inject)
    if job["cfg"] > 1:
        model.add_wrapper(pe.WrappersMP.DIFFUSION_MODEL, CFGParallelInjectRegistry.inject(model))


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    from harness import COMFYUI, after_each_run, conds, sample, setup_comfy, tiny_model

    setup_comfy(COMFYUI)
    import cloudpickle
    import folder_paths
    from comfyui_magcache import nodes_raylight

    folder_paths.set_user_directory(str(Path(job["user_dir"]) / f"rank{rank}"))  # profiles: each rank its own
    if world > 1:
        set_up_raylight(job, rank, world)
    model = tiny_model(job["family"])
    if world > 1:
        add_raylight_patches(model, job)
    pos, neg = conds(job["family"])

    def run(patched, seed):
        seen = {}

        def see(r):
            seen["skipped"] = {int(k[0]): list(st.skipped_steps) for k, st in r.state.branches.items()}
            seen["off"] = r.state.disabled_reason
        if patched is not model:
            patched.remove_wrappers_with_key("outer_sample", "zz_probe")  # the probe of an earlier run
            after_each_run(patched, see)
        out = sample(patched, pos, neg, seed=seed, steps=job["steps"], cfg=job["cfg_scale"],
                     latent_shape=tuple(job["latent"]))
        return out, seen

    def magcache(model_type):
        fn = cloudpickle.loads(cloudpickle.dumps(nodes_raylight.actor_function(model_type, *job["settings"], 0, -1)))
        return fn(model)

    result = {"rank": rank}
    result["plain"], _ = run(model, 1)
    result["table"], result["table_run"] = run(magcache(job["table"]), 1)
    selfcal = magcache("auto_calibrate")
    result["measured"], result["measure_run"] = run(selfcal, 1)
    [profile] = sorted((Path(job["user_dir"]) / f"rank{rank}" / "magcache").glob("*.json"))
    result["ratios"] = json.loads(profile.read_text())["ratios"]
    result["selfcal"], result["selfcal_run"] = run(selfcal, 1)
    torch.save(result, Path(job["out"]) / f"rank{rank}.pt")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
