"""Real ComfyUI in library mode with tiny real models, on CPU: shared by the integration tests, the
demo and the benchmark. Importing it loads this pack as the package `comfyui_magcache` (the way
ComfyUI loads a custom node folder, so its relative imports work whatever the folder is called) and
finds ComfyUI: $COMFYUI_PATH, or the ComfyUI whose custom_nodes/ holds this pack.

Nothing of ComfyUI is copied: its own classes are built with small configs and random weights;
every family's configs are its spec's fixtures (model_patches.FIXTURES)."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_magcache"


def load_pack():
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def find_comfyui() -> Path | None:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    if ROOT.parent.name == "custom_nodes":
        candidates.append(ROOT.parent.parent)
    for c in candidates:
        if (c / "comfy" / "model_patcher.py").is_file():
            return c.resolve()
    return None


COMFYUI = find_comfyui()
load_pack()

from comfyui_magcache.model_patches import FIXTURES  # noqa: E402


def setup_comfy(path: Path, sdpa: bool = False) -> None:
    """Make `import comfy` work in library mode on CPU (sdpa: PyTorch attention, faster on mid-size models)."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    for name in ("torchvision", "torchaudio"):
        try:
            __import__(name)
        except Exception:
            # No wheel of it loads beside torch's CPU build; ComfyUI imports it at module level on
            # paths MagCache never runs. The stand-ins import, and raise if anything uses them.
            standins = str(Path(__file__).resolve().parents[1] / "scripts" / "standins")
            if standins not in sys.path:
                sys.path.append(standins)
            sys.modules.pop(name, None)
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported
    args.use_pytorch_cross_attention = args.use_pytorch_cross_attention or sdpa
    import comfy.model_management  # noqa: F401


# Every registered family's tiny instances by name (the pack is loaded by conftest first).
TINY = {name: fixture for name, (_, fixture) in FIXTURES.items()}


def tiny_model(name: str, seed: int = 0, **overrides):
    """A ComfyUI ModelPatcher around one of ComfyUI's own diffusion-model classes, tiny, random (seeded)."""
    import comfy.model_patcher
    import comfy.supported_models

    fixture = TINY[name]
    config = getattr(comfy.supported_models, fixture.comfy_config)(dict(fixture.unet_config, **overrides))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def tiny_flux(seed: int = 0, **overrides):
    return tiny_model("flux", seed, **overrides)


def conds(name: str, seed: int = 0, tokens: int = 8, neg_tokens: int | None = None, **extra):
    """(positive, negative) conditioning for a tiny model, as ComfyUI's encoders and nodes give it.
    neg_tokens: a negative prompt length ComfyUI cannot batch with the positive's (e.g. 8 and 5),
    so cond and uncond run as separate model calls."""
    g = torch.Generator().manual_seed(seed)
    fixture = TINY[name]
    out = []
    for side in ("positive", "negative"):
        d = {}
        if fixture.pooled_dim:  # model_base reads pooled_output (Flux, Chroma, HunyuanVideo)
            d["pooled_output"] = torch.randn(1, fixture.pooled_dim, generator=g)
        if fixture.guidance is not None:
            d["guidance"] = fixture.guidance
        d.update(fixture.extras(fixture.latent, g))
        d.update(extra.get(side, {}))
        n = tokens if side == "positive" or neg_tokens is None else neg_tokens
        out.append([[torch.randn(1, n, fixture.text_dim, generator=g), d]])
    return out


def flux_conds(seed: int = 0, ref_latents: dict | None = None, tokens: int = 8, dim: int = 64, pooled: int = 32):
    """(positive, negative) conditioning as ComfyUI's text encoders would give it.
    ref_latents: {"positive": [latent], "negative": [...]} adds Kontext reference latents."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for side in ("positive", "negative"):
        extra = {"pooled_output": torch.randn(1, pooled, generator=g), "guidance": 3.5}
        if ref_latents and side in ref_latents:
            extra["reference_latents"] = ref_latents[side]
        out.append([[torch.randn(1, tokens, dim, generator=g), extra]])
    return out


def empty_latent(shape):
    """Zeros of a latent shape; a tuple of shapes (a model of several streams, LTX-2's video and audio)
    gives ComfyUI's NestedTensor of them, as LTXVConcatAVLatent makes it."""
    if shape and isinstance(shape[0], (tuple, list)):
        import comfy.nested_tensor

        return comfy.nested_tensor.NestedTensor([torch.zeros(s) for s in shape])
    return torch.zeros(shape)


def sample(model, positive, negative, seed=0, steps=12, cfg=2.0, sampler="euler", scheduler="simple",
           latent_shape=(1, 16, 16, 16), latent=None, **kwargs):
    """comfy.sample.sample as KSampler (or, with start_step/last_step/disable_noise, KSamplerAdvanced) runs it.
    A nested (several streams) result is returned packed into one tensor, as the sampler samples it
    (comfy.utils.pack_latents), so results compare with torch.equal like any other."""
    import comfy.sample

    latent = empty_latent(latent_shape) if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed)
    out = comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                              seed=seed, disable_pbar=True, **kwargs)
    if getattr(out, "is_nested", False):
        import comfy.utils

        out = comfy.utils.pack_latents(out.unbind())[0]
    return out


@contextlib.contextmanager
def observe(diffusion_model):
    """Record (step, cond_or_uncond) of every model call and of every call of the first block,
    plus what went into the first block and the final layer. Hooks are removed on exit."""
    from comfyui_magcache.magcache import Schedule

    log = {"model": [], "block0": [], "img_in": [], "final_in": []}
    current = {}

    def where(to):
        sched = Schedule.from_values(to["sample_sigmas"])
        return sched.step_index(float(to["sigmas"][0])), tuple(to["cond_or_uncond"])

    def on_model(module, args, kwargs):
        current["at"] = where(kwargs["transformer_options"])
        log["model"].append(current["at"])

    def on_block0(module, args, kwargs):
        log["block0"].append(where(kwargs["transformer_options"]))

    def on_img_in(module, args, output):
        log["img_in"].append((current["at"], output.detach().clone()))

    def on_final(module, args):
        log["final_in"].append((current["at"], args[0].detach().clone()))

    first_block = diffusion_model.double_blocks[0]
    handles = [diffusion_model.register_forward_pre_hook(on_model, with_kwargs=True),
               first_block.register_forward_pre_hook(on_block0, with_kwargs=True),
               diffusion_model.img_in.register_forward_hook(on_img_in),
               diffusion_model.final_layer.register_forward_pre_hook(on_final)]
    try:
        yield log
    finally:
        for h in handles:
            h.remove()


def skipped_steps(log, branch: int) -> list[int]:
    """Steps at which `branch` was evaluated by the model but block 0 never ran for it."""
    seen = {s for s, cou in log["model"] if branch in cou}
    computed = {s for s, cou in log["block0"] if branch in cou}
    return sorted(seen - computed)


def capture_log() -> list[str]:
    """The 'MagCache' logger's messages, collected in a list and kept off stdout."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("MagCache")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return messages


def tiny_sd15():
    """A tiny SD1.5 UNet (ComfyUI's own class): a model MagCache does not support."""
    from comfy import model_patcher, supported_models

    unet = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                adm_in_channels=None, in_channels=4, model_channels=32, num_res_blocks=[1], transformer_depth=[0],
                channel_mult=[1], transformer_depth_middle=0, use_linear_in_transformer=False, context_dim=32,
                num_heads=2, num_head_channels=-1, transformer_depth_output=[0, 0])
    config = supported_models.SD15(unet)
    config.set_inference_dtype(torch.float32, None)
    return model_patcher.ModelPatcher(config.get_model({}, device="cpu"), torch.device("cpu"), torch.device("cpu"))


def after_each_run(model, see) -> None:
    """Call see(run) with each sampling run's MagCache Run as it ends, before the run releases its
    state: an outermost OUTER_SAMPLE wrapper on `model` (a ModelPatcher, changed in place)."""
    from comfyui_magcache.model_patches import engine

    def probe(executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            run = executor.class_obj.model_options["transformer_options"].get(engine.RUN_KEY)
            if run is not None:
                see(run)

    model.add_wrapper_with_key("outer_sample", "zz_probe", probe)


def keep_residual_refs(model) -> list:
    """Weak references to every residual each sampling run of `model` held, taken as the run ends,
    so a test can check they were all released."""
    import weakref

    refs: list = []
    after_each_run(model, lambda run: refs.extend(weakref.ref(st.residual) for st in run.state.branches.values()
                                                  if st.residual is not None))
    return refs


def census() -> tuple[int, int, int]:
    """(live objects, live tensors, threads) after a collection."""
    import gc
    import threading

    gc.collect()
    objects = gc.get_objects()
    return len(objects), sum(isinstance(o, torch.Tensor) for o in objects), threading.active_count()
