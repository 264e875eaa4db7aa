"""FramePack / FramePack-F1 through kijai's ComfyUI-FramePackWrapper on CPU: a tiny model of the wrapper's own
HunyuanVideoTransformer3DModel class, sampled by the wrapper's FramePackSampler (its sample_hunyuan and
FlowMatchUniPC loop, once per section), with MagCache (FramePack) in front of it.

Observed from outside the pack: per model call (in order; one per step with cfg 1, cond then uncond with real
CFG) whether any block ran, the blocks' input (process_input_hidden_states) and the hidden state after them
(norm_out's input)."""
import contextlib
import json
import logging
import os

import pytest
import torch
from framepack_wrapper import require_wrapper, sample, tiny_model
from test_families import skipped_are_head_input_plus_residual
from unit.test_authors_reference import framepack_script  # the transcription of the authors' loop

STEPS = 25
SETTINGS = {"framepack": (0.10, 0.2, 3), "framepack_f1": (0.10, 0.2, 3)}  # the authors' (recommended.json)


@pytest.fixture(scope="module")
def fp(comfy):
    require_wrapper()
    torch.set_num_threads(1)
    import comfyui_magcache.nodes_framepack as nodes_framepack

    return nodes_framepack


def magcache(fp, model, model_type="framepack", settings=(0.10, 0.2, 3), **kw):
    thresh, retention, K = settings
    return fp.MagCacheFramePack.execute(model, model_type, thresh, retention, K, **kw).args[0]


@contextlib.contextmanager
def observe(model):
    """Per model call of `model`'s transformer: {"blocks": blocks run, "head": the blocks' input, "final": the
    hidden state after them}."""
    transformer = model["transformer"]
    calls = []
    own = transformer.process_input_hidden_states

    def embed(*args, **kwargs):
        out = own(*args, **kwargs)
        calls.append({"blocks": 0, "head": out[0].detach().clone()})
        return out

    def on_block(module, args):
        calls[-1]["blocks"] += 1

    def on_final(module, args):
        calls[-1]["final"] = args[0].detach().clone()

    transformer.__dict__["process_input_hidden_states"] = embed
    handles = [transformer.norm_out.register_forward_pre_hook(on_final)]
    for attr in ("transformer_blocks", "single_transformer_blocks"):
        handles += [b.register_forward_pre_hook(on_block) for b in getattr(transformer, attr)._modules.values()]
    try:
        yield calls
    finally:
        del transformer.__dict__["process_input_hidden_states"]
        for h in handles:
            h.remove()


def skip_sets(calls, steps=STEPS, per_step=1):
    """Skipped steps per section (sections of steps * per_step calls)."""
    n = steps * per_step
    assert len(calls) % n == 0
    return [sorted({i // per_step for i, c in enumerate(calls[k:k + n]) if c["blocks"] == 0})
            for k in range(0, len(calls), n)]


def test_threshold_zero_is_the_model_unchanged_and_identical_output(fp):
    model = tiny_model()
    assert magcache(fp, model, settings=(0.0, 0.2, 3)) is model
    base = sample(model, steps=8)
    with observe(model) as calls:
        again = sample(magcache(fp, model, settings=(0.0, 0.2, 3)), steps=8)
    assert torch.equal(base, again) and all(c["blocks"] == 4 for c in calls)


@pytest.mark.parametrize("preset", sorted(SETTINGS))
def test_skip_sets_follow_the_authors_loop_in_every_section(fp, preset, caplog):
    model = tiny_model()
    cached = magcache(fp, model, preset, SETTINGS[preset])
    thresh, retention, K = SETTINGS[preset]
    from comfyui_magcache.magcache import get_preset

    want = framepack_script(get_preset(preset).ratios, STEPS, thresh, retention, K)
    with caplog.at_level(logging.INFO, logger="MagCache"), observe(cached) as calls:
        out = sample(cached)
    got = skip_sets(calls)
    assert len(got) == 2 and got == [want, want]
    assert all(c["blocks"] in (0, 4) for c in calls)
    assert torch.isfinite(out).all()
    assert caplog.text.count(f"MagCache: skipped {len(want)}/{STEPS} steps (cond {len(want)})") == 2


def test_skipped_output_is_head_input_plus_residual_and_sections_start_afresh(fp):
    model = tiny_model()
    with observe(model) as plain:
        base = sample(model)
    cached = magcache(fp, model)
    with observe(cached) as calls:
        out = sample(cached)
    assert skipped_are_head_input_plus_residual(calls) == 26
    # up to its first skip the first section is the uncached run exactly; every section computes its retained
    # steps (nothing carried over from the section before: no residual to skip with, accumulators reset)
    assert all(torch.equal(a["final"], b["final"]) for a, b in zip(calls[:5], plain[:5]))
    assert all(c["blocks"] == 4 for c in calls[:5] + calls[STEPS:STEPS + 5])
    assert not torch.equal(out, base) and torch.isfinite(out).all()


def test_the_input_model_is_untouched_and_samples_as_before(fp):
    model = tiny_model()
    transformer = model["transformer"]
    lists = {a: getattr(transformer, a) for a in ("transformer_blocks", "single_transformer_blocks")}
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    base = sample(model, steps=10)
    cached = magcache(fp, model, settings=(0.3, 0.1, 6))
    assert cached is not model and cached["transformer"] is not transformer and cached["dtype"] == model["dtype"]
    sample(cached, steps=10)
    assert {a: getattr(transformer, a) for a in lists} == lists and "forward" not in transformer.__dict__
    from comfyui_magcache.model_patches.swap import CachedBlockList

    assert not any(isinstance(v, CachedBlockList) for v in lists.values())
    assert all(torch.equal(v, before[k]) for k, v in transformer.state_dict().items())
    with observe(model) as calls:
        again = sample(model, steps=10)
    assert torch.equal(again, base) and all(c["blocks"] == 4 for c in calls)
    # MagCache applied to the node's output starts again from the original (the newer settings win)
    twice = magcache(fp, cached, settings=(0.10, 0.2, 3))
    assert twice["transformer"].__dict__["magcache_original"] is transformer


def test_real_cfg_keeps_a_state_per_branch(fp):
    from comfyui_magcache.magcache import get_preset

    cached = magcache(fp, tiny_model())
    with observe(cached) as calls:
        sample(cached, steps=STEPS, cfg=3.0)
    want = framepack_script(get_preset("framepack").ratios, STEPS, 0.10, 0.2, 3)
    cond = skip_sets(calls[0::2])
    uncond = skip_sets(calls[1::2])
    assert cond == uncond == [want, want]
    assert skipped_are_head_input_plus_residual(calls[0::2]) == skipped_are_head_input_plus_residual(calls[1::2]) == 26


def test_teacache_on_turns_magcache_off_with_one_warning(fp, caplog):
    model = tiny_model()
    base = sample(model, steps=10, teacache=True)
    with caplog.at_level(logging.WARNING, logger="MagCache"):
        out = sample(magcache(fp, model), steps=10, teacache=True)
    assert torch.equal(out, base)
    assert caplog.text.count("use_teacache is on, so MagCache is off") == 1


def test_a_model_that_is_not_framepacks_is_refused_with_what_is_needed(comfy):
    import comfyui_magcache.nodes_framepack as nodes_framepack

    for bad in ({"dtype": torch.float32}, {"transformer": torch.nn.Linear(2, 2)}, "model"):
        with pytest.raises(ValueError, match="needs the FramePackMODEL of kijai's ComfyUI-FramePackWrapper"):
            nodes_framepack.MagCacheFramePack.execute(bad, "framepack", 0.1, 0.2, 3)


def profiles(folder):
    return sorted((folder / "magcache").glob("*.json"))


def test_auto_calibrate_measures_the_first_section_then_uses_the_profile(fp, user_dir):
    from comfyui_magcache.magcache import MagCacheConfig, load_profile, predict_skips

    model = tiny_model(seed=3)
    with observe(model) as plain:
        sample(model)
    cached = magcache(fp, model, "auto_calibrate", (0.3, 0.1, 6))
    with observe(cached) as calls:
        sample(cached)
    assert all(c["blocks"] == 4 for c in calls[:STEPS])  # section 1 measured: every step computed
    assert all(torch.equal(a["final"], b["final"]) for a, b in zip(calls[:STEPS], plain[:STEPS]))
    (path,) = profiles(user_dir)
    table, meta = load_profile(path)
    assert meta["family"] == "FramePack" and meta["sampler"] == "unipc_bh1" and meta["scheduler"] == "flux_shift"
    assert meta["self_calibration"]["cfg"] is False and path.stem.startswith("auto FramePack ")
    assert " unipc_bh1 flux_shift " in path.stem and path.stem.endswith(" nocfg")
    want = predict_skips(MagCacheConfig(0.3, 0.1, 6), table.tables(STEPS), STEPS)[0]
    assert want and skip_sets(calls[STEPS:]) == [want]  # section 2 already used the profile
    with observe(cached) as again:
        sample(cached)
    assert skip_sets(again) == [want, want] and profiles(user_dir) == [path]


def test_calibration_node_saves_a_profile_the_node_then_uses(fp, user_dir):
    from comfyui_magcache.magcache import MagCacheConfig, load_profile, predict_skips

    model = tiny_model(seed=4)
    out = fp.MagCacheFramePackCalibration.execute(model, "framepack_f1", "fp test").args
    recording, handle = out
    base = sample(model, steps=12)
    with observe(recording) as calls:
        got = sample(recording, steps=12)
    assert torch.equal(got, base) and all(c["blocks"] == 4 for c in calls)
    (path,) = profiles(user_dir)
    table, meta = load_profile(path)
    assert path.stem == "fp test" and meta["family"] == "FramePack" and meta["reference"] == "framepack_f1"
    assert handle.result is not None and handle.result.steps == 12
    assert json.loads(path.read_text())["steps"] == 12
    cached = magcache(fp, model, "profile:fp test", (0.3, 0.1, 6))
    with observe(cached) as calls:
        sample(cached, steps=12)
    want = predict_skips(MagCacheConfig(0.3, 0.1, 6), table.tables(12), 12)[0]
    assert want and skip_sets(calls, steps=12) == [want, want]


# ---- the example workflow against a real server with the wrapper installed --------------------------------

SHIM = '''# test-only: lets kijai's FramePackWrapper import and move its model on a CPU-only torch (its memory.py asks
# for the CUDA device at import and reads CUDA memory statistics before moving the model)
import torch
torch.cuda.current_device = lambda: 0
torch.cuda.memory_stats = lambda device=None: {"active_bytes.all.current": 0, "reserved_bytes.all.current": 0}
torch.cuda.mem_get_info = lambda device=None: (64 << 30, 64 << 30)
'''

TEST_NODES = '''
import sys
import torch

TINY = %r


def wrapper_module(suffix):
    return next(m for name, m in list(sys.modules.items()) if name.endswith(suffix))


class MagCacheTestFramePackModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ("FramePackMODEL",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self):
        cls = wrapper_module("diffusers_helper.models.hunyuan_video_packed").HunyuanVideoTransformer3DModel
        torch.manual_seed(0)
        transformer = cls(**TINY)
        with torch.no_grad():
            for p in transformer.parameters():
                p.normal_(0, 0.05)
        return ({"transformer": transformer.eval(), "dtype": torch.float32},)


class MagCacheTestEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",)}}
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, pixels):
        g = torch.Generator().manual_seed(0)
        return ({"samples": torch.randn(1, 16, 1, pixels.shape[1] // 8, pixels.shape[2] // 8, generator=g)},)


class MagCacheTestClipVision:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self):
        g = torch.Generator().manual_seed(0)
        return ({"last_hidden_state": torch.randn(1, 4, TINY["image_proj_dim"], generator=g)},)


NODE_CLASS_MAPPINGS = {n.__name__: n for n in (MagCacheTestFramePackModel, MagCacheTestEncode, MagCacheTestClipVision)}
'''


@pytest.fixture(scope="module")
def framepack_server(comfy, tmp_path_factory):
    from comfy_server import ComfyServer
    from conftest import COMFYUI
    from framepack_wrapper import TINY
    from test_examples_server import placeholders_of

    folder = require_wrapper()
    srv = ComfyServer(COMFYUI, {}, placeholders_of(["framepack.json"]))
    shim = tmp_path_factory.mktemp("framepack_shim")
    (shim / "sitecustomize.py").write_text(SHIM)
    (srv.base / "custom_nodes" / "ComfyUI-FramePackWrapper").symlink_to(folder, target_is_directory=True)
    (srv.base / "custom_nodes" / "magcache_test_framepack").mkdir()
    (srv.base / "custom_nodes" / "magcache_test_framepack" / "__init__.py").write_text(TEST_NODES % (TINY,))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
            srv.start()
        yield srv
    finally:
        srv.stop()
        assert not srv.base.exists()


def test_example_runs_on_a_server_with_the_wrapper(framepack_server):
    from comfyui_magcache.magcache import get_preset
    from test_examples_server import ROOT, check_example, to_api

    object_info = framepack_server.get("/object_info")
    assert "FramePackSampler" in object_info, "the wrapper did not load:\n" + framepack_server.log()[-3000:]
    check_example("framepack.json", object_info)
    wf = json.loads((ROOT / "examples" / "framepack.json").read_text())
    prompt = to_api(wf, object_info, None, (6, 32, 16))
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoadFramePackModel":
            node.update(class_type="MagCacheTestFramePackModel", inputs={})
        elif kind == "VAEEncode":
            node.update(class_type="MagCacheTestEncode", inputs={"pixels": inputs["pixels"]})
        elif kind == "CLIPVisionEncode":
            node.update(class_type="MagCacheTestClipVision", inputs={})
        elif kind == "ImageScale":
            inputs.update(width=64, height=64)
        elif kind == "FramePackSampler":
            inputs.update(steps=12, latent_window_size=2, total_second_length=0.6)
    result = framepack_server.run_prompt(prompt)
    assert result["status"]["status_str"] == "success", framepack_server.log()[-3000:]
    want = framepack_script(get_preset("framepack").ratios, 12, 0.10, 0.2, 3)
    assert framepack_server.log().count(f"MagCache: skipped {len(want)}/12 steps (cond {len(want)})") == 2


def test_an_interrupted_section_saves_nothing_and_leaves_no_state(fp, user_dir):
    import gc

    model = tiny_model(seed=5)
    cached = magcache(fp, model, "auto_calibrate", (0.3, 0.1, 6))
    seen = []

    def stop(module, args):
        seen.append(1)
        if len(seen) == 10:  # the 10th step of the first section (measured: every step computed)
            raise KeyboardInterrupt("stopped")

    handle = cached["transformer"].transformer_blocks._modules["0"].register_forward_pre_hook(stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            sample(cached)
    finally:
        handle.remove()
    gc.collect()
    assert profiles(user_dir) == [] and len(cached["transformer"].__dict__["magcache_sections"].runs) == 0
    sample(cached)  # measured again from the start, and saved
    assert len(profiles(user_dir)) == 1
