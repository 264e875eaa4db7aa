"""Test set-up shared by both layers. Importing scripts/harness.py loads the pack as the package
`comfyui_magcache` and finds ComfyUI.

The integration layer needs a ComfyUI source tree: $COMFYUI_PATH, or the ComfyUI that holds this pack
in its custom_nodes/. Without one, integration tests skip with a one-line reason, unless
MAGCACHE_REQUIRE_COMFYUI=1 (set by scripts/comfyui.py, the README's test command): then a missing
ComfyUI is an error, so a run that was meant to test ComfyUI cannot pass by skipping it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (toy_loop)
sys.path.insert(0, str(ROOT / "scripts"))  # the harness shared with the demo and the benchmark

from harness import COMFYUI  # noqa: E402  (finds ComfyUI; loads this pack as a package)

if COMFYUI is None and os.environ.get("MAGCACHE_REQUIRE_COMFYUI") == "1":
    raise pytest.UsageError("MAGCACHE_REQUIRE_COMFYUI=1 but no ComfyUI tree: set COMFYUI_PATH")


def pytest_report_header(config):
    return f"ComfyUI for the integration layer: {COMFYUI or 'not found (set COMFYUI_PATH)'}"


def pytest_collection_modifyitems(config, items):
    reason = "no ComfyUI checkout: set COMFYUI_PATH, or run `python scripts/comfyui.py test`"
    slow = os.environ.get("MAGCACHE_SLOW") == "1"
    for item in items:
        if "slow" in item.keywords and not slow:
            item.add_marker(pytest.mark.skip(reason="slow (Flux, Chroma, Z-Image need 0.5B+ parameter checkpoints): "
                                                    "set MAGCACHE_SLOW=1 to run"))
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
            if COMFYUI is None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI in library mode on CPU (integration layer only); returns this pack's nodes module."""
    from harness import setup_comfy

    setup_comfy(COMFYUI)
    import comfyui_magcache.nodes as nodes

    return nodes


@pytest.fixture
def user_dir(comfy, tmp_path):
    """ComfyUI's user directory (where profiles are saved) pointed at a temporary folder."""
    import folder_paths

    old = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_user_directory(old)
