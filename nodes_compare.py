"""The MagCache Compare node (V3): how far a MagCache result is from the same seed sampled without it.
The maths is magcache/compare.py; this node shows its figures on the node and in the log."""
from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from .magcache.compare import DEFAULT_AMPLIFY, CompareError, compare
from .model_patches import node_text

log = logging.getLogger("MagCache")


class MagCacheCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagCacheCompare",
            display_name="MagCache Compare",
            category="MagCache",
            description="Compares a MagCache result with the same seed sampled without MagCache: PSNR and SSIM "
                        "(per frame for a batch or video, and their mean) shown on this node and in the log, and "
                        "an amplified difference image.",
            inputs=[
                io.Image.Input("reference", tooltip="The image (or frames) sampled WITHOUT MagCache."),
                io.Image.Input("test", tooltip="The same seed, prompt and settings sampled WITH MagCache; same "
                                               "size and frame count as the reference."),
                io.Float.Input("amplify", default=DEFAULT_AMPLIFY, min=1.0, max=100.0, step=1.0,
                               tooltip="The difference image is |reference - test| times this (then clipped), "
                                       "so small differences become visible."),
            ],
            outputs=[
                io.Image.Output("difference", tooltip="|reference - test| x amplify, per frame (black: identical)."),
                io.Float.Output("psnr", tooltip="PSNR in dB over all frames (higher is closer; inf: identical)."),
                io.Float.Output("ssim", tooltip="Mean SSIM of the frames (1: identical)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reference, test, amplify: float = DEFAULT_AMPLIFY) -> io.NodeOutput:
        try:
            result = compare(reference, test, amplify)
        except CompareError as e:
            raise CompareError(f"MagCache Compare: {e}") from None
        text = result.text()
        log.info(text)
        node_text.show(text)  # on this node in the UI, when a server runs
        shown = {**ui.PreviewImage(result.difference, cls=cls).as_dict(), "text": (text,)}
        return io.NodeOutput(result.difference, result.mean_psnr, result.mean_ssim, ui=shown)
