"""What a ComfyUI user sees, on real ComfyUI in library mode (CPU, tiny models): the report on the
sampler node, the calibration's saved path or failure on its node, thresh 0 still validating, an
edited profile read again, errors that say why, CompileModel letting go of a failed call, and
translations covering every input. The server's side (a stand-in `server` module here) is checked
end to end in test_examples_server.py."""
import gc
import json
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from harness import TINY, conds, sample, tiny_model, tiny_sd15

STEPS = 8
LOCALES = ("zh", "ko", "ja")


class FakePromptServer:
    client_id = "client-7"

    def __init__(self):
        self.sent = []

    def send_progress_text(self, text, node_id, sid=None):
        self.sent.append((text, node_id, sid))


@pytest.fixture
def ui(comfy, monkeypatch):
    """A stand-in for ComfyUI's `server` module (as a running server has it); returns what it received."""
    srv = FakePromptServer()
    module = types.ModuleType("server")
    module.PromptServer = type("PromptServer", (), {"instance": srv})
    monkeypatch.setitem(sys.modules, "server", module)
    return srv.sent


def executing(node_id):
    from comfy_execution.utils import CurrentNodeContext

    return CurrentNodeContext("prompt-1", node_id)


def wan_sample(model, seed=1):
    pos, neg = conds("wan_t2v")
    return sample(model, pos, neg, seed=seed, steps=STEPS, latent_shape=TINY["wan_t2v"].latent)


def test_the_sampler_node_shows_the_skip_report(comfy, ui):
    model = comfy.MagCache.execute(tiny_model("wan_t2v"), "wan2.1_t2v_1.3B", 0.3, 0.1, 3, 0, -1).result[0]
    with executing("42"):  # what ComfyUI sets around the KSampler node's execution
        wan_sample(model)
    assert len(ui) == 1
    text, node, sid = ui[0]
    assert node == "42" and sid == "client-7"
    assert text.startswith("MagCache: skipped ") and not text.startswith("MagCache: skipped 0/")
    assert f"/{STEPS} steps (cond " in text and text.endswith(", table wan2.1_t2v_1.3B"), text


def test_a_run_with_caching_off_says_why_on_the_node(comfy, ui, user_dir):
    base = tiny_model("wan_t2v")
    _, handle = comfy.MagCacheCalibration.execute(base, "auto", "never run").result
    wired = comfy.MagCache.execute(base, "auto", 0.3, 0.1, 3, 0, -1, ratios=handle).result[0]
    with executing("9"):
        wan_sample(wired)
    assert ui == [("MagCache: skipped 0 steps (caching was off: the connected calibration has no result yet "
                   "(its sampler has not run))", "9", "client-7")]


def test_without_an_executing_node_nothing_is_sent_and_sampling_is_unchanged(comfy, ui):
    model = tiny_model("wan_t2v")
    cached = comfy.MagCache.execute(model, "wan2.1_t2v_1.3B", 0.0, 0.1, 3, 0, -1).result[0]
    assert torch.equal(wan_sample(cached), wan_sample(model)) and ui == []


def test_thresh_zero_validates_the_other_inputs_first(comfy, ui):
    from comfyui_magcache.magcache import MagCacheConfigError
    from comfyui_magcache.model_patches import UnsupportedModel

    wan = tiny_model("wan_t2v")
    with pytest.raises(MagCacheConfigError, match="retention_ratio must be a number from 0.1 to 1.0, got 1.5"):
        comfy.MagCache.execute(wan, "auto", 0.0, 1.5, 3, 0, -1)
    with pytest.raises(MagCacheConfigError, match=r"end_step \(2\) is before start_step \(5\)"):
        comfy.MagCache.execute(wan, "auto", 0.0, 0.2, 3, 5, 2)
    with pytest.raises(MagCacheConfigError, match="settings_from must be one of auto, inputs, got 'evidence'"):
        comfy.MagCache.execute(wan, "auto", 0.0, 0.2, 3, 0, -1, settings_from="evidence")
    with pytest.raises(UnsupportedModel, match="model_type 'flux' does not match the loaded model"):
        comfy.MagCache.execute(wan, "flux", 0.0, 0.2, 3, 0, -1)
    with pytest.raises(UnsupportedModel, match="this is a UNet"):
        comfy.MagCache.execute(tiny_sd15(), "auto", 0.0, 0.2, 3, 0, -1)
    with executing("3"):
        out = comfy.MagCache.execute(wan, "auto", 0.0, 0.2, 3, 0, -1).result[0]
    assert out is wan  # valid settings with thresh 0: the model passes unchanged
    assert ui == [("MagCache: off (magcache_thresh is 0); the model is passed on unchanged", "3", "client-7")]


def test_calibration_shows_where_it_saved_the_profile(comfy, ui, user_dir):
    model = tiny_model("wan_t2v")
    cal, _ = comfy.MagCacheCalibration.execute(model, "auto", "shown").result
    with executing("5"):
        wan_sample(cal)
    path = user_dir / "magcache" / "shown.json"
    assert path.is_file() and path.with_suffix(".png").is_file()
    assert ui == [(f"MagCache calibration: saved profile 'shown' ({STEPS} steps, CFG) to {path}", "5", "client-7")]


def test_an_interrupted_calibration_says_so_on_the_node_and_saves_nothing(comfy, ui, user_dir):
    from comfy import model_management

    def cancel(step, x0, x, total):
        if step == 2:
            raise model_management.InterruptProcessingException()

    cal, handle = comfy.MagCacheCalibration.execute(tiny_model("wan_t2v"), "auto", "cut").result
    pos, neg = conds("wan_t2v")
    with executing("5"), pytest.raises(model_management.InterruptProcessingException):
        sample(cal, pos, neg, seed=1, steps=STEPS, latent_shape=TINY["wan_t2v"].latent, callback=cancel)
    assert ui == [(f"MagCache calibration interrupted at step 3 of {STEPS}: nothing saved, existing profile kept",
                   "5", "client-7")]
    assert handle.result is None and not (user_dir / "magcache").exists()


def test_a_failed_profile_save_is_shown_on_the_node_and_the_generation_completes(comfy, ui, user_dir):
    model = tiny_model("wan_t2v")
    (user_dir / "magcache").write_text("a file where the profile folder should be")
    cal, handle = comfy.MagCacheCalibration.execute(model, "auto", "lost").result
    with executing("5"):
        out = wan_sample(cal)
    assert torch.equal(out, wan_sample(model))  # the generation itself is never lost to a failed save
    assert len(ui) == 1 and ui[0][0].startswith("MagCache calibration: the profile was NOT saved: ") and \
        "File exists" in ui[0][0], ui


def test_a_plot_that_cannot_be_written_is_reported_but_the_profile_is_saved(comfy, ui, user_dir):
    model = tiny_model("wan_t2v")
    (user_dir / "magcache" / "pic.png").mkdir(parents=True)
    cal, _ = comfy.MagCacheCalibration.execute(model, "auto", "pic").result
    with executing("5"):
        wan_sample(cal)
    text = ui[0][0]
    assert text.startswith("MagCache calibration: saved profile 'pic'") and "\nThe plot was NOT saved: " in text


def test_an_edited_profile_is_read_again(comfy, user_dir):
    from comfyui_magcache.magcache import ProfileError

    folder = user_dir / "magcache"
    folder.mkdir()
    good = {"format": "magcache-profile", "version": 1, "family": "Wan", "steps": 2, "cfg_interleaved": False,
            "ratios": [1.0, 0.9]}
    (folder / "edit.json").write_text(json.dumps(good))
    key = comfy.MagCache.fingerprint_inputs(model_type="profile:edit", magcache_thresh=0.2)
    assert key == comfy.MagCache.fingerprint_inputs(model_type="profile:edit", magcache_thresh=0.2)  # stable
    comfy.MagCache.execute(tiny_model("wan_t2v"), "profile:edit", 0.2, 0.2, 2, 0, -1)
    (folder / "edit.json").write_text("{ broken")
    assert comfy.MagCache.fingerprint_inputs(model_type="profile:edit") != key  # ComfyUI re-executes the node
    with pytest.raises(ProfileError, match="MagCache profile 'edit.json' cannot be used: not valid JSON"):
        comfy.MagCache.execute(tiny_model("wan_t2v"), "profile:edit", 0.2, 0.2, 2, 0, -1)
    assert comfy.MagCache.fingerprint_inputs(model_type="flux") == ""  # presets: cached as before




def test_an_unsupported_model_error_says_why_in_a_short_first_line(comfy):
    from comfyui_magcache.model_patches import UnsupportedModel

    for node in (lambda m: comfy.MagCache.execute(m, "auto", 0.2, 0.2, 2, 0, -1),
                 lambda m: comfy.MagCacheCalibration.execute(m, "auto", "x"),
                 lambda m: comfy.CompileModel.execute(m, "default", "inductor", False, False)):
        with pytest.raises(UnsupportedModel) as e:
            node(tiny_sd15())
        first, *details = str(e.value).splitlines()
        assert first == ("MagCache cannot accelerate this model: this is a UNet; MagCache works on diffusion "
                         "transformers. Bypass the MagCache node for it.")
        assert details == ["Supported families: Chroma, Flux, Flux.2, HiDream, HunyuanVideo, Kandinsky 5, LTX-2, "
                           "Lumina 2 / Z-Image, Qwen-Image, Wan, Wan VACE.",
                           "Loaded model class: comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel"]


def test_a_failed_compile_keeps_no_tensor_of_the_failing_call(comfy):
    # fullgraph=True and a graph break in another node's attention override (kept by CompileModel): dynamo refuses
    from test_compile import breaking_attention

    model = tiny_model("flux").clone()
    model.model_options["transformer_options"]["optimized_attention_override"] = breaking_attention
    pos, neg = conds("flux")
    compiled = comfy.CompileModel.execute(model, "default", "eager", True, False).result[0]
    inputs = []
    dm = model.model.diffusion_model
    hook = dm.register_forward_pre_hook(lambda m, args: inputs.append(weakref.ref(args[0])))
    try:
        with torch.inference_mode():
            sample(compiled, pos, neg, seed=3, steps=3)
    finally:
        hook.remove()
    gc.collect()
    assert inputs and inputs[0]() is None  # the first (failing) call's input latent is released
    wrapper = next(iter(compiled.wrappers["apply_model"]["torch.compile"]))
    kept = [c.cell_contents for c in wrapper.__closure__ or ()]
    broken = next(v for v in kept if isinstance(v, dict) and "error" in v)
    assert isinstance(broken["error"], str) and broken["error"]  # the message, not the exception


def schema_texts(node_cls):
    schema = node_cls.define_schema()
    return {i.id for i in schema.inputs}, len(schema.outputs), schema


@pytest.mark.parametrize("lang", LOCALES)
def test_every_node_input_and_output_is_translated(comfy, lang):
    defs = json.loads((ROOT / "locales" / lang / "nodeDefs.json").read_text(encoding="utf-8"))
    main = json.loads((ROOT / "locales" / lang / "main.json").read_text(encoding="utf-8"))
    import comfyui_magcache.nodes_framepack as framepack
    import comfyui_magcache.nodes_raylight as raylight

    # every node the pack defines, the raylight one too (registered only where raylight is installed)
    nodes = {n.define_schema().node_id: n for n in (comfy.MagCache, comfy.MagCacheCalibration,
                                                      comfy.MagCacheCalibrationPlot, comfy.CompileModel,
                                                      comfy.MagCacheCompare, *framepack.FRAMEPACK_NODES,
                                                      raylight.RayMagCache)}
    assert sorted(defs) == sorted(nodes)
    for node_id, cls in nodes.items():
        inputs, n_outputs, schema = schema_texts(cls)
        entry = defs[node_id]
        assert entry["display_name"] and entry["display_name"] != schema.display_name, node_id
        assert entry["description"] and sorted(entry["inputs"]) == sorted(inputs), node_id
        for name, text in entry["inputs"].items():
            assert text["name"] and text["tooltip"], (node_id, name)
        assert sorted(entry["outputs"]) == [str(i) for i in range(n_outputs)], node_id
        assert all(o["tooltip"] for o in entry["outputs"].values())
    assert main["nodeCategories"]["MagCache"] and main["dataTypes"]["MAGCACHE_RATIOS"]


def test_profiles_are_one_shared_folder_in_multi_user_mode(comfy, user_dir, monkeypatch):
    """ComfyUI passes no user to node execution or to /object_info, so there is no per-user folder to
    pick; the README says so."""
    from comfy.cli_args import args

    monkeypatch.setattr(args, "multi_user", True)
    assert Path(comfy.profiles_dir()) == user_dir / "magcache"
    readme = (ROOT / "README.md").read_text()
    assert "--multi-user" in readme and "shared by all users" in readme


def test_the_compare_node_shows_psnr_and_ssim_per_frame_and_their_mean(comfy, ui, caplog, tmp_path, monkeypatch):
    import logging

    import folder_paths

    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path))  # where the difference preview is written

    g = torch.Generator().manual_seed(3)
    ref = torch.rand(3, 16, 16, 3, generator=g)
    test = ref.clone()
    test[1:] = (test[1:] + 0.05 * torch.randn(2, 16, 16, 3, generator=g)).clamp(0, 1)
    with executing("7"), caplog.at_level(logging.INFO, logger="MagCache"):
        out = comfy.MagCacheCompare.execute(ref, test, 10.0)
    difference, psnr, ssim = out.result
    assert difference.shape == ref.shape and torch.equal(difference[0], torch.zeros_like(ref[0]))
    assert torch.allclose(difference[1:], ((ref[1:] - test[1:]).abs() * 10).clamp(0, 1))
    assert 20 < psnr < 40 and 0 < ssim < 1
    (text, node, _), = ui
    assert node == "7" and text.startswith(f"MagCache Compare: PSNR {psnr:.2f} dB, SSIM {ssim:.4f} (mean of 3 frames)")
    assert "|a - b| x 10" in text and "\nper frame PSNR: inf " in text and "\nper frame SSIM: 1.0000 " in text
    assert text in [r.getMessage() for r in caplog.records]
    assert out.ui["text"] == (text,) and len(out.ui["images"]) == 3  # the UI output: the figures and the difference
    assert all((tmp_path / i["subfolder"] / i["filename"]).is_file() for i in out.ui["images"])


def test_the_compare_node_names_both_shapes_when_they_differ(comfy):
    with pytest.raises(ValueError, match=r"^MagCache Compare: the two images differ in shape: "
                                         r"reference \(5, 16, 16, 3\), test \(4, 16, 16, 3\)"):
        comfy.MagCacheCompare.execute(torch.zeros(5, 16, 16, 3), torch.zeros(4, 16, 16, 3), 10.0)
