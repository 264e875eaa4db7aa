"""The hooking engine driven by toy block loops: one that behaves like ComfyUI's Flux loop (block
replacements), one that reads no replacements (the block-list swap)."""
import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, get_preset, predict_skips
from comfyui_magcache.model_patches import engine, flux, swap
from toy_loop import (
    ToyAV,
    ToyFlux,
    ToyKw,
    ToyKwDouble,
    ToyLayer,
    ToyPatcher,
    ToyStack,
    hook,
    sample,
    toy_av_spec,
    toy_kw_spec,
    toy_stack_spec,
)

SIGMAS = torch.linspace(1.0, 0.0, 13)  # 12 steps
FLAT = MagCacheConfig(thresh=0.3, K=2, retention_ratio=0.2)


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 6, 4, generator=g), torch.randn(batch, 3, 4, generator=g)


# The generic engine tests run for both hook strategies: Flux's block replacements, and a throwaway
# family (a toy loop without patches_replace) reached by the block-list swap, defined nowhere else;
# and for the two shapes of hidden state beyond one tensor per block: two streams skipped together
# (LTX-2's video and audio) and blocks that take and return their hidden states as keywords (HiDream).
TOYS = {"patches_replace": (ToyFlux, lambda: flux.SPEC), "block_swap": (ToyStack, toy_stack_spec),
        "two_streams": (ToyAV, toy_av_spec), "keyword_swap": (ToyKw, toy_kw_spec)}


@pytest.fixture(params=sorted(TOYS))
def toy(request):
    make, spec = TOYS[request.param]
    return make, spec()


def table_of(spec):
    return spec.presets[0]


def test_thresh_zero_and_outside_a_run_are_bit_identical(toy):
    make, spec = toy
    x, txt = inputs()
    plain = make()
    ref = [plain.forward(x, txt, {}) for _ in range(3)]
    patched = make()
    reps = hook(spec, patched)
    # outside a run the hooked blocks only forward
    assert all(torch.equal(r, patched.forward(x, txt, {"patches_replace": {"dit": reps}})) for r in ref)
    outs, run = sample(make(), spec, MagCacheConfig(thresh=0.0), SIGMAS, x, txt)
    assert all(torch.equal(o, ref[0]) for o in outs) and run.state.computed_calls == 12


def test_skipped_steps_run_no_block_and_follow_the_rule(toy):
    make, spec = toy
    x, txt = inputs()
    model = make()
    outs, run = sample(model, spec, FLAT, SIGMAS, x, txt)
    expected = predict_skips(FLAT, get_preset(table_of(spec)).tables(12), 12, branches=(COND, UNCOND),
                             round_half_up=spec.retention_round_half_up)[COND]
    assert run.state.branches[(COND, "uuid-0")].skipped_steps == expected and expected
    computed = 12 - len(expected)
    assert model.calls and all(n == computed for n in model.calls.values())  # every block, every computed step
    assert len(model.calls) == len(spec.blocks(model))


def test_skipped_output_is_final_layer_of_head_input_plus_cached_residual(toy):
    make, spec = toy
    x, txt = inputs()
    model = make()
    outs, run = sample(model, spec, FLAT, SIGMAS, x, txt)
    skipped = set(run.state.branches[(COND, "uuid-0")].skipped_steps)
    residual = None
    for step, final_in in enumerate(model.final_inputs):
        if step in skipped:
            assert torch.equal(final_in, x + residual)
            assert torch.equal(outs[step], (x + residual) * 2.0)
        else:
            residual = final_in - x  # head input is x itself in the toy (no embedding)
    assert skipped


def test_the_block_list_swap_keeps_the_modules_their_names_and_weights():
    """Weight patches (LoRA), offloading and CompileModel address blocks by name: unchanged by the swap."""
    model = ToyStack()
    before = dict(model.named_parameters())
    hook(toy_stack_spec(), model)
    assert dict(model.named_parameters()) == before
    assert isinstance(model.layers, engine.CachedBlockList)
    assert all(isinstance(b, engine.SwappedBlock) for b in model.layers)
    assert isinstance(model.layers[-1], engine.SwappedBlock) and model.layers[-1].module is model.layers._modules["3"]
    hook(toy_stack_spec(), model)  # applied twice: still one layer of wrapping
    assert all(isinstance(b.module, ToyLayer) for b in model.layers)


def test_a_device_copy_of_a_swapped_model_gets_a_list_of_its_own_blocks():
    """MultiGPU CFG Split copies the main model's object patches to each device's model: the swapped
    list there must hand out that model's blocks (with the same hooks), never the main model's."""
    spec = toy_stack_spec()
    main_dm, other_dm = ToyStack(), ToyStack()
    with torch.no_grad():
        for p in other_dm.parameters():
            p.mul_(-1.0)
    main = ToyPatcher(main_dm)
    for attr, blocks in engine.swapped_lists(spec, main_dm, engine.CachedBlock).items():
        main.add_object_patch(f"diffusion_model.{attr}", blocks)
    mine = main.object_patches["diffusion_model.layers"]
    copy = main.device_copy(other_dm)
    assert copy.object_patches["diffusion_model.layers"] is mine  # what ComfyUI's clone hands the copy
    swap.own_swapped_lists(main, copy)
    theirs = copy.object_patches["diffusion_model.layers"]
    assert main.object_patches["diffusion_model.layers"] is mine and theirs is not mine
    assert list(theirs._modules.values()) == list(other_dm.layers._modules.values())
    assert theirs.magcache_blocks is mine.magcache_blocks  # the same hooks (they hold no model state)
    # once the copy's list is on its model (its object patch applied), a further copy still finds its blocks
    other_dm.layers = theirs
    again = copy.device_copy(other_dm)
    swap.own_swapped_lists(copy, again)
    assert list(again.object_patches["diffusion_model.layers"]._modules.values()) == list(theirs._modules.values())
    handed_out = [b.module for b in theirs]  # what the copy's block loop runs
    assert handed_out == list(again.object_patches["diffusion_model.layers"]._modules.values())
    assert not set(map(id, handed_out)) & set(map(id, main_dm.layers._modules.values()))


def test_controlnet_additions_are_not_counted_twice_on_skipped_steps():
    x, txt = inputs()
    control = torch.full((2, 6, 4), 0.25)
    model = ToyFlux()
    sample(model, flux.SPEC, FLAT, SIGMAS, x, txt, control=control)
    no_cn = ToyFlux()
    sample(no_cn, flux.SPEC, FLAT, SIGMAS, x, txt)
    # residual includes ControlNet's effect on computed steps; on skipped steps only head + residual
    first_skip = predict_skips(FLAT, get_preset("flux").tables(12), 12, round_half_up=True)[COND][0]
    residual = model.final_inputs[first_skip - 1] - x
    assert torch.equal(model.final_inputs[first_skip], x + residual)


def test_separate_calls_and_cfg1_keep_per_branch_state():
    x, txt = inputs()
    cfg = MagCacheConfig(thresh=0.3, K=3, retention_ratio=0.2)
    batched = sample(ToyFlux(), flux.SPEC, cfg, SIGMAS, x, txt)[1].state
    separate = sample(ToyFlux(), flux.SPEC, cfg, SIGMAS, x, txt, calls_per_step=[(0,), (1,)])[1].state
    cfg1 = sample(ToyFlux(), flux.SPEC, cfg, SIGMAS, x[:1], txt[:1], cond_or_uncond=(0,))[1].state
    key_c, key_u = (COND, "uuid-0"), (UNCOND, "uuid-1")
    steps = batched.branches[key_c].skipped_steps
    assert steps and separate.branches[key_c].skipped_steps == steps == separate.branches[key_u].skipped_steps
    assert cfg1.branches[key_c].skipped_steps == steps and key_u not in cfg1.branches
    assert separate.calls == 24 and batched.calls == 12


def test_batched_branches_get_their_own_residual():
    x, txt = inputs()
    x[1] += 3.0  # the cond chunk differs from the uncond chunk
    model = ToyFlux()
    outs, run = sample(model, flux.SPEC, FLAT, SIGMAS, x, txt)
    skipped = run.state.branches[(COND, "uuid-0")].skipped_steps
    last_computed = max(set(range(12)) - set(skipped))
    full = model.final_inputs[last_computed] - x
    assert torch.equal(run.state.residual((UNCOND, "uuid-1")), full[0:1])  # uncond is batched first
    assert torch.equal(run.state.residual((COND, "uuid-0")), full[1:2])
    assert not torch.equal(full[0:1], full[1:2])


def test_existing_replacement_is_chained_and_skipped_with_the_rest():
    seen = []

    def other_node(args, extra):
        seen.append(1)
        out = extra["original_block"](args)
        out["img"] = out["img"] * 1.5
        return out

    x, txt = inputs()
    existing = {("double_block", 1): other_node}
    ref_model = ToyFlux()
    ref = ref_model.forward(x, txt, {"patches_replace": {"dit": existing}})
    outs, run = sample(ToyFlux(), flux.SPEC, MagCacheConfig(thresh=0.3, start_step=100), SIGMAS, x, txt,
                       existing=existing)
    assert all(torch.equal(o, ref) for o in outs) and len(seen) == 1 + 12
    seen.clear()
    outs, run = sample(ToyFlux(), flux.SPEC, FLAT, SIGMAS, x, txt, existing=existing)
    assert len(seen) == run.state.computed_calls < 12


def test_magcache_applied_twice_keeps_one_layer():
    toy = ToyFlux()
    first = engine.replacements(flux.SPEC, toy, {})
    second = engine.replacements(flux.SPEC, toy, first)
    assert all(p.inner is None for p in second.values())


def test_auto_preset_follows_reference_latents():
    x, txt = inputs()
    ref = torch.randn(2, 2, 4)
    flat_tables_differ = get_preset("flux").tables(12) != get_preset("flux_kontext").tables(12)
    assert flat_tables_differ
    cfg = MagCacheConfig(thresh=0.05, K=4, retention_ratio=0.2)
    _, run = sample(ToyFlux(), flux.SPEC, cfg, SIGMAS, x, txt, ref_latents=ref)
    want = predict_skips(cfg, get_preset("flux_kontext").tables(12), 12, round_half_up=True)[COND]
    assert run.state.branches[(COND, "uuid-0")].skipped_steps == want
    _, run = sample(ToyFlux(), flux.SPEC, cfg, SIGMAS, x, txt)
    want = predict_skips(cfg, get_preset("flux").tables(12), 12, round_half_up=True)[COND]
    assert run.state.branches[(COND, "uuid-0")].skipped_steps == want


def test_shape_change_mid_run_recomputes_instead_of_broadcasting():
    x, txt = inputs()
    model = ToyFlux()
    reps = engine.replacements(flux.SPEC, model, {})
    run = engine.Run(engine.Settings(flux.SPEC, FLAT, None))
    from toy_loop import Executor
    for n, s in enumerate(SIGMAS[:-1]):
        xs = x if n < 6 else torch.randn(2, 8, 4)  # token count changes at step 6
        to = {"patches_replace": {"dit": reps}, "sample_sigmas": SIGMAS, "sigmas": torch.tensor([s]),
              "cond_or_uncond": [1, 0], "uuids": ["u", "c"], engine.RUN_KEY: run}
        engine.diffusion_model_wrapper(Executor(model.forward), xs, txt, to)
    assert 6 not in run.state.branches[(COND, "c")].skipped_steps


def image_first_spec():
    """Flux's blocks with HunyuanVideo's old layout (image tokens first in the single stream)."""
    from dataclasses import replace

    from comfyui_magcache.model_patches.spec import BlockGroup

    return replace(flux.SPEC, groups=(flux.SPEC.groups[0], BlockGroup("single_block", "single_blocks",
                                                                      outputs=("img",), image_tokens="first")))


def skipped_follow_head_plus_residual(model, outs, run, x):
    skipped = set(run.state.branches[(COND, "uuid-0")].skipped_steps)
    residual = None
    for step, final_in in enumerate(model.final_inputs):
        if step in skipped:
            assert torch.equal(final_in, x + residual)
        else:
            residual = final_in - x
    return skipped


def test_the_img_slice_comfyui_writes_wins_over_the_specs_layout():
    """ComfyUI 0.33 made HunyuanVideo's single stream text-first and says so in img_slice: the spec's
    image-first layout (older versions) must not be used then."""
    x, txt = inputs()
    for model, spec in ((ToyFlux(img_slice=True), image_first_spec()),  # 0.33 HunyuanVideo
                        (ToyFlux(image_first=True), image_first_spec()),  # v0.8.0 HunyuanVideo: no img_slice
                        (ToyFlux(image_first=True, img_slice=True), flux.SPEC),
                        (ToyFlux(img_slice=True), flux.SPEC)):
        outs, run = sample(model, spec, FLAT, SIGMAS, x, txt)
        assert run.state.disabled_reason is None
        assert skipped_follow_head_plus_residual(model, outs, run, x)


def test_a_layout_that_does_not_add_up_switches_caching_off_with_one_warning(caplog):
    x, txt = inputs()
    ref = [ToyFlux().forward(x, txt, {}) for _ in range(12)]
    for bad in (lambda t, total: [0, total], lambda t, total: [t, total + 5], lambda t, total: "?"):
        model, spec = ToyFlux(img_slice=bad), flux.SPEC
        caplog.clear()
        with caplog.at_level("WARNING", logger="MagCache"):
            outs, run = sample(model, spec, FLAT, SIGMAS, x, txt)
        assert run.state.disabled_reason and "image tokens" in run.state.disabled_reason
        assert not run.state.branches or not any(st.skipped_steps for st in run.state.branches.values())
        assert sum("caching is off" in r.getMessage() for r in caplog.records) == 1
        assert all(torch.equal(o, r) for o, r in zip(outs, ref))


def test_two_streams_cache_one_residual_per_stream_and_skip_together():
    x, txt = inputs()
    model = ToyAV(n_video=4)
    outs, run = sample(model, toy_av_spec(), FLAT, SIGMAS, x, txt)
    for key in ((COND, "uuid-0"), (UNCOND, "uuid-1")):
        res = run.state.residual(key)
        assert isinstance(res, tuple) and [r.shape for r in res] == [(1, 4, 4), (1, 2, 4)]
    skipped = run.state.branches[(COND, "uuid-0")].skipped_steps
    assert skipped and all(n == 12 - len(skipped) for n in model.calls.values())


def test_streams_of_different_widths_calibrate_over_all_their_tokens():
    from comfyui_magcache.magcache import Calibration
    from comfyui_magcache.magcache.calibration import step_stats

    v, a = torch.ones(1, 3, 8), torch.ones(1, 1, 2)
    stats = step_stats((v, a), (v * 2, a * 4))  # per-token ratios 2, 2, 2 (video) and 4 (audio)
    assert torch.allclose(stats[0], torch.tensor(2.5)) and torch.allclose(stats[2], torch.tensor(0.0), atol=1e-6)
    cal = Calibration()
    for step in range(3):
        cal.record((COND, 0), step, (v * 2 ** step, a * 2 ** step))
    assert cal.result(3).ratios[COND] == pytest.approx([1.0, 2.0, 2.0])


def test_keyword_blocks_called_another_way_switch_caching_off_and_still_run(caplog):
    model = ToyKw()
    hook(toy_kw_spec(), model)
    run = engine.Run(engine.Settings(toy_kw_spec(), FLAT))
    x, txt = inputs(batch=1)
    block = model.double_stream_blocks[0]
    to = {engine.RUN_KEY: run}
    img, t = block(x, None, txt, None, transformer_options=to)  # positional: not what the spec declares
    ref = ToyKwDouble(0, model.calls)(x, None, txt, None)
    assert torch.equal(img, ref[0]) and torch.equal(t, ref[1])
    assert "were not called with the keywords image_tokens, text_tokens" in run.state.disabled_reason


def test_a_hidden_state_that_is_no_token_tensor_switches_caching_off():
    run = engine.Run(engine.Settings(toy_av_spec(), FLAT))
    call = engine.Call(run, "wan2.1_t2v_1.3B")
    engine.CachedBlock.begin(run, call, (torch.zeros(2, 3, 4), torch.zeros(1, 3, 4)), {
        "sample_sigmas": SIGMAS, "sigmas": SIGMAS[:1], "cond_or_uncond": [0, 1]})
    assert not call.active and "not a [batch, tokens, channels] tensor" in run.state.disabled_reason


def test_calls_carrying_an_uncached_option_run_every_block_and_leave_the_cache_alone(caplog):
    """A guidance pass (LTX-2's STG) calls the model with the cond's branch keys but perturbed blocks:
    with the option declared by the spec it is computed in full, never reads, writes or measures a
    residual, and the unperturbed calls decide and cache exactly as in a run without it."""
    import dataclasses

    spec = dataclasses.replace(toy_av_spec(), uncached_options=("toy_perturbed_blocks",))
    x, txt = inputs()
    plain_outs, plain = sample(ToyAV(), spec, FLAT, SIGMAS, x, txt)
    model = ToyAV()
    perturb = {"toy_perturbed_blocks": {1}}
    with caplog.at_level("WARNING", logger="MagCache"):
        outs, run = sample(model, spec, FLAT, SIGMAS, x, txt, calls_per_step=[(1, 0), (0,)], options=[{}, perturb])
    assert sum("toy_perturbed_blocks" in r.getMessage() for r in caplog.records) == 1
    assert not run.state.disabled_reason
    want = ToyAV().forward(x[1:], txt[1:], perturb)  # the perturbed function on the cond rows, in full
    assert all(torch.equal(o, want) for o in outs[1::2])
    assert all(torch.equal(o, p) for o, p in zip(outs[0::2], plain_outs))  # unperturbed calls as without it
    for key in ((COND, "uuid-0"), (UNCOND, "uuid-1")):
        assert run.state.branches[key].skipped_steps == plain.state.branches[key].skipped_steps
        assert all(torch.equal(a, b) for a, b in zip(run.state.residual(key), plain.state.residual(key)))
    skipped = len(run.state.branches[(COND, "uuid-0")].skipped_steps)
    assert skipped and all(n == 12 + 12 - skipped for n in model.calls.values())
    # without the declaration the perturbed pass would share the cond branch's residual
    _, shared = sample(ToyAV(), toy_av_spec(), FLAT, SIGMAS, x, txt, calls_per_step=[(1, 0), (0,)],
                       options=[{}, perturb])
    assert not torch.equal(shared.state.residual((COND, "uuid-0"))[0], plain.state.residual((COND, "uuid-0"))[0])


def test_a_swapped_block_called_without_its_hidden_state_first_switches_caching_off_and_still_runs():
    model = ToyStack()
    hook(toy_stack_spec(), model)
    run = engine.Run(engine.Settings(toy_stack_spec(), FLAT))
    x = torch.randn(1, 6, 4)
    want = model.layers._modules["0"](x.clone(), torch.zeros(1, 1, 4))
    got = model.layers[0](x=x.clone(), c=torch.zeros(1, 1, 4), transformer_options={engine.RUN_KEY: run})
    assert torch.equal(got, want) and "not called with the hidden state first" in run.state.disabled_reason


def test_positional_swap_args_pass_both_streams_and_read_the_blocks_attributes():
    """FramePack's blocks: block(hidden, text, temb, ...) -> (hidden, text), reached by the block-list swap."""
    from comfyui_magcache.model_patches.spec import BlockGroup

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = torch.nn.Identity()

        def forward(self, h, e, temb):
            return h + temb, e * 2

    group = BlockGroup("double_block", "blocks", outputs=("img", "txt"), swap_args=(0, 1))
    block = Pair()
    wrapped = swap.SwappedBlock(block, engine.CachedBlock(group, True, True))
    h, e, temb = torch.ones(1, 3, 4), torch.ones(1, 2, 4), torch.full((1, 1, 4), 0.5)
    got = wrapped(h, e, temb)
    want = block(h, e, temb)
    assert isinstance(got, tuple) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert wrapped.norm1 is block.norm1  # a loop reading the block's submodules (FramePack's TeaCache) gets them
    run = engine.Run(engine.Settings(flux.SPEC, FLAT))
    token = engine.CURRENT_CALL.set(engine.Call(run, "flux", {engine.RUN_KEY: run}))
    try:
        with pytest.raises(TypeError):  # called with one argument: not how the spec says; runs as the block would
            wrapped(h)
    finally:
        engine.CURRENT_CALL.reset(token)
    assert "were not called with the arguments 0, 1" in run.state.disabled_reason
