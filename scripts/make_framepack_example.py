"""Writes examples/framepack.json: the example workflow of kijai's ComfyUI-FramePackWrapper
(example_workflows/framepack_hv_example.json at commit a7c4b70) with MagCache (FramePack) between its model
loader and FramePackSampler, on ComfyUI's own nodes where the wrapper's example uses other packs' (KJNodes'
Set/Get and size nodes, ImageResize+, VideoHelperSuite's VHS_VideoCombine) and without its optional end frame.

    python scripts/make_framepack_example.py

Settings: the authors' (MagCache4FramePack demo: 0.10 / 0.2 / 3 at 25 steps). The wrapper's node types are
listed here (FRAMEPACK_TYPES); the server test (tests/integration/test_framepack.py) checks them, and the
whole workflow, against a running ComfyUI with the wrapper installed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_graph import TYPES, workflow  # noqa: E402

FILE = Path(__file__).resolve().parents[1] / "examples" / "framepack.json"
FRAMEPACK_TYPES = dict(TYPES, **{
    "LoadFramePackModel": ([], [("model", "FramePackMODEL")]),
    "MagCacheFramePack": ([("model", "FramePackMODEL")], [("FramePackMODEL", "FramePackMODEL")]),
    "FramePackFindNearestBucket": ([("image", "IMAGE")], [("width", "INT"), ("height", "INT")]),
    "ImageScale": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "FramePackSampler": ([("model", "FramePackMODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                          ("start_latent", "LATENT"), ("image_embeds", "CLIP_VISION_OUTPUT")], [("samples", "LATENT")]),
})
NOTE = ("MagCache (FramePack) for kijai's ComfyUI-FramePackWrapper: model_type framepack (framepack_f1 for "
        "FramePack-F1 weights), thresh 0.10, retention 0.2, K 3: the MagCache authors' demo settings at 25 steps "
        "(MagCache4FramePack). FramePackSampler's use_teacache must be off. The image size should be a FramePack "
        "bucket (the wrapper's Find Nearest Bucket node gives it; here 544x704 for a portrait image). Files: "
        "models/diffusion_models/FramePackI2V_HY_bf16.safetensors, models/text_encoders/clip_l.safetensors + "
        "llava_llama3_fp16.safetensors, models/vae/hunyuan_video_vae_bf16.safetensors, "
        "models/clip_vision/sigclip_vision_patch14_384.safetensors.")


def framepack() -> dict:
    return workflow([
        (1, "LoadFramePackModel", ["FramePackI2V_HY_bf16.safetensors", "bf16", "disabled", "offload_device", "sdpa"],
         {}),
        (2, "MagCacheFramePack", ["framepack", 0.10, 0.2, 3, 0, -1], {"model": (1, 0)}),
        (3, "DualCLIPLoader", ["clip_l.safetensors", "llava_llama3_fp16.safetensors", "hunyuan_video", "default"], {}),
        (4, "CLIPTextEncode", ["majestic stag in a forest"], {"clip": (3, 0)}),
        (5, "ConditioningZeroOut", [], {"conditioning": (4, 0)}),
        (6, "LoadImage", ["example.png", "image"], {}),
        (7, "ImageScale", ["lanczos", 544, 704, "center"], {"image": (6, 0)}),
        (8, "VAELoader", ["hunyuan_video_vae_bf16.safetensors"], {}),
        (9, "VAEEncode", [], {"pixels": (7, 0), "vae": (8, 0)}),
        (10, "CLIPVisionLoader", ["sigclip_vision_patch14_384.safetensors"], {}),
        (11, "CLIPVisionEncode", ["center"], {"clip_vision": (10, 0), "image": (7, 0)}),
        (12, "FramePackSampler", [25, False, 0.15, 1.0, 10.0, 0.0, 47, "fixed", 9, 5.0, 6.0, "unipc_bh1", "disabled",
                                  1.0, 1.0],
         {"model": (2, 0), "positive": (4, 0), "negative": (5, 0), "start_latent": (9, 0), "image_embeds": (11, 0)}),
        (13, "VAEDecodeTiled", [256, 64, 64, 8], {"samples": (12, 0), "vae": (8, 0)}),
        (14, "SaveAnimatedWEBP", ["MagCache_framepack", 30.0, False, 90, "default"], {"images": (13, 0)}),
        (15, "Note", [NOTE], {}),
    ], FRAMEPACK_TYPES)


if __name__ == "__main__":
    FILE.write_text(json.dumps(framepack(), indent=1) + "\n", encoding="utf-8")
    print("wrote", FILE)
