"""Example workflows: generated from scripts/make_examples.py, with valid MagCache settings and links."""
import json
import sys
from pathlib import Path

import pytest
from comfyui_magcache.magcache import MagCacheConfig
from comfyui_magcache.magcache.profiles import check_name
from comfyui_magcache.model_patches import MODEL_TYPES, SETTINGS_FROM

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_examples  # noqa: E402


@pytest.mark.parametrize("name", sorted(make_examples.EXAMPLES))
def test_example_is_current_and_consistent(name):
    wf = json.loads((ROOT / "examples" / name).read_text())
    assert wf == json.loads(json.dumps(make_examples.EXAMPLES[name]())), "run scripts/make_examples.py"
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind == nodes[dst]["inputs"][dst_slot]["type"]
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    for mc in [n for n in wf["nodes"] if n["type"] == "MagCache"]:
        model_type, thresh, retention, K, start, end, settings_from = mc["widgets_values"]
        assert model_type in MODEL_TYPES and settings_from in SETTINGS_FROM
        MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K, start_step=start, end_step=end)
    for cal in [n for n in wf["nodes"] if n["type"] == "MagCacheCalibration"]:
        model_type, name = cal["widgets_values"]
        assert model_type in ("auto", "chroma_calibration", "flux_calibration", "flux_kontext_calibration",
                              "hunyuanvideo1.5", "qwen_image")
        check_name(name)
    for plot in [n for n in wf["nodes"] if n["type"] == "MagCacheCalibrationPlot"]:
        thresh, retention, K = plot["widgets_values"]
        MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
    assert any(n["type"] in ("MagCache", "MagCacheCalibration") for n in wf["nodes"])


def test_every_family_ships_an_example_and_every_example_is_declared():
    from comfyui_magcache.model_patches import ALL_SPECS

    assert all(spec.examples for spec in ALL_SPECS), [s.name for s in ALL_SPECS if not s.examples]
    shipped = sorted(p.name for p in (ROOT / "examples").glob("*.json"))
    assert shipped == sorted([*make_examples.EXAMPLES, "framepack.json"])  # + kijai's FramePackWrapper's


def test_the_framepack_example_is_current_and_uses_the_authors_settings():
    import make_framepack_example

    wf = json.loads((ROOT / "examples" / "framepack.json").read_text())
    assert wf == json.loads(json.dumps(make_framepack_example.framepack())), "run scripts/make_framepack_example.py"
    (node,) = [n for n in wf["nodes"] if n["type"] == "MagCacheFramePack"]
    assert node["widgets_values"] == ["framepack", 0.10, 0.2, 3, 0, -1]
    (sampler,) = [n for n in wf["nodes"] if n["type"] == "FramePackSampler"]
    assert sampler["widgets_values"][:2] == [25, False]  # the table's 25 steps, use_teacache off


def test_the_common_template_makes_a_consistent_workflow_for_a_new_family():
    """What a new family's spec needs for its example: Example(file, "text_to_image", params)."""
    wf = make_examples.text_to_image(
        unet="new_model.safetensors", clip=("CLIPLoader", ["te.safetensors", "lumina2", "default"]),
        vae="ae.safetensors", model_type="auto", settings=(0.06, 0.2, 2), steps=20, cfg=4.0,
        prompt="a cat", negative="blurry", sampling=("ModelSamplingAuraFlow", [3.0]), note="new family")
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind == nodes[dst]["inputs"][dst_slot]["type"]
    sampler = next(n for n in wf["nodes"] if n["type"] == "KSampler")
    assert all(i["link"] for i in sampler["inputs"])
    magcache = next(n for n in wf["nodes"] if n["type"] == "MagCache")
    assert magcache["widgets_values"] == ["auto", 0.06, 0.2, 2, 0, -1, "auto"]
    zeroed = make_examples.text_to_image(
        unet="u.safetensors", clip=("CLIPLoader", ["t.safetensors", "flux2", "default"]), vae="v.safetensors",
        model_type="auto", settings=(0.06, 0.2, 2), steps=20, cfg=1.0, prompt="p", note="n", guidance=4.0)
    assert {"FluxGuidance", "ConditioningZeroOut"} <= {n["type"] for n in zeroed["nodes"]}
    tiled = make_examples.text_to_image(
        unet="u.safetensors", clip=("CLIPLoader", ["t.safetensors", "wan", "default"]), vae="v.safetensors",
        model_type="auto", settings=(0.06, 0.2, 2), steps=20, cfg=5.0, prompt="p", negative="n", note="n",
        latent=("EmptyHunyuanLatentVideo", [768, 512, 121, 1]), decode=("VAEDecodeTiled", [256, 64, 64, 8]))
    decode = next(n for n in tiled["nodes"] if n["type"] == "VAEDecodeTiled")
    assert decode["widgets_values"] == [256, 64, 64, 8] and all(i["link"] for i in decode["inputs"])
    assert "VAEDecode" not in {n["type"] for n in tiled["nodes"]}
