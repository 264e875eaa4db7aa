"""UI-format ComfyUI workflows from a list of nodes, for scripts/make_examples.py: the node types the
examples use (their inputs and outputs, checked by the server test against a real ComfyUI's
/object_info) and the layout (left to right by dependency depth)."""
from __future__ import annotations

# node type -> (inputs [(name, type)], outputs [(name, type)]); the e2e test checks these against
# a real ComfyUI's /object_info. Inputs listed in WIDGET_SOCKETS are widgets fed by a link.
TYPES = {
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([], [("CLIP", "CLIP")]),
    "QuadrupleCLIPLoader": ([], [("CLIP", "CLIP")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "FluxGuidance": ([("conditioning", "CONDITIONING")], [("CONDITIONING", "CONDITIONING")]),
    "ConditioningZeroOut": ([("conditioning", "CONDITIONING")], [("CONDITIONING", "CONDITIONING")]),
    "ReferenceLatent": ([("conditioning", "CONDITIONING"), ("latent", "LATENT")], [("CONDITIONING", "CONDITIONING")]),
    "EmptySD3LatentImage": ([], [("LATENT", "LATENT")]),
    "EmptyFlux2LatentImage": ([], [("LATENT", "LATENT")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "FluxKontextImageScale": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ImageScaleToTotalPixels": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "TextEncodeQwenImageEditPlus": ([("clip", "CLIP"), ("vae", "VAE"), ("image1", "IMAGE")],
                                    [("CONDITIONING", "CONDITIONING")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "MagCache": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "MagCacheCalibration": ([("model", "MODEL")], [("MODEL", "MODEL"), ("ratios", "MAGCACHE_RATIOS")]),
    "MagCacheCalibrationPlot": ([("ratios", "MAGCACHE_RATIOS"), ("after", "LATENT")], [("IMAGE", "IMAGE")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "PreviewImage": ([("images", "IMAGE")], []),
    "ModelSamplingSD3": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "ModelSamplingAuraFlow": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "EmptyHunyuanLatentVideo": ([], [("LATENT", "LATENT")]),
    "VAEDecodeTiled": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "SaveAnimatedWEBP": ([("images", "IMAGE")], []),
    "CLIPVisionLoader": ([], [("CLIP_VISION", "CLIP_VISION")]),
    "CLIPVisionEncode": ([("clip_vision", "CLIP_VISION"), ("image", "IMAGE")], [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")]),
    "WanImageToVideo": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                         ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("start_image", "IMAGE")],
                        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")]),
    "WanVaceToVideo": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                        ("control_video", "IMAGE"), ("control_masks", "MASK"), ("reference_image", "IMAGE")],
                       [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"),
                        ("trim_latent", "INT")]),
    "TrimVideoLatent": ([("samples", "LATENT"), ("trim_amount", "INT")], [("LATENT", "LATENT")]),
    "KSamplerAdvanced": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                          ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "LTXAVTextEncoderLoader": ([], [("CLIP", "CLIP")]),
    "LTXVConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                         [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "EmptyLTXVLatentVideo": ([], [("LATENT", "LATENT")]),
    "LTXVAudioVAELoader": ([], [("Audio VAE", "VAE")]),
    "LTXVEmptyLatentAudio": ([("audio_vae", "VAE")], [("Latent", "LATENT")]),
    "LTXVConcatAVLatent": ([("video_latent", "LATENT"), ("audio_latent", "LATENT")], [("latent", "LATENT")]),
    "RandomNoise": ([], [("NOISE", "NOISE")]),
    "CFGGuider": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                  [("GUIDER", "GUIDER")]),
    "KSamplerSelect": ([], [("SAMPLER", "SAMPLER")]),
    "LTXVScheduler": ([("latent", "LATENT")], [("SIGMAS", "SIGMAS")]),
    "SamplerCustomAdvanced": ([("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                               ("latent_image", "LATENT")], [("output", "LATENT"), ("denoised_output", "LATENT")]),
    "LTXVSeparateAVLatent": ([("av_latent", "LATENT")], [("video_latent", "LATENT"), ("audio_latent", "LATENT")]),
    "LTXVAudioVAEDecode": ([("samples", "LATENT"), ("audio_vae", "VAE")], [("Audio", "AUDIO")]),
    "SaveWEBM": ([("images", "IMAGE")], []),
    "SaveAudio": ([("audio", "AUDIO")], []),
    "MagCacheCompare": ([("reference", "IMAGE"), ("test", "IMAGE")],
                        [("difference", "IMAGE"), ("psnr", "FLOAT"), ("ssim", "FLOAT")]),
    "Note": ([], []),
}


WIDGET_SOCKETS = {("TrimVideoLatent", "trim_amount")}
# Node sizes other than [320, 130]: a Note's text; MagCache Compare's figures and difference preview.
SIZES = {"Note": [420, 200], "MagCacheCompare": [420, 560]}


def workflow(nodes: list[tuple], types: dict = TYPES) -> dict:
    """nodes: [(id, type, widgets_values, {input_name: (src_id, src_slot)})]; types: TYPES, or TYPES with the
    node types of another pack (scripts/make_framepack_example.py)."""
    TYPES = types  # noqa: N806
    by_id = {n[0]: n for n in nodes}
    links, ui_nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    depth: dict[int, int] = {}

    def level(i):
        if i not in depth:
            depth[i] = 1 + max((level(src) for src, _ in by_id[i][3].values()), default=-1)
        return depth[i]

    for nid, ntype, _, ins in nodes:
        for name, (src, slot) in ins.items():
            link_id = len(links) + 1
            in_type = dict(TYPES[ntype][0])[name]
            links.append([link_id, src, slot, nid, [n for n, _ in TYPES[ntype][0]].index(name), in_type])
            out_links.setdefault((src, slot), []).append(link_id)
    tops: dict[int, int] = {}  # per column: where its next node goes
    for order, (nid, ntype, widgets, ins) in enumerate(sorted(nodes, key=lambda n: level(n[0]))):
        col = level(nid)
        top = tops.get(col, 60)
        size = SIZES.get(ntype, [320, 130])
        tops[col] = top + max(260, size[1] + 60)
        link_of = {l[3:5][1]: l[0] for l in links if l[3] == nid}
        node = {
            "id": nid, "type": ntype, "pos": [60 + 360 * col, top],
            "size": size, "flags": {}, "order": order, "mode": 0,
            "inputs": [dict({"name": n, "type": t, "link": link_of.get(k)},
                            **({"widget": {"name": n}} if (ntype, n) in WIDGET_SOCKETS else {}))
                       for k, (n, t) in enumerate(TYPES[ntype][0])],
            "outputs": [{"name": n, "type": t, "links": out_links.get((nid, k), []), "slot_index": k}
                        for k, (n, t) in enumerate(TYPES[ntype][1])],
            "properties": {"Node name for S&R": ntype} if ntype != "Note" else {"text": ""},
            "widgets_values": widgets,
        }
        ui_nodes.append(node)
    ui_nodes.sort(key=lambda n: n["id"])
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}
