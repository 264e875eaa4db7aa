"""A Ray actor with what RayMagCache uses of raylight's RayWorker (raylight/distributed_worker/ray_worker.py):
a ModelPatcher and model_function_runner(fn), which replaces it by fn(patcher). raylight's own RayWorker
cannot start without CUDA; this one holds a tiny model on CPU (test_raylight.py's Ray smoke run)."""
from __future__ import annotations

from pathlib import Path

import torch


class TinyWorker:
    def __init__(self, comfyui: str, family: str):
        torch.set_num_threads(1)
        from harness import setup_comfy, tiny_model

        setup_comfy(Path(comfyui))
        self.family, self.model = family, tiny_model(family)

    def model_function_runner(self, fn, *args, **kwargs):
        self.model = fn(self.model, *args, **kwargs)

    def sample(self, kwargs: dict):
        from harness import conds, sample

        pos, neg = conds(self.family)
        return sample(self.model, pos, neg, **kwargs)
