"""The README's support matrix and sources table against the registry: a family or preset added to
the registry without its README row fails here, and so does a row for one that no longer exists."""
import re
from pathlib import Path

from comfyui_magcache.magcache import builtin_presets
from comfyui_magcache.model_patches import ALL_SPECS, MODEL_TYPES

TABLES = set(builtin_presets())  # the presets: model_type choices that are a ratio table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"### {title}\n")
    end = README.index("\n### ", start + 1)
    return README[start:end]


def presets_named(text: str) -> set[str]:
    names = set(re.findall(r"`([A-Za-z0-9_.]+)`", text))
    family_like = re.compile(r"(flux|chroma|qwen|hunyuan|wan)[A-Za-z0-9_.]*")  # a table name, maybe a stale one
    return {n for n in names if n in TABLES or (n not in MODEL_TYPES and family_like.fullmatch(n))}


def test_every_family_and_preset_has_its_row_in_the_support_matrix():
    matrix = section("Support matrix")
    for spec in ALL_SPECS:
        for cls in spec.model_classes:
            short = cls.rsplit(".", 1)[1]
            assert cls in matrix or f"`{short}`" in matrix, f"{spec.name}: no README row names {cls}"
    assert presets_named(matrix) == TABLES


def test_every_preset_names_its_source():
    sources = section("Tables, settings and where they come from")
    rows = [line for line in sources.splitlines() if line.startswith("| `")]
    named = set()
    for row in rows:
        first = row.split("|")[1]
        named |= set(re.findall(r"`([A-Za-z0-9_.]+)`", first))
    assert named == TABLES
