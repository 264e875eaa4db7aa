"""The families benchmarked: every fixture of the registry (model_patches.FIXTURES) that has a `bench`
size, built mid-size from ComfyUI's own class with random weights, and its conditioning."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from harness import conds, empty_latent, load_pack, tiny_model

load_pack()  # the pack as the package comfyui_magcache (as importing the harness does)
from comfyui_magcache.model_patches import FIXTURES, FamilySpec, Fixture  # noqa: E402

TEXT_TOKENS = 64
BENCH_KEYS = ("unet", "latent", "patch", "hidden", "cfg")  # required in Fixture.bench


@dataclass(frozen=True)
class Family:
    """One fixture at its benchmark size (Fixture.bench)."""

    name: str  # the fixture's name: the table's family column and the key in benchmark.json
    spec: FamilySpec
    fixture: Fixture
    unet: Mapping[str, Any]  # overrides on the fixture's tiny unet config
    latent: tuple  # a shape; several streams (LTX-2): one shape per stream
    patch: tuple  # latent cells per image token (per stream: a tuple each)
    hidden: Any  # block width (per stream: a tuple)
    cfg: float
    text_dim: int = 512
    pooled_dim: int = 0  # pooled text embedding width, 0: none

    @property
    def preset(self) -> str:
        """The table 'auto' must pick for this model (checked before measuring)."""
        return self.fixture.preset

    @property
    def streams(self) -> tuple:
        """(latent shape, patch, hidden) per stream: one for most families, (video, audio) for LTX-2."""
        if self.latent and isinstance(self.latent[0], (tuple, list)):
            return tuple(zip(self.latent, self.patch, self.hidden))
        return ((self.latent, self.patch, self.hidden),)

    @property
    def image_tokens(self) -> int:
        """Tokens entering the blocks, every stream's."""
        return sum(math.prod(s[2:]) // math.prod(p) for s, p, _ in self.streams)

    @property
    def residual_elements(self) -> int:
        """Elements of one branch's cached residual (every stream's tokens x its width)."""
        return sum(math.prod(s[2:]) // math.prod(p) * h for s, p, h in self.streams)


def family(name: str, spec: FamilySpec, fixture: Fixture) -> Family:
    b = fixture.bench
    missing = [k for k in BENCH_KEYS if k not in b]
    if missing:
        raise ValueError(f"fixture {name}: bench lacks {', '.join(missing)}")
    hidden = tuple(b["hidden"]) if isinstance(b["hidden"], (tuple, list)) else int(b["hidden"])
    return Family(name, spec, fixture, dict(b["unet"]), tuple(b["latent"]), tuple(b["patch"]), hidden,
                  float(b["cfg"]), int(b.get("text_dim", 512)), int(b.get("pooled_dim") or 0))


# In the registry's order; fixtures without a bench size are not benchmarked.
FAMILIES: dict[str, Family] = {name: family(name, spec, fx) for name, (spec, fx) in FIXTURES.items() if fx.bench}


def build(fam: Family, device: torch.device):
    """A ModelPatcher of the family's ComfyUI class at benchmark size (seeded random weights)."""
    model = tiny_model(fam.name, seed=0, **fam.unet)
    if device.type != "cpu":
        import comfy.model_patcher

        model = comfy.model_patcher.ModelPatcher(model.model, load_device=device, offload_device=torch.device("cpu"))
    return model


def conditioning(fam: Family, seed: int = 0):
    """harness.conds with benchmark-size text and pooled inputs, and the fixture's further inputs (VACE
    frames, ...) at the benchmark's latent size."""
    g = torch.Generator().manual_seed(seed + 1)
    extras = {}
    for side in ("positive", "negative"):
        d = {}
        if fam.pooled_dim:
            d["pooled_output"] = torch.randn(1, fam.pooled_dim, generator=g)
        d.update(fam.fixture.extras(fam.latent, g))
        extras[side] = d
    pos, neg = conds(fam.name, seed, tokens=TEXT_TOKENS, **extras)
    for c in (pos, neg):
        c[0][0] = torch.randn(1, TEXT_TOKENS, fam.text_dim, generator=g)
    return pos, neg


def auto_preset(fam: Family, model, steps: int) -> str:
    """The table the node's 'auto' picks for this model at this latent size and step count."""
    from comfyui_magcache.model_patches import resolve

    spec, _ = resolve("auto", model.model.diffusion_model)
    args = {"x": empty_latent(fam.latent), "transformer_options": {"sample_sigmas": torch.linspace(1, 0, steps + 1)}}
    return spec.auto_preset(model.model.diffusion_model, args.get)
