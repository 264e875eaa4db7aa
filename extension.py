"""The pack's V3 entry point: the nodes of every node module, registered together. A module of its own,
so that the node modules need not import each other (tests/unit/test_import_graph.py)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .model_patches import available_specs
from .nodes import CompileModel, MagCache, MagCacheCalibration, MagCacheCalibrationPlot
from .nodes_compare import MagCacheCompare


class MagCacheExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        available_specs()  # logs, once, any family whose model class this ComfyUI lacks
        from .nodes_framepack import FRAMEPACK_NODES
        from .nodes_raylight import raylight_nodes  # RayMagCache, only where raylight is installed

        return [MagCache, MagCacheCalibration, MagCacheCalibrationPlot, CompileModel, MagCacheCompare,
                *FRAMEPACK_NODES, *raylight_nodes()]


async def comfy_entrypoint() -> MagCacheExtension:
    return MagCacheExtension()
