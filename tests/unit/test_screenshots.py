"""A screenshot in docs/ shows a shipped example: its sidecar (docs/<name>.json) records the example and the
widget values of the nodes it shows, and these must still be the example's. A change to an example's
settings without retaking its screenshot fails here (the README once showed 0.12 / 0.2 / 4 for an example
shipping 0.06 / 0.4 / 2)."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SIDECARS = sorted(p for p in DOCS.glob("*.json") if p.with_suffix(".png").is_file())
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_workflow_screenshot_in_the_readme_has_a_sidecar():
    shown = set(re.findall(r"\]\(docs/([\w.-]+\.png)\)", README))
    workflows = {"workflow_screenshot.png", "compare_node.png"}  # screenshots of example workflows in the browser
    assert workflows <= shown
    assert {p.with_suffix(".png").name for p in SIDECARS} >= workflows


@pytest.mark.parametrize("sidecar", SIDECARS, ids=lambda p: p.name)
def test_a_screenshots_settings_are_the_shipped_examples(sidecar):
    side = json.loads(sidecar.read_text(encoding="utf-8"))
    assert side["screenshot"] == f"docs/{sidecar.with_suffix('.png').name}"
    example = json.loads((ROOT / side["example"]).read_text(encoding="utf-8"))
    nodes = {str(n["id"]): n for n in example["nodes"]}
    assert side["nodes"], "a sidecar records at least one node"
    for node_id, shown in side["nodes"].items():
        node = nodes.get(node_id)
        assert node is not None and node["type"] == shown["type"], (side["example"], node_id, shown["type"])
        assert node["widgets_values"] == shown["widgets_values"], \
            f"{side['screenshot']} shows {shown['type']} #{node_id} at {shown['widgets_values']}, " \
            f"{side['example']} ships {node['widgets_values']}: retake the screenshot"
