"""Writes examples/*.json, ComfyUI UI-format workflows: every example a family's spec declares
(model_patches: FamilySpec.examples), each from its template below with the spec's parameters.

    python scripts/make_examples.py

A graph is a list of nodes (type, widget values, {input: (source node, output slot)}), made a UI
workflow by workflow_graph.py (node and output types in its TYPES). A new family
whose pipeline is loader -> MagCache -> text encoder -> sampler -> decode uses `text_to_image` with
its own parameters; the other templates are the pipelines of particular examples."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import load_pack  # noqa: E402  (the pack as a package, without ComfyUI)

OUT = Path(__file__).resolve().parents[1] / "examples"

from workflow_graph import TYPES, WIDGET_SOCKETS, workflow  # noqa: E402,F401  (re-exported)


def flux() -> dict:
    note = ("MagCache for Flux dev: model_type flux (or auto), thresh 0.24, retention 0.1, K 5 - the MagCache "
            "authors' recommended settings for 28 steps (as in their script, the step that maps to step 11 of "
            "28 is always computed). Lower thresh / K if details suffer. Files: "
            "models/diffusion_models/flux1-dev.safetensors, models/text_encoders/clip_l.safetensors + "
            "t5xxl_fp16.safetensors, models/vae/ae.safetensors.")
    return workflow([
        (1, "UNETLoader", ["flux1-dev.safetensors", "default"], {}),
        (2, "MagCache", ["flux", 0.24, 0.1, 5, 0, -1, "auto"], {"model": (1, 0)}),
        (3, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], {}),
        (4, "CLIPTextEncode", ["a red fox in a snowy forest at dawn, photograph"], {"clip": (3, 0)}),
        (5, "FluxGuidance", [3.5], {"conditioning": (4, 0)}),
        (6, "ConditioningZeroOut", [], {"conditioning": (4, 0)}),
        (7, "EmptySD3LatentImage", [1024, 1024, 1], {}),
        (8, "KSampler", [42, "fixed", 28, 1.0, "euler", "simple", 1.0],
         {"model": (2, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (7, 0)}),
        (9, "VAELoader", ["ae.safetensors"], {}),
        (10, "VAEDecode", [], {"samples": (8, 0), "vae": (9, 0)}),
        (11, "SaveImage", ["MagCache_flux"], {"images": (10, 0)}),
        (12, "Note", [note], {}),
    ])


def flux_kontext() -> dict:
    note = ("MagCache for Flux-Kontext dev: model_type flux_kontext (auto also finds it from the reference "
            "latent), thresh 0.05, retention 0.2, K 4 - the recommended settings for 20 steps (for 28 steps the "
            "authors' 28-step table: flux_kontext_28steps, which auto takes at 25 steps or more). Files: "
            "models/diffusion_models/flux1-dev-kontext_fp8_scaled.safetensors, models/text_encoders/"
            "clip_l.safetensors + t5xxl_fp8_e4m3fn_scaled.safetensors, models/vae/ae.safetensors; an input image.")
    return workflow([
        (1, "UNETLoader", ["flux1-dev-kontext_fp8_scaled.safetensors", "default"], {}),
        (2, "MagCache", ["flux_kontext", 0.05, 0.2, 4, 0, -1, "auto"], {"model": (1, 0)}),
        (3, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "flux", "default"], {}),
        (4, "CLIPTextEncode", ["make it a watercolor painting"], {"clip": (3, 0)}),
        (5, "LoadImage", ["example.png", "image"], {}),
        (6, "FluxKontextImageScale", [], {"image": (5, 0)}),
        (7, "VAELoader", ["ae.safetensors"], {}),
        (8, "VAEEncode", [], {"pixels": (6, 0), "vae": (7, 0)}),
        (9, "ReferenceLatent", [], {"conditioning": (4, 0), "latent": (8, 0)}),
        (10, "FluxGuidance", [2.5], {"conditioning": (9, 0)}),
        (11, "ConditioningZeroOut", [], {"conditioning": (4, 0)}),
        (12, "KSampler", [42, "fixed", 20, 1.0, "euler", "simple", 1.0],
         {"model": (2, 0), "positive": (10, 0), "negative": (11, 0), "latent_image": (8, 0)}),
        (13, "VAEDecode", [], {"samples": (12, 0), "vae": (7, 0)}),
        (14, "SaveImage", ["MagCache_flux_kontext"], {"images": (13, 0)}),
        (15, "Note", [note], {}),
    ])


CALIBRATION_NOTE = ("Calibration: run this once. The MagCache Calibration node records the magnitude ratios while the "
                    "sampler runs normally (nothing is skipped, the image is unchanged) and saves them as the profile "
                    "named in it, in ComfyUI's user folder (user/magcache/<name>.json, with a plot beside it). "
                    "Then pick 'profile:<name>' as model_type in a MagCache node (refresh the page to see it), or "
                    "connect the 'ratios' output to MagCache's 'ratios' input. Calibrate again when you change the "
                    "step count a lot, the scheduler, or use a fine-tune or a model without a built-in table.")


def calibration_tail(first_id, cal, pos, neg, latent, vae, sampling, prefix, settings, note):
    """Sampler, decode, save, plot, preview and a note after calibration node `cal`: ids first_id...
    sampling: (steps, cfg, sampler, scheduler)."""
    k, d, s, p, v, n = range(first_id, first_id + 6)
    steps, cfg, sampler, scheduler = sampling
    return [
        (k, "KSampler", [42, "fixed", steps, cfg, sampler, scheduler, 1.0],
         {"model": (cal, 0), "positive": pos, "negative": neg, "latent_image": latent}),
        (d, "VAEDecode", [], {"samples": (k, 0), "vae": vae}),
        (s, "SaveImage", [prefix], {"images": (d, 0)}),
        (p, "MagCacheCalibrationPlot", list(settings), {"ratios": (cal, 1), "after": (k, 0)}),
        (v, "PreviewImage", [], {"images": (p, 0)}),
        (n, "Note", [CALIBRATION_NOTE + " " + note], {}),
    ]


def chroma_calibration() -> dict:
    return workflow([
        (1, "UNETLoader", ["chroma-unlocked-v50.safetensors", "default"], {}),
        (2, "CLIPLoader", ["t5xxl_fp16.safetensors", "chroma", "default"], {}),
        (3, "CLIPTextEncode", ["a lighthouse on a cliff at sunset, oil painting"], {"clip": (2, 0)}),
        (4, "CLIPTextEncode", ["blurry, low quality"], {"clip": (2, 0)}),
        (5, "EmptySD3LatentImage", [1024, 1024, 1], {}),
        (6, "VAELoader", ["ae.safetensors"], {}),
        (7, "MagCacheCalibration", ["chroma_calibration", "chroma_26steps"], {"model": (1, 0)}),
        *calibration_tail(8, 7, (3, 0), (4, 0), (5, 0), (6, 0), (26, 4.0, "euler", "beta"),
                          "MagCache_chroma_calibration", (0.10, 0.25, 2),
                          "Chroma: 26 steps, cfg 4 (two branches); the plot marks what 0.10 / 0.25 / 2 would skip. "
                          "Files: chroma-unlocked-v50.safetensors, t5xxl_fp16.safetensors, ae.safetensors."),
    ])


def flux_kontext_calibration() -> dict:
    return workflow([
        (1, "UNETLoader", ["flux1-dev-kontext_fp8_scaled.safetensors", "default"], {}),
        (2, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "flux", "default"], {}),
        (3, "CLIPTextEncode", ["make it a watercolor painting"], {"clip": (2, 0)}),
        (4, "LoadImage", ["example.png", "image"], {}),
        (5, "FluxKontextImageScale", [], {"image": (4, 0)}),
        (6, "VAELoader", ["ae.safetensors"], {}),
        (7, "VAEEncode", [], {"pixels": (5, 0), "vae": (6, 0)}),
        (8, "ReferenceLatent", [], {"conditioning": (3, 0), "latent": (7, 0)}),
        (9, "FluxGuidance", [2.5], {"conditioning": (8, 0)}),
        (10, "ConditioningZeroOut", [], {"conditioning": (3, 0)}),
        (11, "MagCacheCalibration", ["flux_kontext_calibration", "flux_kontext_20steps"], {"model": (1, 0)}),
        *calibration_tail(12, 11, (9, 0), (10, 0), (7, 0), (6, 0), (20, 1.0, "euler", "simple"),
                          "MagCache_kontext_calibration", (0.05, 0.2, 4),
                          "Flux-Kontext: 20 steps, cfg 1 (one branch), an input image as reference; the plot "
                          "marks what 0.05 / 0.2 / 4 would skip."),
    ])


def calibration() -> dict:
    """The generic one: any supported model, model_type auto."""
    return workflow([
        (1, "UNETLoader", ["flux1-dev.safetensors", "default"], {}),
        (2, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], {}),
        (3, "CLIPTextEncode", ["a red fox in a snowy forest at dawn, photograph"], {"clip": (2, 0)}),
        (4, "FluxGuidance", [3.5], {"conditioning": (3, 0)}),
        (5, "ConditioningZeroOut", [], {"conditioning": (3, 0)}),
        (6, "EmptySD3LatentImage", [1024, 1024, 1], {}),
        (7, "VAELoader", ["ae.safetensors"], {}),
        (8, "MagCacheCalibration", ["auto", "my_model_20steps"], {"model": (1, 0)}),
        *calibration_tail(9, 8, (4, 0), (5, 0), (6, 0), (7, 0), (20, 1.0, "euler", "simple"),
                          "MagCache_calibration", (0.24, 0.1, 5),
                          "Generic: swap in your own model, prompt, step count, sampler and scheduler (the ones you "
                          "will use with MagCache); model_type auto works for every supported family."),
    ])


WAN_NEG = "blurry, static, low quality, distorted, watermark, text"
UMT5 = ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"]


def chroma() -> dict:
    return workflow([
        (1, "UNETLoader", ["chroma-unlocked-v50.safetensors", "default"], {}),
        (2, "MagCache", ["chroma", 0.10, 0.25, 2, 0, -1, "auto"], {"model": (1, 0)}),
        (3, "CLIPLoader", ["t5xxl_fp16.safetensors", "chroma", "default"], {}),
        (4, "CLIPTextEncode", ["a lighthouse on a cliff at sunset, oil painting"], {"clip": (3, 0)}),
        (5, "CLIPTextEncode", ["blurry, low quality"], {"clip": (3, 0)}),
        (6, "EmptySD3LatentImage", [1024, 1024, 1], {}),
        (7, "KSampler", [42, "fixed", 26, 4.0, "euler", "beta", 1.0],
         {"model": (2, 0), "positive": (4, 0), "negative": (5, 0), "latent_image": (6, 0)}),
        (8, "VAELoader", ["ae.safetensors"], {}),
        (9, "VAEDecode", [], {"samples": (7, 0), "vae": (8, 0)}),
        (10, "SaveImage", ["MagCache_chroma"], {"images": (9, 0)}),
        (11, "Note", ["MagCache for Chroma: model_type chroma (or auto), thresh 0.10, retention 0.25, K 2 (the "
                      "MagCache authors' settings; the table is calibrated for 26 steps with CFG). Files: "
                      "models/diffusion_models/chroma-unlocked-v50.safetensors, models/text_encoders/"
                      "t5xxl_fp16.safetensors, models/vae/ae.safetensors."], {}),
    ])


def hunyuanvideo() -> dict:
    return workflow([
        (1, "UNETLoader", ["hunyuan_video_t2v_720p_bf16.safetensors", "default"], {}),
        (2, "ModelSamplingSD3", [7.0], {"model": (1, 0)}),
        (3, "MagCache", ["hunyuan_video_544p", 0.24, 0.2, 6, 0, -1, "auto"], {"model": (2, 0)}),
        (4, "DualCLIPLoader", ["clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors", "hunyuan_video",
                               "default"], {}),
        (5, "CLIPTextEncode", ["a cat walks through tall grass, cinematic"], {"clip": (4, 0)}),
        (6, "FluxGuidance", [6.0], {"conditioning": (5, 0)}),
        (7, "ConditioningZeroOut", [], {"conditioning": (5, 0)}),
        (8, "EmptyHunyuanLatentVideo", [848, 480, 73, 1], {}),
        (9, "KSampler", [42, "fixed", 50, 1.0, "euler", "simple", 1.0],
         {"model": (3, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (8, 0)}),
        (10, "VAELoader", ["hunyuan_video_vae_bf16.safetensors"], {}),
        (11, "VAEDecodeTiled", [256, 64, 64, 8], {"samples": (9, 0), "vae": (10, 0)}),
        (12, "SaveAnimatedWEBP", ["MagCache_hunyuanvideo", 24.0, False, 90, "default"], {"images": (11, 0)}),
        (13, "Note", ["MagCache for HunyuanVideo T2V: model_type hunyuan_video_544p, the authors' table for "
                      "544x960 and the nearest to this 848x480 video (auto picks it; hunyuan_video is their 720p "
                      "table), thresh 0.24, retention 0.2, K 6 (the authors' settings for 50 steps). Files: "
                      "models/diffusion_models/"
                      "hunyuan_video_t2v_720p_bf16.safetensors, models/text_encoders/clip_l.safetensors + "
                      "llava_llama3_fp8_scaled.safetensors, models/vae/hunyuan_video_vae_bf16.safetensors."], {}),
    ])


# Wan2.1 T2V 1.3B up to its latent: the model with MagCache, the prompts, the empty video (nodes 1-7)
WAN21_T2V_HEAD = [
        (1, "UNETLoader", ["wan2.1_t2v_1.3B_fp16.safetensors", "default"], {}),
        (2, "ModelSamplingSD3", [8.0], {"model": (1, 0)}),
        (3, "MagCache", ["wan2.1_t2v_1.3B", 0.12, 0.2, 4, 0, -1, "auto"], {"model": (2, 0)}),
        (4, "CLIPLoader", UMT5, {}),
        (5, "CLIPTextEncode", ["a fox running through a snowy forest, cinematic"], {"clip": (4, 0)}),
        (6, "CLIPTextEncode", [WAN_NEG], {"clip": (4, 0)}),
        (7, "EmptyHunyuanLatentVideo", [832, 480, 33, 1], {}),
]


def wan21_t2v() -> dict:
    return workflow([
        *WAN21_T2V_HEAD,
        (8, "KSampler", [42, "fixed", 50, 6.0, "uni_pc", "simple", 1.0],
         {"model": (3, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (7, 0)}),
        (9, "VAELoader", ["wan_2.1_vae.safetensors"], {}),
        (10, "VAEDecode", [], {"samples": (8, 0), "vae": (9, 0)}),
        (11, "SaveAnimatedWEBP", ["MagCache_wan2.1_t2v", 16.0, False, 90, "default"], {"images": (10, 0)}),
        (12, "Note", ["MagCache for Wan2.1 T2V 1.3B: model_type wan2.1_t2v_1.3B (or auto), thresh 0.12, retention "
                      "0.2, K 4 (for the 14B: wan2.1_t2v_14B, 0.24 / 0.2 / 6). Tables are calibrated for 50 steps "
                      "with CFG. Files: models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors, "
                      "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors, "
                      "models/vae/wan_2.1_vae.safetensors."], {}),
    ])


def wan21_t2v_compare() -> dict:
    """Wan2.1 T2V sampled twice from one seed, with and without MagCache, and compared (MagCache Compare).
    Seed 7, not wan2.1_t2v.json's 42: the server test runs both, and ComfyUI would serve the identical
    MagCache sampler from its cache."""
    note = ("MagCache Compare: the same seed sampled twice, with MagCache (top sampler) and without it (bottom "
            "sampler, straight from the model); MagCache Compare shows PSNR and SSIM of the MagCache video against "
            "the plain one (per frame and their mean) on the node and in the log, and previews |a - b| x 10. "
            "Higher PSNR / SSIM is closer; tune magcache_thresh and magcache_K by them. Files as in wan2.1_t2v.json: "
            "models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors, "
            "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors, models/vae/wan_2.1_vae.safetensors.")
    return workflow([
        *WAN21_T2V_HEAD,
        (8, "KSampler", [7, "fixed", 50, 6.0, "uni_pc", "simple", 1.0],
         {"model": (3, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (7, 0)}),
        (9, "KSampler", [7, "fixed", 50, 6.0, "uni_pc", "simple", 1.0],
         {"model": (2, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (7, 0)}),
        (10, "VAELoader", ["wan_2.1_vae.safetensors"], {}),
        (11, "VAEDecode", [], {"samples": (8, 0), "vae": (10, 0)}),
        (12, "VAEDecode", [], {"samples": (9, 0), "vae": (10, 0)}),
        (13, "MagCacheCompare", [10.0], {"reference": (12, 0), "test": (11, 0)}),
        (14, "SaveAnimatedWEBP", ["MagCache_wan2.1_t2v", 16.0, False, 90, "default"], {"images": (11, 0)}),
        (15, "Note", [note], {}),
    ])


def wan21_i2v() -> dict:
    return workflow([
        (1, "UNETLoader", ["wan2.1_i2v_480p_14B_fp16.safetensors", "default"], {}),
        (2, "ModelSamplingSD3", [8.0], {"model": (1, 0)}),
        (3, "MagCache", ["wan2.1_i2v_480p_14B", 0.24, 0.2, 6, 0, -1, "auto"], {"model": (2, 0)}),
        (4, "CLIPLoader", UMT5, {}),
        (5, "CLIPTextEncode", ["the woman turns her head and smiles"], {"clip": (4, 0)}),
        (6, "CLIPTextEncode", [WAN_NEG], {"clip": (4, 0)}),
        (7, "CLIPVisionLoader", ["clip_vision_h.safetensors"], {}),
        (8, "LoadImage", ["example.png", "image"], {}),
        (9, "CLIPVisionEncode", ["none"], {"clip_vision": (7, 0), "image": (8, 0)}),
        (10, "VAELoader", ["wan_2.1_vae.safetensors"], {}),
        (11, "WanImageToVideo", [832, 480, 33, 1],
         {"positive": (5, 0), "negative": (6, 0), "vae": (10, 0), "clip_vision_output": (9, 0),
          "start_image": (8, 0)}),
        (12, "KSampler", [42, "fixed", 40, 6.0, "uni_pc", "simple", 1.0],
         {"model": (3, 0), "positive": (11, 0), "negative": (11, 1), "latent_image": (11, 2)}),
        (13, "VAEDecode", [], {"samples": (12, 0), "vae": (10, 0)}),
        (14, "SaveAnimatedWEBP", ["MagCache_wan2.1_i2v", 16.0, False, 90, "default"], {"images": (13, 0)}),
        (15, "Note", ["MagCache for Wan2.1 I2V 14B: model_type wan2.1_i2v_480p_14B for 480p (wan2.1_i2v_720p_14B "
                      "for 720p; auto picks by the video size), thresh 0.24, retention 0.2, K 6, for 40 steps. "
                      "Files: models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors, models/text_encoders/"
                      "umt5_xxl_fp8_e4m3fn_scaled.safetensors, models/clip_vision/clip_vision_h.safetensors, "
                      "models/vae/wan_2.1_vae.safetensors; an input image."], {}),
    ])


def wan21_vace() -> dict:
    return workflow([
        (1, "UNETLoader", ["wan2.1_vace_1.3B_fp16.safetensors", "default"], {}),
        (2, "ModelSamplingSD3", [8.0], {"model": (1, 0)}),
        (3, "MagCache", ["wan2.1_vace_1.3B", 0.02, 0.2, 3, 0, -1, "auto"], {"model": (2, 0)}),
        (4, "CLIPLoader", UMT5, {}),
        (5, "CLIPTextEncode", ["a paper boat drifting down a rainy street"], {"clip": (4, 0)}),
        (6, "CLIPTextEncode", [WAN_NEG], {"clip": (4, 0)}),
        (7, "VAELoader", ["wan_2.1_vae.safetensors"], {}),
        (8, "LoadImage", ["example.png", "image"], {}),
        (9, "WanVaceToVideo", [832, 480, 33, 1, 1.0],
         {"positive": (5, 0), "negative": (6, 0), "vae": (7, 0), "reference_image": (8, 0)}),
        (10, "KSampler", [42, "fixed", 50, 6.0, "uni_pc", "simple", 1.0],
         {"model": (3, 0), "positive": (9, 0), "negative": (9, 1), "latent_image": (9, 2)}),
        (11, "TrimVideoLatent", [0], {"samples": (10, 0), "trim_amount": (9, 3)}),
        (12, "VAEDecode", [], {"samples": (11, 0), "vae": (7, 0)}),
        (13, "SaveAnimatedWEBP", ["MagCache_wan2.1_vace", 16.0, False, 90, "default"], {"images": (12, 0)}),
        (14, "Note", ["MagCache for Wan2.1 VACE 1.3B: model_type wan2.1_vace_1.3B (or auto; 14B: "
                      "wan2.1_vace_14B), thresh 0.02, retention 0.2, K 3, for 50 steps. VACE's hint blocks are "
                      "skipped with the main blocks. Files: models/diffusion_models/wan2.1_vace_1.3B_fp16.safetensors, "
                      "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors, models/vae/wan_2.1_vae.safetensors; "
                      "a reference image (or a control video)."], {}),
    ])


def wan22_t2v_a14b() -> dict:
    return workflow([
        (1, "UNETLoader", ["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "default"], {}),
        (2, "UNETLoader", ["wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "default"], {}),
        (3, "ModelSamplingSD3", [8.0], {"model": (1, 0)}),
        (4, "ModelSamplingSD3", [8.0], {"model": (2, 0)}),
        (5, "MagCache", ["wan2.2_t2v_14B", 0.06, 0.4, 2, 0, -1, "auto"], {"model": (3, 0)}),
        (6, "MagCache", ["wan2.2_t2v_14B", 0.06, 0.4, 2, 0, -1, "auto"], {"model": (4, 0)}),
        (7, "CLIPLoader", UMT5, {}),
        (8, "CLIPTextEncode", ["a hot air balloon over a misty valley at sunrise"], {"clip": (7, 0)}),
        (9, "CLIPTextEncode", [WAN_NEG], {"clip": (7, 0)}),
        (10, "EmptyHunyuanLatentVideo", [832, 480, 33, 1], {}),
        (11, "KSamplerAdvanced", ["enable", 42, "fixed", 40, 3.5, "euler", "simple", 0, 20, "enable"],
         {"model": (5, 0), "positive": (8, 0), "negative": (9, 0), "latent_image": (10, 0)}),
        (12, "KSamplerAdvanced", ["disable", 42, "fixed", 40, 3.5, "euler", "simple", 20, 10000, "disable"],
         {"model": (6, 0), "positive": (8, 0), "negative": (9, 0), "latent_image": (11, 0)}),
        (13, "VAELoader", ["wan_2.1_vae.safetensors"], {}),
        (14, "VAEDecode", [], {"samples": (12, 0), "vae": (13, 0)}),
        (15, "SaveAnimatedWEBP", ["MagCache_wan2.2_t2v", 16.0, False, 90, "default"], {"images": (14, 0)}),
        (16, "Note", ["MagCache for Wan2.2 A14B (two experts): one MagCache per expert, both wan2.2_t2v_14B (auto "
                      "cannot tell an A14B expert from Wan2.1 14B), thresh 0.06, retention 0.4, K 2 (the MagCache "
                      "authors' setting for T2V-A14B; I2V-A14B: wan2.2_i2v_14B, 0.06 / 0.1 / 2). Each KSamplerAdvanced "
                      "reads its part of the 40-step table (high noise steps 0-19, low noise 20-39) and, as in the "
                      "authors' script, the retention applies per expert: the first 40% of the high-noise steps and "
                      "of the low-noise steps are computed. Files: models/"
                      "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors + "
                      "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors, models/text_encoders/"
                      "umt5_xxl_fp8_e4m3fn_scaled.safetensors, models/vae/wan_2.1_vae.safetensors."], {}),
    ])


def qwen_image() -> dict:
    return workflow([
        (1, "UNETLoader", ["qwen_image_fp8_e4m3fn.safetensors", "default"], {}),
        (2, "ModelSamplingAuraFlow", [3.1], {"model": (1, 0)}),
        (3, "MagCache", ["qwen_image", 0.06, 0.20, 2, 0, -1, "auto"], {"model": (2, 0)}),
        (4, "CLIPLoader", ["qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image", "default"], {}),
        (5, "CLIPTextEncode", ["a neon sign that reads 'MagCache' on a brick wall at night"], {"clip": (4, 0)}),
        (6, "CLIPTextEncode", [""], {"clip": (4, 0)}),
        (7, "EmptySD3LatentImage", [1328, 1328, 1], {}),
        (8, "KSampler", [42, "fixed", 40, 2.5, "euler", "simple", 1.0],
         {"model": (3, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (7, 0)}),
        (9, "VAELoader", ["qwen_image_vae.safetensors"], {}),
        (10, "VAEDecode", [], {"samples": (8, 0), "vae": (9, 0)}),
        (11, "SaveImage", ["MagCache_qwen_image"], {"images": (10, 0)}),
        (12, "Note", ["MagCache for Qwen-Image: model_type qwen_image (or auto), thresh 0.06, retention 0.20, K 2 "
                      "(the MagCache authors' setting 'without degrading visual quality', 1.3x; 0.10 / 0.20 / 2 is "
                      "their faster one, 1.5x; table calibrated for 40 steps with CFG; auto takes the authors' "
                      "50-step table at 46 steps or more, and the Qwen-Image-Edit table when the conditioning has "
                      "reference latents). Files: "
                      "models/diffusion_models/qwen_image_fp8_e4m3fn.safetensors, models/text_encoders/"
                      "qwen_2.5_vl_7b_fp8_scaled.safetensors, models/vae/qwen_image_vae.safetensors."], {}),
    ])


def qwen_image_edit() -> dict:
    note = ("MagCache for Qwen-Image-Edit 2509 (2511 and the first Edit the same way with their files): model_type "
            "auto takes the authors' Qwen-Image-Edit table because the prompt encoder hands the model the input image "
            "as reference latents (or choose qwen_image_edit). thresh 0.06, retention 0.2, K 2, 50 steps and CFG 4 "
            "are the settings of the MagCache authors' Qwen-Image-Edit script (E006K2R02); their table was measured "
            "on the first Qwen-Image-Edit, and using it for 2509 / 2511 is this pack's choice: model_type "
            "auto_calibrate measures your model instead. Files: models/diffusion_models/"
            "qwen_image_edit_2509_fp8_e4m3fn.safetensors, models/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors, "
            "models/vae/qwen_image_vae.safetensors; an input image.")
    return workflow([
        (1, "UNETLoader", ["qwen_image_edit_2509_fp8_e4m3fn.safetensors", "default"], {}),
        (2, "ModelSamplingAuraFlow", [3.0], {"model": (1, 0)}),
        (3, "MagCache", ["auto", 0.06, 0.20, 2, 0, -1, "auto"], {"model": (2, 0)}),
        (4, "CLIPLoader", ["qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image", "default"], {}),
        (5, "VAELoader", ["qwen_image_vae.safetensors"], {}),
        (6, "LoadImage", ["example.png", "image"], {}),
        (7, "ImageScaleToTotalPixels", ["lanczos", 1.0, 1], {"image": (6, 0)}),
        (8, "TextEncodeQwenImageEditPlus", ["make it a watercolor painting"], {"clip": (4, 0), "vae": (5, 0),
                                                                             "image1": (7, 0)}),
        (9, "TextEncodeQwenImageEditPlus", [""], {"clip": (4, 0), "vae": (5, 0), "image1": (7, 0)}),
        (10, "VAEEncode", [], {"pixels": (7, 0), "vae": (5, 0)}),
        (11, "KSampler", [42, "fixed", 50, 4.0, "euler", "simple", 1.0],
         {"model": (3, 0), "positive": (8, 0), "negative": (9, 0), "latent_image": (10, 0)}),
        (12, "VAEDecode", [], {"samples": (11, 0), "vae": (5, 0)}),
        (13, "SaveImage", ["MagCache_qwen_image_edit"], {"images": (12, 0)}),
        (14, "Note", [note], {}),
    ])


def text_to_image(unet: str, clip: tuple, vae: str, model_type: str, settings: tuple, steps: int, cfg: float,
                  prompt: str, note: str, negative: str | None = None, guidance: float | None = None,
                  sampling: tuple | None = None, latent: tuple = ("EmptySD3LatentImage", [1024, 1024, 1]),
                  sampler: str = "euler", scheduler: str = "simple", save: tuple = ("SaveImage", ["MagCache"]),
                  decode: tuple = ("VAEDecode", [])) -> dict:
    """The common pipeline: UNETLoader [-> model sampling node] -> MagCache -> KSampler -> VAEDecode -> save.
    clip: (loader node type, its widget values). sampling: (node type, widget values), e.g. a shift.
    decode: (node type, widget values): VAEDecodeTiled for long videos.
    negative None: the negative is the zeroed prompt (guidance-distilled models, cfg 1)."""
    nodes = [(1, "UNETLoader", [unet, "default"], {})]
    model = (1, 0)
    if sampling:
        nodes.append((2, sampling[0], list(sampling[1]), {"model": model}))
        model = (2, 0)
    nodes += [(3, "MagCache", [model_type, *settings, 0, -1, "auto"], {"model": model}),
              (4, clip[0], list(clip[1]), {}),
              (5, "CLIPTextEncode", [prompt], {"clip": (4, 0)})]
    pos = (5, 0)
    if guidance is not None:
        nodes.append((6, "FluxGuidance", [guidance], {"conditioning": pos}))
        pos = (6, 0)
    nodes.append((7, "CLIPTextEncode", [negative], {"clip": (4, 0)}) if negative is not None else
                 (7, "ConditioningZeroOut", [], {"conditioning": (5, 0)}))
    nodes += [(8, latent[0], list(latent[1]), {}),
              (9, "KSampler", [42, "fixed", steps, cfg, sampler, scheduler, 1.0],
               {"model": (3, 0), "positive": pos, "negative": (7, 0), "latent_image": (8, 0)}),
              (10, "VAELoader", [vae], {}),
              (11, decode[0], list(decode[1]), {"samples": (9, 0), "vae": (10, 0)}),
              (12, save[0], list(save[1]), {"images": (11, 0)}),
              (13, "Note", [note], {})]
    return workflow(nodes)


def ltx2_t2v(ckpt: str, text_encoder: str, model_type: str, settings: tuple, steps: int, cfg: float, size: tuple,
             frame_rate: int, prompt: str, negative: str, note: str) -> dict:
    """LTX-2 text to video with audio, one stage, core nodes only (in ComfyUI 0.8.0 and 0.33): the
    checkpoint holds the model and both VAEs; a video latent and an audio latent joined into one AV
    latent, sampled with the LTXV scheduler, separated, decoded and saved as a WebM video and a FLAC
    sound track (SaveVideo's widgets differ between the two versions; SaveWEBM and SaveAudio do not)."""
    width, height, length = size
    return workflow([
        (1, "CheckpointLoaderSimple", [ckpt], {}),
        (2, "MagCache", [model_type, *settings, 0, -1, "auto"], {"model": (1, 0)}),
        (3, "LTXAVTextEncoderLoader", [text_encoder, ckpt], {}),
        (4, "CLIPTextEncode", [prompt], {"clip": (3, 0)}),
        (5, "CLIPTextEncode", [negative], {"clip": (3, 0)}),
        (6, "LTXVConditioning", [float(frame_rate)], {"positive": (4, 0), "negative": (5, 0)}),
        (7, "EmptyLTXVLatentVideo", [width, height, length, 1], {}),
        (8, "LTXVAudioVAELoader", [ckpt], {}),
        (9, "LTXVEmptyLatentAudio", [length, frame_rate, 1], {"audio_vae": (8, 0)}),
        (10, "LTXVConcatAVLatent", [], {"video_latent": (7, 0), "audio_latent": (9, 0)}),
        (11, "RandomNoise", [42, "fixed"], {}),
        (12, "CFGGuider", [cfg], {"model": (2, 0), "positive": (6, 0), "negative": (6, 1)}),
        (13, "KSamplerSelect", ["euler"], {}),
        (14, "LTXVScheduler", [steps, 2.05, 0.95, True, 0.1], {"latent": (10, 0)}),
        (15, "SamplerCustomAdvanced", [], {"noise": (11, 0), "guider": (12, 0), "sampler": (13, 0),
                                           "sigmas": (14, 0), "latent_image": (10, 0)}),
        (16, "LTXVSeparateAVLatent", [], {"av_latent": (15, 0)}),
        (17, "VAEDecode", [], {"samples": (16, 0), "vae": (1, 2)}),
        (18, "LTXVAudioVAEDecode", [], {"samples": (16, 1), "audio_vae": (8, 0)}),
        (19, "SaveWEBM", ["MagCache_ltx2", "vp9", float(frame_rate), 32.0], {"images": (17, 0)}),
        (20, "SaveAudio", ["audio/MagCache_ltx2"], {"audio": (18, 0)}),
        (21, "Note", [note], {}),
    ])


TEMPLATES = {f.__name__: f for f in (flux, flux_kontext, chroma, hunyuanvideo, wan21_t2v, wan21_t2v_compare, wan21_i2v,
                                     wan21_vace, wan22_t2v_a14b, qwen_image, qwen_image_edit, calibration, chroma_calibration,
                                     flux_kontext_calibration, text_to_image, ltx2_t2v)}


def examples() -> dict:
    """{file: () -> workflow} for every example a registered family declares."""
    load_pack()
    from comfyui_magcache.model_patches import EXAMPLES as DECLARED

    return {name: (lambda e=e: TEMPLATES[e.template](**e.params)) for name, (_, e) in sorted(DECLARED.items())}


EXAMPLES = examples()

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, make in EXAMPLES.items():
        (OUT / name).write_text(json.dumps(make(), indent=1) + "\n", encoding="utf-8")
        print("wrote", OUT / name)
