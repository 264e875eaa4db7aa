"""RayMagCache: MagCache for raylight graphs (komikndr/raylight), whose models live in Ray actors, one per
GPU, and whose graph carries RAY_ACTORS instead of MODEL.

Like raylight's own cache nodes (its RayEasyCache / RayTeaCache, comfy_extra_dist/nodes_easycache.py,
with the ray_patch decorator), the node sends a function to every actor
(`actor.model_function_runner.remote(fn)`), which replaces the actor's ModelPatcher by fn(patcher): here
the MagCache node's own execute on that patcher. What keeps the ranks in step is in
model_patches/distributed.py. Registered only where raylight is installed; the pack never imports
raylight or ray otherwise."""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

from comfy_api.latest import io

from .magcache import MagCacheConfig
from .nodes import MagCache, check_settings_from

PACK_DIR = str(Path(__file__).resolve().parent)
RAY_ACTORS = io.Custom("RAY_ACTORS")


def raylight_installed() -> bool:
    """raylight importable, or a custom node folder holding its package (ComfyUI may load it after this pack)."""
    if importlib.util.find_spec("raylight") is not None:
        return True
    try:
        import folder_paths

        roots = folder_paths.get_folder_paths("custom_nodes")
    except Exception:
        return False
    return any(Path(root, d, "src", "raylight", "__init__.py").is_file()
               for root in roots if os.path.isdir(root) for d in os.listdir(root))


def in_actor(model, package: str, pack_dir: str, settings: tuple, options: dict | None = None):
    """Runs inside an actor (sent by value): this pack's MagCache node on the actor's ModelPatcher. The
    pack is imported under the name it has in ComfyUI's process, from its folder if the actor has not
    loaded it."""
    module = sys.modules.get(package)
    if module is None:
        spec = importlib.util.spec_from_file_location(package, os.path.join(pack_dir, "__init__.py"),
                                                      submodule_search_locations=[pack_dir])
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    nodes = importlib.import_module(package + ".nodes")
    return nodes.MagCache.execute(model, *settings, **(options or {})).result[0]


def actor_function(*settings, **options):
    """The function each actor applies to its patcher, pickled by value: Ray pickles with its own copy of
    cloudpickle (ray.cloudpickle), so this module is registered with it, and with cloudpickle if installed."""
    for name in ("ray.cloudpickle", "cloudpickle"):
        try:
            importlib.import_module(name).register_pickle_by_value(sys.modules[__name__])
        except ImportError:
            pass
    return functools.partial(in_actor, package=__package__, pack_dir=PACK_DIR, settings=settings, options=options)


class RayMagCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        schema = MagCache.define_schema()
        inputs = [i for i in schema.inputs if i.id not in ("model", "ratios")]
        return io.Schema(
            node_id="RayMagCache",
            display_name="MagCache (raylight)",
            category="MagCache",
            description="MagCache inside every raylight worker: the same settings as MagCache; every rank takes "
                        "the same decisions (sequence parallel and CFG parallel), so the output is that of MagCache "
                        "on one GPU. Put it after raylight's model loader.",
            inputs=[RAY_ACTORS.Input("ray_actors", tooltip="raylight's workers (from its model loader); MagCache is "
                                                           "applied to the model inside each of them."),
                    *inputs],
            outputs=[RAY_ACTORS.Output(tooltip="The same workers, their models with MagCache.")],
        )

    @classmethod
    def execute(cls, ray_actors, model_type: str, magcache_thresh: float, retention_ratio: float, magcache_K: int,
                start_step: int = 0, end_step: int = -1, settings_from: str = "auto") -> io.NodeOutput:
        MagCacheConfig(thresh=magcache_thresh, retention_ratio=retention_ratio, K=magcache_K,
                       start_step=start_step, end_step=end_step)  # bad settings fail here, before any actor
        check_settings_from(settings_from, "RayMagCache")
        import ray

        fn = actor_function(model_type, magcache_thresh, retention_ratio, magcache_K, start_step, end_step,
                            settings_from=settings_from)
        ray.get([actor.model_function_runner.remote(fn) for actor in ray_actors["workers"]])
        return io.NodeOutput(ray_actors)


def raylight_nodes() -> list:
    return [RayMagCache] if raylight_installed() else []
