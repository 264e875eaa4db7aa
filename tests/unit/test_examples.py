"""Example workflows: generated from scripts/make_examples.py, with valid MagCache settings and links."""
import json
import sys
from pathlib import Path

import pytest

from comfyui_magcache.magcache import MagCacheConfig
from comfyui_magcache.model_patches import MODEL_TYPES

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
    (mc,) = [n for n in wf["nodes"] if n["type"] == "MagCache"]
    model_type, thresh, retention, K, start, end = mc["widgets_values"]
    assert model_type in MODEL_TYPES
    MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K, start_step=start, end_step=end)
