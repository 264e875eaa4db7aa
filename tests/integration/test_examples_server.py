"""Every example workflow against a real ComfyUI server: node types, widget values and links are
valid for the running server; the fast ones (and, with MAGCACHE_SLOW=1, Flux and Chroma) run end to
end through POST /prompt with tiny checkpoints and test-only conditioning and decoding nodes."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import COMFYUI, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import make_examples  # noqa: E402

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
EXAMPLES = sorted(make_examples.EXAMPLES)
# loader node type -> the models/ folder of its file widgets (a tuple: one folder per widget, in order)
LOADERS = {"UNETLoader": "diffusion_models", "LoadFramePackModel": ("diffusion_models",), "CLIPLoader": "text_encoders", "DualCLIPLoader": "text_encoders",
           "QuadrupleCLIPLoader": "text_encoders", "VAELoader": "vae", "CLIPVisionLoader": "clip_vision",
           "CheckpointLoaderSimple": "checkpoints", "LTXVAudioVAELoader": "checkpoints",
           "LTXAVTextEncoderLoader": ("text_encoders", "checkpoints")}


def placeholders() -> dict[str, list[str]]:
    """Every model file the examples' loaders name, by models/ folder, so the loaders list them."""
    return placeholders_of(EXAMPLES)


def placeholders_of(examples) -> dict[str, list[str]]:
    out: dict[str, set] = {}
    for name in examples:
        for node in json.loads((ROOT / "examples" / name).read_text())["nodes"]:
            if node["type"] in LOADERS:
                folders = LOADERS[node["type"]]
                values = node["widgets_values"]
                if isinstance(folders, str):
                    folders = (folders,) * len(values)
                for folder, v in zip(folders, values):
                    if isinstance(v, str) and v.endswith(".safetensors"):
                        out.setdefault(folder, set()).add(v)
    return {folder: sorted(files) for folder, files in out.items()}


def save_tiny(tiny, **overrides):
    def write(path):
        import safetensors.torch
        from harness import tiny_model

        sd = tiny_model(tiny, **overrides).model.diffusion_model.state_dict()
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return write


def end_to_end_runs() -> dict:
    """example -> (tiny checkpoint, its maker, conditioning (tokens, dim, pooled), slow, fixture), for every
    example whose family names a fixture with a checkpoint ComfyUI's loader detects."""
    from comfyui_magcache.model_patches import EXAMPLES as DECLARED
    from comfyui_magcache.model_patches import FIXTURES

    runs = {}
    for name, (_, example) in DECLARED.items():
        if example.run is None:
            continue
        fixture = FIXTURES[example.run][1]
        config = dict(fixture.unet_config, **fixture.checkpoint)
        dim = (config.get("context_in_dim") or config.get("text_dim") or config.get("joint_attention_dim")
               or config.get("cap_feat_dim"))
        pooled = config.get("vec_in_dim") or fixture.pooled_dim or 0
        runs[name] = (f"tiny_{fixture.name}.safetensors", save_tiny(fixture.name, **fixture.checkpoint),
                      (8, dim, pooled), fixture.slow, fixture)
    return runs


PLACEHOLDERS = placeholders()
RUNS = end_to_end_runs()


def not_loadable(path: Path, fixture) -> str | None:
    """Why this ComfyUI would not load the tiny checkpoint (its detection fixes a config value, e.g.
    Flux.2's head count on 0.8.0, that a small model cannot have), or None. The model ComfyUI detects is
    built on the meta device and given the file's shapes: no memory, no weights read."""
    import comfy.model_detection
    import safetensors
    import torch

    with safetensors.safe_open(str(path), framework="pt") as f:
        sd = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    config = comfy.model_detection.model_config_from_unet(sd, "")
    if config is None:
        return f"this ComfyUI's model detection does not recognise a {fixture.name} checkpoint"
    try:
        with torch.device("meta"):
            config.get_model(sd, "").diffusion_model.load_state_dict(sd, strict=True, assign=True)
    except Exception as e:
        detected = comfy.model_detection.detect_unet_config(sd, "") or {}
        want = dict(fixture.unet_config, **fixture.checkpoint)
        fixed = ", ".join(f"{k}={v!r}" for k, v in detected.items() if k in want and v != want[k])
        return (f"this ComfyUI builds {type(config).__name__} from the tiny checkpoint with values its detection "
                f"fixes ({fixed or 'see the error'}) and cannot load it small: {str(e).splitlines()[0][:200]}")
    return None


@pytest.fixture(scope="module")
def server(comfy):
    from comfy_server import ComfyServer

    # the small checkpoints; a slow run (0.5B+ parameters) writes its own when it runs, and removes it after
    srv = ComfyServer(COMFYUI, {ckpt: make for ckpt, make, _, slow, _ in RUNS.values() if not slow}, PLACEHOLDERS)
    try:
        yield srv.start()
    finally:
        srv.stop()
        assert srv.proc is None or srv.proc.poll() is not None  # no process left behind
        assert not srv.base.exists()  # no file left behind


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def widget_inputs(info):
    """(name, spec) of a node's widget inputs, in widgets_values order. An input of several types whose
    widget is one of them (ComfyUI 0.33's MultiType, e.g. "FLOAT,INT" with widgetType FLOAT) is that widget."""
    out = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            spec = info["input"][section][name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                out.append((name, spec))
            elif opts.get("widgetType") in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                out.append((name, [opts["widgetType"], *spec[1:]]))
    return out


def check_widget(node, name, spec, value):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    where = f"{node['type']} #{node['id']} {name}={value!r}"
    if isinstance(kind, list) or kind == "COMBO":
        options = kind if isinstance(kind, list) else opts.get("options", [])
        assert value in options, f"{where}: not one of {options[:12]}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert opts.get("min", -2**63) <= value <= opts.get("max", 2**64), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert opts.get("min", float("-inf")) <= value <= opts.get("max", float("inf")), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where


def widget_values(node, info):
    """{input name: value} from a UI node's widgets_values (a seed's control_after_generate skipped)."""
    values, out = list(node["widgets_values"]), {}
    for name, spec in widget_inputs(info):
        if not values:
            break
        out[name] = values.pop(0)
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        # the frontend's extra widget after a seed (also, unasked, after any INT named seed: the wrapper's sampler)
        if opts.get("control_after_generate") or (name in ("seed", "noise_seed") and spec[0] == "INT"):
            assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
        if any(k.endswith("_upload") and v for k, v in opts.items()):  # and the upload button's value
            assert values.pop(0) in ("image", "video", "audio")
    assert not values, f"{node['type']} #{node['id']}: {len(values)} widget values too many"
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_valid_for_the_running_server(object_info, name):
    check_example(name, object_info)


def check_example(name, object_info):
    """examples/<name> against a running server's /object_info: node types, widget values, inputs, links."""
    wf = json.loads((ROOT / "examples" / name).read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in object_info, f"{name}: node type {node['type']} is missing"
        info = object_info[node["type"]]
        specs = dict(widget_inputs(info))
        for key, value in widget_values(node, info).items():
            check_widget(node, key, specs[key], value)
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for i in node["inputs"]:
            assert i["name"] in inputs, f"{node['type']} has no input {i['name']}"
        for name_, spec in info["input"].get("required", {}).items():
            if name_ not in specs:  # a socket: it must be connected
                assert any(i["name"] == name_ and i["link"] for i in node["inputs"]), \
                    f"{node['type']} #{node['id']}: required input {name_} is not connected"
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out_type = object_info[nodes[src]["type"]]["output"][src_slot]
        in_name = nodes[dst]["inputs"][dst_slot]["name"]
        info = object_info[nodes[dst]["type"]]["input"]
        in_spec = {**info.get("required", {}), **info.get("optional", {})}[in_name]
        assert out_type == kind == in_spec[0] or (kind == "INT" and in_spec[0] == "INT"), \
            f"{name}: link {link_id} {out_type} -> {in_name} ({in_spec[0]})"


def to_api(wf, object_info, ckpt, cond):
    """The example in API format, with tiny stand-ins for what needs real model files."""
    tokens, dim, pooled = cond
    nodes = {n["id"]: n for n in wf["nodes"] if n["type"] not in FRONTEND_ONLY}
    links = {l[0]: l for l in wf["links"]}
    prompt = {}
    for nid, node in nodes.items():
        inputs = widget_values(node, object_info[node["type"]])
        for i in node["inputs"]:
            if i.get("link"):
                l = links[i["link"]]
                inputs[i["name"]] = [str(l[1]), l[2]]
        kind = node["type"]
        if kind == "UNETLoader":
            inputs["unet_name"] = ckpt
        elif kind == "CLIPTextEncode":
            kind, inputs = "MagCacheTestConditioning", {"tokens": tokens, "dim": dim, "pooled": pooled, "seed": nid}
        elif kind in ("VAEDecode", "VAEDecodeTiled"):
            kind, inputs = "MagCacheTestDecode", {"samples": inputs["samples"]}
        elif kind == "WanVaceToVideo":
            kind = "MagCacheTestVaceToVideo"
            inputs = {k: v for k, v in inputs.items() if k not in ("vae", "reference_image", "control_video",
                                                                  "control_masks")}
            inputs.update(width=64, height=64, length=5)
        elif kind in ("EmptyHunyuanLatentVideo", "EmptySD3LatentImage", "EmptyFlux2LatentImage"):
            inputs.update(width=64, height=64, **({"length": 5} if "length" in inputs else {}))
        elif kind == "KSampler":
            inputs["steps"] = 12
        prompt[str(nid)] = {"class_type": kind, "inputs": inputs}
    # keep what the output nodes need (the loaders of text encoders and VAEs are no longer used)
    outputs = [k for k, v in prompt.items() if object_info[v["class_type"]].get("output_node")]
    keep, todo = set(), list(outputs)
    while todo:
        k = todo.pop()
        if k not in keep:
            keep.add(k)
            todo += [v[0] for v in prompt[k]["inputs"].values() if isinstance(v, list) and len(v) == 2
                     and isinstance(v[0], str)]
    return {k: v for k, v in prompt.items() if k in keep}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if RUNS[n][3] else n for n in sorted(RUNS)])
def test_example_runs_end_to_end(server, object_info, name):
    """The example through POST /prompt on its tiny checkpoint, skipping steps. A family without a table
    (self-calibrating): the first run measures and saves the model's profile, a second run (another seed)
    uses it and skips. Where this ComfyUI's detection cannot load a small checkpoint of the family, a skip
    says which value it fixes."""
    ckpt, make, cond, slow, fixture = RUNS[name]
    path = server.base / "models" / "diffusion_models" / ckpt
    if slow:
        make(path)  # ComfyUI lists the folder again when it changes
    try:
        run_end_to_end(server, object_info, name, ckpt, cond, fixture, path)
    finally:
        if slow:
            path.unlink(missing_ok=True)


def run_end_to_end(server, object_info, name, ckpt, cond, fixture, path):
    reason = not_loadable(path, fixture)
    if reason:
        pytest.skip(reason)
    wf = json.loads((ROOT / "examples" / name).read_text())
    prompt = to_api(wf, object_info, ckpt, cond)
    if fixture.preset is None:
        before = server.log().count("MagCache: self-calibration")
        check_run(server, name, server.run_prompt(prompt))
        assert server.log().count("MagCache: self-calibration") == before + 1, server.log()[-2000:]
        assert list((server.base / "user" / "magcache").glob("auto *.json"))
        sampler = next(k for k, v in prompt.items() if v["class_type"] == "KSampler")
        prompt[sampler]["inputs"]["seed"] += 1  # else ComfyUI serves the identical prompt from its cache
    before = server.log().count("MagCache: skipped")
    result = server.run_prompt(prompt)
    check_run(server, name, result)
    assert server.log().count("MagCache: skipped") > before, server.log()[-2000:]
    for k in (k for k, v in prompt.items() if v["class_type"] == "MagCacheCompare"):  # its figures, in its UI output
        text = result["outputs"][k]["text"][0]
        assert text.startswith("MagCache Compare: PSNR ") and text in server.log(), text


def check_run(server, name, result):
    status = result.get("status", {})
    assert status.get("status_str") == "success", f"{name}: {json.dumps(status)[:2000]}\n{server.log()[-3000:]}"
    files = [img for out in result["outputs"].values() for img in out.get("images", [])]
    assert files, result["outputs"]
    for f in files:
        assert (server.base / f.get("type", "output") / f.get("subfolder", "") / f["filename"]).is_file()


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)
ARTIFACTS = Path(os.environ.get("MAGCACHE_ARTIFACTS", ROOT / "artifacts")) / "screenshots"


@pytest.fixture(scope="module")
def page(server):
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "no Playwright: pip install playwright (it drives the system Chromium; nothing is downloaded)"
    if CHROMIUM is None:
        missing = "no Chromium: install Debian's chromium (bash scripts/setup_browser_test.sh) for the browser test"
    if missing:  # CI sets MAGCACHE_REQUIRE_BROWSER=1: there a missing browser fails, never skips
        (pytest.fail if os.environ.get("MAGCACHE_REQUIRE_BROWSER") == "1" else pytest.skip)(missing)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            pg = browser.new_page(viewport={"width": 1600, "height": 1000})
            pg.goto(server.url)
            pg.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            yield pg
        finally:
            browser.close()


def problems(pg) -> str:
    """What the frontend tells the user about the workflow it loaded: the missing-nodes dialog
    (frontend 1.35, ComfyUI 0.8) or the "N errors found" notice and the error list behind its
    "View details" (frontend 1.49, ComfyUI 0.33). Empty when it reports nothing."""
    texts = pg.evaluate("""() => Array.from(document.querySelectorAll('.p-dialog, .p-toast-message'))
        .map(d => d.innerText)""")
    details = pg.get_by_text("View details")
    if details.count() and details.first.is_visible():
        texts.append(pg.evaluate("() => document.body.innerText"))  # the notice itself
        details.first.click()
        pg.wait_for_timeout(800)
        texts.append(pg.evaluate("() => document.body.innerText"))  # with the error list open
    return "\n".join(texts)


def close_reports(pg):
    pg.keyboard.press("Escape")
    pg.evaluate("() => window.app.loadGraphData({nodes: [], links: [], version: 0.4})")  # a blank graph
    pg.wait_for_timeout(300)


def show_node(pg, node_type, scale):
    """Zoom the canvas onto the first node of a type (the frontend hides widget text below ~50%)."""
    pg.evaluate("""([type, scale]) => {
        const c = window.app.canvas, n = window.app.graph._nodes.find(n => n.type === type) || window.app.graph._nodes[0];
        c.ds.scale = scale;
        c.ds.offset = [-n.pos[0] + 420 / scale, -n.pos[1] + 160 / scale];
        c.setDirty(true, true);
    }""", [node_type, scale])
    pg.wait_for_timeout(400)


@pytest.mark.parametrize("name", EXAMPLES)
def test_frontend_loads_example_without_missing_nodes(page, name):
    wf = json.loads((ROOT / "examples" / name).read_text())
    page.evaluate("wf => window.app.loadGraphData(wf)", wf)
    page.wait_for_timeout(1500)
    report = problems(page)
    assert "missing" not in report.lower() and "error" not in report.lower(), report[:3000]
    loaded = page.evaluate("() => window.app.graph._nodes.map(n => [n.type, !!window.LiteGraph.registered_node_types[n.type]])")
    assert sorted(t for t, _ in loaded) == sorted(n["type"] for n in wf["nodes"]) and all(ok for _, ok in loaded)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    show_node(page, "MagCache" if any(n["type"] == "MagCache" for n in wf["nodes"]) else "MagCacheCalibration", 0.8)
    page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"))


def test_frontend_flags_a_missing_node(page):
    """The negative control: the same check sees a node type the server does not have."""
    wf = json.loads((ROOT / "examples" / "flux.json").read_text())
    wf["nodes"].append(dict(wf["nodes"][0], id=99, type="NotARealMagCacheNode", inputs=[], outputs=[]))
    page.evaluate("wf => window.app.loadGraphData(wf)", wf)
    page.wait_for_timeout(1500)
    try:
        assert "NotARealMagCacheNode" in problems(page)
        loaded = page.evaluate("() => window.app.graph._nodes.map(n => [n.type, !!window.LiteGraph.registered_node_types[n.type]])")
        assert ["NotARealMagCacheNode", False] in loaded
    finally:
        close_reports(page)


def test_custom_node_locales_are_served(server):
    """ComfyUI's /i18n merges every custom node's locales/<lang>/main.json and nodeDefs.json."""
    i18n = server.get("/i18n")
    for lang, title in (("zh", "MagCache 加速"), ("ko", "MagCache 가속"), ("ja", "MagCache 高速化")):
        assert i18n[lang]["nodeDefs"]["MagCache"]["display_name"] == title
        assert set(i18n[lang]["nodeDefs"]) >= {"MagCache", "MagCacheCalibration", "MagCacheCalibrationPlot",
                                               "CompileModel", "MagCacheCompare"}
        assert i18n[lang]["dataTypes"]["MAGCACHE_RATIOS"]


def wan_prompt(object_info, seed, **magcache_inputs):
    ckpt, _, cond, _, _ = RUNS["wan2.1_t2v.json"]
    wf = json.loads((ROOT / "examples" / "wan2.1_t2v.json").read_text())
    prompt = to_api(wf, object_info, ckpt, cond)
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "KSampler")
    prompt[sampler]["inputs"]["seed"] = seed  # a new seed: ComfyUI would serve an identical prompt from its cache
    magcache = next(k for k, v in prompt.items() if v["class_type"] == "MagCache")
    prompt[magcache]["inputs"].update(magcache_inputs)
    return wf, prompt, sampler


def test_an_edited_profile_is_read_again_on_the_next_run(server, object_info):
    folder = server.base / "user" / "magcache"
    folder.mkdir(parents=True, exist_ok=True)
    good = {"format": "magcache-profile", "version": 1, "family": "Wan", "steps": 4, "cfg_interleaved": True,
            "ratios": [1.0, 1.0, 0.99, 0.99, 0.98, 0.98, 0.97, 0.97]}
    (folder / "e2e.json").write_text(json.dumps(good))
    _, prompt, _ = wan_prompt(server.get("/object_info"), 1234, model_type="profile:e2e")
    first = server.run_prompt(prompt)
    assert first["status"]["status_str"] == "success", json.dumps(first["status"])[:2000]
    (folder / "e2e.json").write_text("{ edited and broken")
    again = server.run_prompt(prompt)  # the identical prompt: only the file changed
    assert again["status"]["status_str"] == "error", "the node's output was served from ComfyUI's cache"
    error = next(m[1] for m in again["status"]["messages"] if m[0] == "execution_error")
    assert error["node_type"] == "MagCache"
    assert error["exception_message"].startswith("MagCache profile 'e2e.json' cannot be used: not valid JSON")
    (folder / "e2e.json").unlink()


def test_the_sampler_node_shows_the_skip_report_in_the_browser(server, object_info, page):
    wf, prompt, sampler = wan_prompt(object_info, 4321)
    page.evaluate("wf => window.app.loadGraphData(wf)", wf)
    page.wait_for_timeout(800)
    client_id = page.evaluate("() => (window.app.api ?? window.comfyAPI?.api?.api)?.clientId"
                              " ?? sessionStorage.getItem('clientId')")
    assert client_id, "the page has no client id"
    before = server.log().count("MagCache: skipped")
    answer = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
    show_node(page, "KSampler", 0.9)
    read = """id => {
        const n = window.app.graph.getNodeById(id);
        const w = (n && n.widgets || []).find(w => w.name === '$$node-text-preview');
        return w ? String(w.value) : null;
    }"""
    page.wait_for_function(f"id => ({read})(id) && ({read})(id).startsWith('MagCache: skipped')", arg=int(sampler),
                           timeout=120_000)
    text = page.evaluate(read, int(sampler))
    assert text.startswith("MagCache: skipped ") and text.endswith(", table wan2.1_t2v_1.3B"), text
    assert server.log().count("MagCache: skipped") > before and answer["prompt_id"]
    show_node(page, "KSampler", 0.9)
    page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=20_000)  # in the DOM
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "skip_report_on_sampler.png"))


def node_text_of(page, node_id, prefix, timeout=180_000) -> str:
    """The text the server sent to a node (progress text), once it starts with `prefix`."""
    read = """id => {
        const n = window.app.graph.getNodeById(id);
        const w = (n && n.widgets || []).find(w => w.name === '$$node-text-preview');
        return w ? String(w.value) : null;
    }"""
    page.wait_for_function(f"([id, p]) => ({read})(id) && ({read})(id).startsWith(p)", arg=[int(node_id), prefix],
                           timeout=timeout)
    return page.evaluate(read, int(node_id))


def test_the_compare_example_shows_its_figures_on_the_node_in_the_browser(server, object_info, page):
    """examples/wan2.1_t2v_compare.json queued from the page: the MagCache Compare node shows PSNR and SSIM
    (per frame and mean) on itself, the same text as in its UI output and in the log."""
    ckpt, _, cond, _, _ = RUNS["wan2.1_t2v_compare.json"]
    wf = json.loads((ROOT / "examples" / "wan2.1_t2v_compare.json").read_text())
    prompt = to_api(wf, object_info, ckpt, cond)
    for v in prompt.values():
        if v["class_type"] == "KSampler":
            v["inputs"]["seed"] = 2468  # both samplers one seed; not the end-to-end test's (served from cache)
    compare = next(k for k, v in prompt.items() if v["class_type"] == "MagCacheCompare")
    page.evaluate("wf => window.app.loadGraphData(wf)", wf)
    page.wait_for_timeout(800)
    client_id = page.evaluate("() => (window.app.api ?? window.comfyAPI?.api?.api)?.clientId"
                              " ?? sessionStorage.getItem('clientId')")
    answer = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
    show_node(page, "MagCacheCompare", 0.9)
    text = node_text_of(page, compare, "MagCache Compare: PSNR ")
    assert " dB, SSIM " in text and "(mean of 2 frames)" in text and "|a - b| x 10" in text, text
    assert "\nper frame PSNR: " in text and "\nper frame SSIM: " in text, text
    deadline = time.time() + 120
    while answer["prompt_id"] not in server.get(f"/history/{answer['prompt_id']}") and time.time() < deadline:
        time.sleep(0.3)
    history = server.get(f"/history/{answer['prompt_id']}")[answer["prompt_id"]]
    assert history["outputs"][compare]["text"] == [text] and text in server.log()
    show_node(page, "MagCacheCompare", 0.9)
    page.wait_for_function("t => document.body.innerText.includes(t.split('\\n')[0])", arg=text, timeout=20_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "compare_node.png"))
    (ARTIFACTS / "compare_node.txt").write_text(text + "\n", encoding="utf-8")


def set_setting(server, key, value):
    import urllib.request

    req = urllib.request.Request(f"{server.url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def test_the_frontend_shows_translated_node_titles_in_chinese(server, page):
    """Comfy.Locale = zh: the frontend loads the pack's locales/zh and titles the nodes with it."""
    wf = json.loads((ROOT / "examples" / "calibration.json").read_text())
    zh = json.loads((ROOT / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))
    set_setting(server, "Comfy.Locale", "zh")
    pg = page.context.browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        pg.goto(server.url)
        pg.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        pg.evaluate("wf => window.app.loadGraphData(wf)", wf)
        # loading is asynchronous: wait for the example's node, not a fixed time (a loaded machine is slower)
        pg.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'MagCacheCalibration')",
                             timeout=60_000)
        pg.wait_for_timeout(500)
        titles = pg.evaluate("""() => {
            const cal = window.app.graph._nodes.find(n => n.type === 'MagCacheCalibration');
            ['MagCache', 'CompileModel'].forEach((type, i) => {  // the two nodes this example lacks
                const n = window.LiteGraph.createNode(type);
                n.pos = [cal.pos[0] + 400 * i, cal.pos[1] + 360];
                window.app.graph.add(n);
            });
            return Object.fromEntries(window.app.graph._nodes.map(n => [n.type, n.title]));
        }""")
        assert titles["MagCache"] == zh["MagCache"]["display_name"] == "MagCache 加速"
        for node_id in ("MagCacheCalibration", "MagCacheCalibrationPlot", "CompileModel"):
            assert titles[node_id] == zh[node_id]["display_name"], titles
        show_node(pg, "MagCacheCalibration", 0.9)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "locale_zh_titles.png"))
    finally:
        pg.close()
        set_setting(server, "Comfy.Locale", "en")
