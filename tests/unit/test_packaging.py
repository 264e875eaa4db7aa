"""What the Comfy Registry, ComfyUI-Manager and ComfyUI's frontend read from the pack besides code:
pyproject metadata, the license, the icon, the locales and the translated READMEs."""
import json
import re
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# comfy-cli's pattern for requires-comfyui and the comfyui-frontend-package range (config_parser.validate_version);
# a value it rejects is silently dropped from the Registry entry.
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
LOCALES = ("zh", "ko", "ja")
# every node the pack defines (node_id in its node modules), so a new node without translations fails here
NODES = tuple(sorted(m for path in ROOT.glob("nodes*.py")
                     for m in re.findall(r'node_id="(\w+)"', path.read_text(encoding="utf-8"))))


def test_license_file_is_the_full_apache_2_text():
    project = PYPROJECT["project"]
    assert project["license"] == {"file": "LICENSE"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    for part in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "9. Accepting Warranty or Additional",
                 "END OF TERMS AND CONDITIONS", "APPENDIX: How to apply the Apache License to your work."):
        assert part in text
    assert len(text) > 11_000


def test_registry_fields():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9]*([-_.][a-zA-Z0-9]+)*", project["name"]) and "comfyui" not in \
        project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    repo = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo)
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert VERSION_PART.match(comfy["requires-comfyui"]) and comfy["requires-comfyui"].startswith(">=")
    frontend = [d for d in project["dependencies"] if d.startswith("comfyui-frontend-package")]
    assert len(frontend) == 1
    assert all(VERSION_PART.match(p.strip()) for p in frontend[0].removeprefix("comfyui-frontend-package").split(","))


def test_icon_is_in_the_repository_and_fits_the_registry_limits():
    comfy, repo = PYPROJECT["tool"]["comfy"], PYPROJECT["project"]["urls"]["Repository"]
    owner_name = repo.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_name}/main/"
    assert comfy["Icon"].startswith(prefix)
    icon = ROOT / comfy["Icon"].removeprefix(prefix)
    assert icon.suffix in (".svg", ".png", ".jpg", ".gif") and icon.is_file()
    svg = ET.parse(icon).getroot()
    assert int(svg.get("width")) <= 800 and int(svg.get("height")) <= 400  # Registry: at most 800 x 400


@pytest.mark.parametrize("lang", LOCALES)
def test_locales_have_comfyuis_layout(lang):
    """locales/<lang>/nodeDefs.json and main.json, as ComfyUI's server merges them for /i18n; the
    nodeDefs format is the frontend's own: display_name, description, inputs by name, outputs by index."""
    defs = json.loads((ROOT / "locales" / lang / "nodeDefs.json").read_text(encoding="utf-8"))
    main = json.loads((ROOT / "locales" / lang / "main.json").read_text(encoding="utf-8"))
    assert sorted(defs) == sorted(NODES)
    for node_id, entry in defs.items():
        assert set(entry) == {"display_name", "description", "inputs", "outputs"}, node_id
        for name, text in entry["inputs"].items():
            assert set(text) == {"name", "tooltip"} and all(isinstance(v, str) and v for v in text.values())
        for index, text in entry["outputs"].items():
            assert index.isdigit() and text["tooltip"] and set(text) <= {"name", "tooltip"}
        assert re.search(r"[^\x00-\x7f]", entry["display_name"]), f"{lang} {node_id}: title not translated"
    assert set(main) == {"nodeCategories", "dataTypes"}


@pytest.mark.parametrize("name, lang_word", [("README.zh.md", "中文"), ("README.ko.md", "한국어")])
def test_translated_readmes_cover_install_and_usage(name, lang_word):
    text = (ROOT / name).read_text(encoding="utf-8")
    assert name in (ROOT / "README.md").read_text()  # linked from the English README
    for fact in ("ComfyUI/custom_nodes/", "v0.8.0", "profile:<", "ComfyUI/user/magcache/", "--multi-user", "1 MB",
                 "examples/calibration.json", "wan2.2_t2v_14B", "README.md"):
        assert fact in text, f"{name} does not mention {fact}"
    for setting in ("0.24 / 0.1 / 5", "0.12 / 0.2 / 4", "0.10 / 0.20 / 2", "0.02 / 0.2 / 3"):
        assert setting in text


def test_description_and_registry_text_name_every_supported_family():
    """pyproject's description (the Registry's summary) and the README's 'Supported:' paragraph (the top of
    the Registry page) name every registered family: a family added without saying so fails here."""
    from comfyui_magcache.model_patches import ALL_SPECS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\nSupported: ")
    supported = readme[start:readme.index("\n\n", start)].replace("**", "").replace("\n", " ")
    description = PYPROJECT["project"]["description"]
    for spec in ALL_SPECS:
        assert spec.name in description, f"pyproject description does not name {spec.name}"
        assert spec.name in supported, f"README 'Supported:' does not name {spec.name}"
