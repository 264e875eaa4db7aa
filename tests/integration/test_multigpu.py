"""MagCache under ComfyUI's "MultiGPU CFG Split" (MultiGPU_WorkUnits), through core's own multi-GPU
code: the split deep-clones the model per device and runs the cond and uncond model calls of every
step in parallel threads (comfy.multigpu, samplers._calc_cond_batch_multigpu), all sharing one
MagCache run. Two CPU devices stand in for two GPUs: `torch.device("cpu")` and `torch.device("cpu", 0)`
are distinct keys to ComfyUI, and the second device's model is a fresh one from the loader factory
(`cached_patcher_init`), as core loaders set it.

A ComfyUI without comfy.multigpu (v0.8.0) has no such node: these tests skip, saying so."""
import gc
import threading

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, Schedule, get_preset, predict_skips
from comfyui_magcache.magcache import state as state_module
from comfyui_magcache.model_patches import FIXTURES
from harness import TINY, after_each_run, census, conds, keep_residual_refs, sample, tiny_model

NAME, PRESET, SETTINGS = "wan_t2v", "wan2.1_t2v_1.3B", (0.12, 0.2, 4)  # Wan 1.3B's recommended settings
SHAPE = TINY[NAME].latent
STEPS, CFG = 12, 3.0
ORDERS = {"magcache_then_split": ("magcache", "split"), "split_then_magcache": ("split", "magcache")}


@pytest.fixture(scope="module")
def split_node(comfy):
    """Core's MultiGPU CFG Split node class, or a skip where this ComfyUI has none (found by feature)."""
    try:
        import comfy.multigpu  # noqa: F401
        from comfy_extras.nodes_multigpu import MultiGPUCFGSplitNode
    except ImportError as e:
        pytest.skip(f"this ComfyUI has no multi-GPU CFG split (comfy.multigpu / MultiGPU_WorkUnits): {e}")
    return MultiGPUCFGSplitNode


@pytest.fixture
def nodes(comfy, split_node, monkeypatch):
    """Two CPU devices for ComfyUI, for this test only; returns a node builder."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_all_torch_devices",
                        lambda exclude_current=False: [torch.device("cpu"), torch.device("cpu", 0)])
    return Builder(comfy, split_node)


class Builder:
    def __init__(self, pack, split_node):
        self.pack, self.split_node = pack, split_node

    @staticmethod
    def base(seed=0, clone_seed=None, name=NAME):
        """A tiny model whose loader factory the split calls for the other device's model
        (clone_seed: give that copy other weights, to see which weights a device computes with)."""
        model = tiny_model(name, seed)
        model.cached_patcher_init = (tiny_model, (name, seed if clone_seed is None else clone_seed))
        return model

    def build(self, model, steps, settings=SETTINGS):
        for step in steps:
            if step == "magcache":
                model = self.pack.MagCache.execute(model, "auto", *settings, 0, -1, settings_from="inputs").result[0]
            elif step == "compile":
                model = self.pack.CompileModel.execute(model, "default", "inductor", False, False).result[0]
            else:
                # The split looks through ComfyUI's loaded-model list for a copy to reuse and fails
                # (AttributeError on None) on an entry whose patcher was collected while its model
                # lingers, as tests that drop models leave: clear such entries first.
                import comfy.model_management as mm

                gc.collect()
                mm.cleanup_models()
                model = self.split_node.execute(model, 2).result[0]
        return model


def other_device_model(patched):
    clones = patched.get_additional_models_with_key("multigpu")
    assert len(clones) == 1 and clones[0].load_device == torch.device("cpu", 0)
    return clones[0].model.diffusion_model


class Observer:
    """Per model call, on each device's own diffusion model: (step, cond_or_uncond), how many blocks
    ran, whether its sample_sigmas was the run's own tensor, and the thread. Each device's model is
    only ever called from that device's thread, so its list needs no lock."""

    def __init__(self, models: dict):
        self.calls = {name: [] for name in models}
        self.handles = []
        for name, dm in models.items():
            calls = self.calls[name]

            def on_model(module, args, kwargs, calls=calls):
                to = kwargs["transformer_options"]
                step = Schedule(tuple(to["sample_sigmas"].tolist())).step_index(float(to["sigmas"][0]))
                calls.append({"at": (step, tuple(to["cond_or_uncond"])), "blocks": 0, "sigmas": to["sample_sigmas"],
                              "thread": threading.get_ident()})

            def on_block(module, args, calls=calls):
                calls[-1]["blocks"] += 1

            self.handles.append(dm.register_forward_pre_hook(on_model, with_kwargs=True))
            for attr in ("blocks", "double_blocks", "single_blocks", "layers"):
                # the modules themselves: a block-list swap (Lumina 2 / Z-Image) may be in place
                blocks = getattr(dm, attr, None)
                self.handles += [b.register_forward_pre_hook(on_block) for b in
                                 (blocks._modules.values() if blocks is not None else ())]

    def close(self):
        for h in self.handles:
            h.remove()

    def skipped(self, branch):
        return sorted({c["at"][0] for calls in self.calls.values() for c in calls
                       if branch in c["at"][1] and c["blocks"] == 0})

    def layouts(self, name):
        return {c["at"][1] for c in self.calls[name]}


def run_state_probe(model, seen: list):
    """A clone of `model` that keeps each run's per-branch skipped steps and its (model calls,
    computed calls) counters under "calls"."""
    def see(run):
        seen.append({key: list(st.skipped_steps) for key, st in run.state.branches.items()})
        seen[-1]["calls"] = (run.state.calls, run.state.computed_calls)

    model = model.clone()
    after_each_run(model, see)
    return model


def separate_calls(model):
    """The same model making cond and uncond separate model calls on one device (ComfyUI batches
    them when their shapes allow): the calls the split makes, one after the other."""
    from comfy.patcher_extension import WrappersMP

    def one_by_one(executor, model_, conds_, x, timestep, model_options):
        if len(conds_) != 2 or conds_[1] is None:
            return executor(model_, conds_, x, timestep, model_options)
        cond = executor(model_, [conds_[0], None], x, timestep, model_options)[0]
        uncond = executor(model_, [None, conds_[1]], x, timestep, model_options)[1]
        return [cond, uncond]

    model = model.clone()
    model.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, "test_separate", one_by_one)
    return model


def rule(preset=PRESET, settings=SETTINGS, round_half_up=False):
    thresh, retention, K = settings
    cfg = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
    return predict_skips(cfg, get_preset(preset).tables(STEPS), STEPS, branches=(COND, UNCOND),
                         round_half_up=round_half_up)


def text(tokens, seed):
    return torch.randn(1, tokens, TINY[NAME].unet_config["text_dim"], generator=torch.Generator().manual_seed(seed))


def conditioning(layout):
    """(positive, negative): 'batched' (one device batches cond and uncond), 'separate' (prompts of
    different lengths: separate calls everywhere), 'three' (two negative entries: three chunks, so one
    device gets a call with two branches batched)."""
    pos, neg = conds(NAME, neg_tokens=5 if layout == "separate" else None)
    if layout == "three":
        neg = neg + [[text(8, 11), {}]]
    return pos, neg


@pytest.mark.parametrize("layout", ["batched", "separate"])
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_split_decides_and_outputs_as_one_device(nodes, order, layout):
    pos, neg = conditioning(layout)
    seen = []
    one = nodes.build(nodes.base(), ["magcache"])
    ref = sample(separate_calls(one), pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    ref_batched = sample(one, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    plain_one = sample(nodes.base(), pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    plain_split = sample(nodes.build(nodes.base(), ["split"]), pos, neg, seed=0, steps=STEPS, cfg=CFG,
                         latent_shape=SHAPE)

    patched = run_state_probe(nodes.build(nodes.base(), ORDERS[order]), seen)
    main, other = patched.model.diffusion_model, other_device_model(patched)
    watch = Observer({"main": main, "other": other})
    try:
        out = sample(patched, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    finally:
        watch.close()

    # core's split really ran: cond on the first device, uncond on the second, in another thread
    assert watch.layouts("main") == {(0,)} and watch.layouts("other") == {(1,)}
    assert len(watch.calls["main"]) == len(watch.calls["other"]) == STEPS
    assert {c["thread"] for c in watch.calls["main"]}.isdisjoint({c["thread"] for c in watch.calls["other"]})
    # identical skip sets per branch: the rule's, as on one device (blocks seen, and the run's own record)
    want = rule()
    assert want[COND] and want[UNCOND]
    assert watch.skipped(COND) == want[COND] and watch.skipped(UNCOND) == want[UNCOND]
    (branches,) = seen
    assert branches.pop("calls") == (2 * STEPS, 2 * (STEPS - len(want[COND])))  # counters right under threads
    assert sorted(branches.values()) == sorted([want[COND], want[UNCOND]])
    # bit-identical to one device making the same (separate) calls
    assert torch.equal(out, ref)
    # against one device batching cond and uncond in one call (layout 'batched'), the difference is the
    # batch-size rounding of float32 matmuls, the same as without MagCache (measured: 3.3e-6 vs 3.8e-6)
    plain_diff = (plain_split - plain_one).abs().max().item()
    diff = (out - ref_batched).abs().max().item()
    if layout == "separate":
        assert plain_diff == diff == 0.0
    else:
        assert 0 < plain_diff < 1e-5 and diff <= 2 * plain_diff, (diff, plain_diff)


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_flux_two_stream_blocks_under_the_split(nodes, order):
    """Flux: double blocks, then single blocks with text and image tokens in one stream."""
    settings = get_preset("flux").recommended
    pos, neg = conds("flux")
    ref = sample(separate_calls(nodes.build(nodes.base(name="flux"), ["magcache"], settings)), pos, neg, seed=0,
                 steps=STEPS, cfg=CFG)
    patched = nodes.build(nodes.base(name="flux"), ORDERS[order], settings)
    watch = Observer({"main": patched.model.diffusion_model, "other": other_device_model(patched)})
    try:
        out = sample(patched, pos, neg, seed=0, steps=STEPS, cfg=CFG)
    finally:
        watch.close()
    assert watch.layouts("main") == {(0,)} and watch.layouts("other") == {(1,)}
    want = rule("flux", settings, round_half_up=True)
    assert want[COND] and watch.skipped(COND) == want[COND] and watch.skipped(UNCOND) == want[UNCOND]
    assert torch.equal(out, ref)


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_a_device_call_with_two_branches_batched(nodes, order):
    """Three conditioning chunks: the first device gets a call with uncond and cond batched, the second
    the other uncond chunk. Batched branches skip together, each chunk keeps its own state."""
    pos, neg = conditioning("three")
    patched = nodes.build(nodes.base(), ORDERS[order])
    watch = Observer({"main": patched.model.diffusion_model, "other": other_device_model(patched)})
    try:
        out = sample(patched, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    finally:
        watch.close()
    assert watch.layouts("main") == {(1, 0)} and watch.layouts("other") == {(1,)}
    ref = sample(nodes.build(nodes.base(), ["magcache"]), pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    want = rule()
    assert want[COND] == want[UNCOND]  # so one device's single call and the split's two skip alike
    assert watch.skipped(COND) == watch.skipped(UNCOND) == want[COND]
    assert all(c["blocks"] == 0 for calls in watch.calls.values() for c in calls if c["at"][0] in want[COND])
    assert (out - ref).abs().max().item() < 1e-5  # one device batches all three chunks: rounding only


def test_schedule_is_read_once_per_run_though_each_call_gets_a_copy(nodes, monkeypatch):
    parsed = []
    original = state_module.Schedule.from_values
    monkeypatch.setattr(state_module.Schedule, "from_values",
                        classmethod(lambda cls, *a, **k: parsed.append(threading.get_ident()) or original(*a, **k)))
    pos, neg = conditioning("batched")
    patched = nodes.build(nodes.base(), ORDERS["magcache_then_split"])
    main, other = patched.model.diffusion_model, other_device_model(patched)
    watch = Observer({"main": main, "other": other})
    try:
        sample(patched, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    finally:
        watch.close()
    own = watch.calls["main"][0]["sigmas"]
    copies = [c["sigmas"] for c in watch.calls["other"]]
    assert all(c is not own for c in copies) and len({id(c) for c in copies}) > 1  # a new copy per call
    assert len(parsed) == 1, len(parsed)  # one parse (one host read) for the run


def counting(log):
    """Another node's block replacement at the first block: records (step, cond_or_uncond) of every
    call it runs in (compiled blocks take no hooks)."""
    def replacement(args, extra):
        to = args["transformer_options"]
        step = Schedule(tuple(to["sample_sigmas"].tolist())).step_index(float(to["sigmas"][0]))
        log.append((step, tuple(to["cond_or_uncond"])))
        return extra["original_block"](args)
    return replacement


def skipped_in(log, branch):
    return sorted(set(range(STEPS)) - {step for step, cou in log if branch in cou})


@pytest.mark.parametrize("steps", [("compile", "magcache", "split"), ("split", "magcache", "compile")],
                         ids=["compile-magcache-split", "split-magcache-compile"])
def test_compile_model_with_the_split(nodes, steps, monkeypatch):
    """CompileModel before or after the split: each device runs compiled blocks of its own model. The
    second device's copy gets other weights, so computing with the first device's blocks would show."""
    from comfyui_magcache.model_patches import compile as compile_module

    wrapped = []
    real_compile = torch.compile
    monkeypatch.setattr(compile_module.torch, "compile", lambda module, **kw: wrapped.append(module) or
                        real_compile(module, **kw))
    pos, neg = conditioning("batched")
    logs = {"eager": [], "compiled": []}

    def base(log):
        model = nodes.base(clone_seed=1)
        model.set_model_patch_replace(counting(log), "dit", "double_block", 0)
        return model

    ref = sample(nodes.build(base(logs["eager"]), ["magcache", "split"]), pos, neg, seed=0, steps=STEPS, cfg=CFG,
                 latent_shape=SHAPE)
    same_weights = sample(nodes.build(nodes.base(), ["magcache", "split"]), pos, neg, seed=0, steps=STEPS,
                          cfg=CFG, latent_shape=SHAPE)
    assert (ref - same_weights).abs().max().item() > 1e-3  # the copy's weights matter
    compiled = nodes.build(base(logs["compiled"]), steps)
    with torch.inference_mode():
        out = sample(compiled, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
        first = list(wrapped)
        again = sample(compiled, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=SHAPE)
    # each device's own blocks, wrapped once; the second run reuses them (graph reuse is test_compile's)
    devices = [compiled.model.diffusion_model, other_device_model(compiled)]
    assert len(first) == 4 and {id(b) for b in first} == {id(b) for dm in devices for b in dm.blocks}
    assert wrapped == first
    assert (out - ref).abs().max().item() < 1e-4 and (again - ref).abs().max().item() < 1e-4  # as test_compile
    want = rule()
    for log in logs.values():
        assert skipped_in(log, COND) == want[COND] and skipped_in(log, UNCOND) == want[UNCOND]


def test_fifty_runs_hold_no_growing_state(nodes):

    pos, neg = conditioning("batched")
    patched = nodes.build(nodes.base(), ORDERS["magcache_then_split"])
    residuals = keep_residual_refs(patched)

    counts = []
    for i in range(50):
        sample(patched, pos, neg, seed=i, steps=4, cfg=CFG, latent_shape=SHAPE)
        if i in (9, 49):
            counts.append(census())
    (objs10, tensors10, threads10), (objs50, tensors50, threads50) = counts
    assert tensors50 <= tensors10, (tensors10, tensors50)
    assert objs50 - objs10 < 1000, (objs10, objs50)  # no per-run growth (40 runs)
    assert threads50 <= threads10
    gc.collect()
    assert len(residuals) == 2 * 50 and all(r() is None for r in residuals)  # both branches, every run, released


# Families without a published table, under the split: Z-Image (NextDiT, block-list swap on `layers`) and
# Flux.2 (Flux's class with global modulation, block replacements). Settings ours (test_self_calibration).
SELF_CALIBRATED = ("zimage", "flux2")


def one_device_profile(pack, name, pos, neg, user_dir):
    """The ratios one device measures for `name` making cond and uncond separate calls, in a folder of
    its own: what the split's two threads must have measured, value for value."""
    import json

    import folder_paths

    own = user_dir / "one_device"
    own.mkdir()
    old = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(own))
    try:
        model = pack.MagCache.execute(Builder.base(name=name), "auto", 0.24, 0.2, 3, 0, -1, settings_from="inputs").result[0]
        sample(separate_calls(model), pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=TINY[name].latent)
        [path] = (own / "magcache").glob("*.json")
        return json.loads(path.read_text())
    finally:
        folder_paths.set_user_directory(old)


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("name", SELF_CALIBRATED)
def test_self_calibration_under_the_split(nodes, name, order, user_dir, caplog):
    """First run under the split: every step computed on both devices (output of the split without
    MagCache), the ratios measured from two threads saved once, equal to one device's; the second run
    uses that profile: each branch skips the rule's steps on its own device, the output is one device's
    making the same calls, and every residual is released."""
    import json
    import logging

    from comfyui_magcache.magcache import load_profile

    settings = TINY[name].settings
    shape = TINY[name].latent
    pad = TINY[name].text_pad
    pos, neg = conds(name, neg_tokens=pad + 5 if pad else 5)  # separate calls on one device too
    one_device = one_device_profile(nodes.pack, name, pos, neg, user_dir)
    plain_split = sample(nodes.build(nodes.base(name=name), ["split"]), pos, neg, seed=0, steps=STEPS, cfg=CFG,
                         latent_shape=shape)

    seen = []
    patched = run_state_probe(nodes.build(nodes.base(name=name), ORDERS[order], settings), seen)
    residuals = keep_residual_refs(patched)
    watch = Observer({"main": patched.model.diffusion_model, "other": other_device_model(patched)})
    try:
        with caplog.at_level(logging.INFO, logger="MagCache"):
            first = sample(patched, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=shape)
        calls_first = {k: list(v) for k, v in watch.calls.items()}
        for v in watch.calls.values():
            v.clear()
        [path] = (user_dir / "magcache").glob("*.json")
        said = [r.getMessage() for r in caplog.records if "self-calibration" in r.getMessage()]
        assert len(said) == 1 and path.stem in said[0]
        second = sample(patched, pos, neg, seed=0, steps=STEPS, cfg=CFG, latent_shape=shape)
    finally:
        watch.close()

    # run 1: the split really ran (cond here, uncond on the other device, other threads), nothing skipped
    assert {c["at"][1] for c in calls_first["main"]} == {(0,)} and {c["at"][1] for c in calls_first["other"]} == {(1,)}
    assert {c["thread"] for c in calls_first["main"]}.isdisjoint({c["thread"] for c in calls_first["other"]})
    full = max(c["blocks"] for calls in calls_first.values() for c in calls)
    assert all(c["blocks"] == full > 0 for calls in calls_first.values() for c in calls)
    assert torch.equal(first, plain_split)
    # measured from two threads: one profile, the same ratios one device measures (no call mixed up)
    data = json.loads(path.read_text())
    assert data["family"] == FIXTURES[name][0].name and data["cfg_interleaved"] is True
    assert data["ratios"] == one_device["ratios"]
    table, _ = load_profile(path)

    # run 2: the profile, per branch, on each branch's own device
    assert list((user_dir / "magcache").glob("*.json")) == [path]
    want = predict_skips(MagCacheConfig(thresh=settings[0], retention_ratio=settings[1], K=settings[2]), table.tables(STEPS), STEPS, branches=(COND, UNCOND),
                         batched=False, round_half_up=FIXTURES[name][0].retention_round_half_up)
    assert want[COND] or want[UNCOND]
    assert watch.layouts("main") == {(0,)} and watch.layouts("other") == {(1,)}
    assert watch.skipped(COND) == want[COND] and watch.skipped(UNCOND) == want[UNCOND]
    assert [c["blocks"] for c in watch.calls["main"] if c["blocks"]] == [full] * (STEPS - len(want[COND]))
    assert [c["blocks"] for c in watch.calls["other"] if c["blocks"]] == [full] * (STEPS - len(want[UNCOND]))
    ref = sample(separate_calls(nodes.build(nodes.base(name=name), ["magcache"], settings)), pos, neg, seed=0,
                 steps=STEPS, cfg=CFG, latent_shape=shape)
    assert torch.equal(second, ref)  # one device making the same calls, with the same profile
    assert list((user_dir / "magcache").glob("*.json")) == [path]
    gc.collect()
    assert len(residuals) == 2 * 2 and all(r() is None for r in residuals)  # both runs, both branches, released


@pytest.mark.parametrize("name", SELF_CALIBRATED)
def test_each_device_runs_its_own_blocks(nodes, name, user_dir):
    """The other device's copy gets other weights: its branch must be computed with them (a block list
    swapped in on one device's model must not hand that model's blocks to the other device)."""
    settings = TINY[name].settings
    shape = TINY[name].latent
    pos, neg = conds(name)
    plain = sample(nodes.build(nodes.base(name=name, clone_seed=1), ["split"]), pos, neg, seed=0, steps=4, cfg=CFG,
                   latent_shape=shape)
    for order in sorted(ORDERS):
        for saved in (user_dir / "magcache").glob("*") if (user_dir / "magcache").is_dir() else ():
            saved.unlink()  # each order's run measures (computes every step)
        patched = nodes.build(nodes.base(name=name, clone_seed=1), ORDERS[order], settings)
        watch = Observer({"main": patched.model.diffusion_model, "other": other_device_model(patched)})
        try:
            out = sample(patched, pos, neg, seed=0, steps=4, cfg=CFG, latent_shape=shape)  # measuring: all computed
        finally:
            watch.close()
        assert all(c["blocks"] > 0 for calls in watch.calls.values() for c in calls), order
        assert torch.equal(out, plain), order


@pytest.mark.parametrize("steps", [("compile", "magcache", "split"), ("split", "magcache", "compile")],
                         ids=["compile-magcache-split", "split-magcache-compile"])
def test_compile_model_with_the_split_on_the_block_list_swap(nodes, steps, monkeypatch, user_dir):
    """Z-Image: CompileModel swaps compiled blocks into each device's own swapped list for its calls (on a
    list shared by the devices, the two threads would swap each other's blocks). The other device's copy
    has other weights; outputs as the eager split's on the same profile."""
    from comfyui_magcache.model_patches import compile as compile_module

    name = "zimage"
    settings, shape = TINY[name].settings, TINY[name].latent
    wrapped = []
    real_compile = torch.compile
    monkeypatch.setattr(compile_module.torch, "compile", lambda module, **kw: wrapped.append(module) or
                        real_compile(module, **kw))
    pos, neg = conds(name)
    eager = nodes.build(nodes.base(name=name, clone_seed=1), ["magcache", "split"], settings)
    sample(eager, pos, neg, seed=9, steps=6, cfg=CFG, latent_shape=shape)  # measures the profile every run reads
    refs = [sample(eager, pos, neg, seed=s, steps=6, cfg=CFG, latent_shape=shape) for s in (0, 1)]
    compiled = nodes.build(nodes.base(name=name, clone_seed=1), steps, settings)
    with torch.inference_mode():
        outs = [sample(compiled, pos, neg, seed=s, steps=6, cfg=CFG, latent_shape=shape) for s in (0, 1)]
    devices = [compiled.model.diffusion_model, other_device_model(compiled)]
    assert {id(b) for b in wrapped} == {id(b) for dm in devices for b in dm.layers._modules.values()}
    assert len(wrapped) == 2 * len(devices[0].layers)
    for out, ref in zip(outs, refs):
        assert (out - ref).abs().max().item() < 1e-4
