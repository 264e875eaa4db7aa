"""CompileModel on real ComfyUI (CPU, inductor): regional compilation that works with MagCache
in either order, never recompiles across steps, and changes no global torch state."""
import logging

import pytest
import torch
from comfyui_magcache.magcache import Schedule
from harness import TINY, conds, sample, tiny_model

STEPS = 8
MAGCACHE = {"flux": ("flux", 0.24, 0.1, 5), "wan_t2v": ("wan2.1_t2v_1.3B", 0.12, 0.2, 4)}


def counting(log):
    """Another node's block replacement at the first block: records the steps it ran on."""
    def replacement(args, extra):
        to = args["transformer_options"]
        log.append(Schedule.from_values(to["sample_sigmas"]).step_index(float(to["sigmas"][0])))
        return extra["original_block"](args)
    return replacement


def dynamo_counts():
    """Graphs, recompiles and graph breaks so far. Dynamo's counters are process-wide, but dynamo only
    counts while it compiles, and nothing else compiles while a test samples (one thread)."""
    from torch._dynamo.utils import counters

    return (counters["stats"]["unique_graphs"], sum(counters["recompiles"].values()),
            sum(counters["graph_break"].values()))


def cache_entries(model):
    """Compiled variants dynamo holds for the forward of every block class of this model (the
    compiled blocks' own count, which no other test's compile can change)."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    codes = {type(m).forward.__code__ for m in model.model.diffusion_model.modules()
             if type(m).__name__.endswith(("Block", "AttentionBlock"))}
    return sum(len(_debug_get_cache_entry_list(c)) for c in codes)


def warm_up_torch_compile():
    """torch.compile's own one-time set-up (it patches nn.Module.__init__ for generation tags on first
    use): done before the snapshot, so the comparison sees what the node changes."""
    with torch.no_grad():
        torch.compile(torch.nn.Linear(2, 2), backend="eager")(torch.zeros(1, 2))


def global_state():
    import torch._dynamo.config
    import torch._inductor.config
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._inductor.fx_passes import post_grad

    return (torch._dynamo.config.get_config_copy(), torch._inductor.config.get_config_copy(),
            dict(vars(OptimizedModule)), dict(vars(torch.nn.Module)), post_grad.same_meta,
            torch.is_grad_enabled(), torch.get_num_threads())


@pytest.mark.parametrize("name", sorted(MAGCACHE))
def test_magcache_and_compile_in_either_order(comfy, name):
    model_type, thresh, retention, K = MAGCACHE[name]
    pos, neg = conds(name)
    shape = TINY[name].latent
    warm_up_torch_compile()
    before = global_state()

    def build(order, log):
        base = tiny_model(name).clone()
        base.set_model_patch_replace(counting(log), "dit", "double_block", 0)
        for step in order:
            if step == "magcache":
                base = comfy.MagCache.execute(base, model_type, thresh, retention, K, 0, -1, settings_from="inputs").result[0]
            else:
                base = comfy.CompileModel.execute(base, "default", "inductor", False, False).result[0]
        return base

    logs = {k: [] for k in ("eager", "magcache_first", "compile_first")}
    models = {"eager": build(["magcache"], logs["eager"]),
              "magcache_first": build(["magcache", "compile"], logs["magcache_first"]),
              "compile_first": build(["compile", "magcache"], logs["compile_first"])}
    with torch.inference_mode():
        breaks = dynamo_counts()[2]
        outs = {k: sample(m, pos, neg, seed=1, steps=STEPS, latent_shape=shape) for k, m in models.items()}
        assert dynamo_counts()[2] == breaks  # each block is one graph (no memory query inside: attention_for_compile)
        ran = {k: sorted(set(v)) for k, v in logs.items()}
        assert len(ran["eager"]) < STEPS  # MagCache skipped something
        for k in ("magcache_first", "compile_first"):
            assert (outs[k] - outs["eager"]).abs().max().item() < 1e-4
            assert ran[k] == ran["eager"]  # same skip set; the replacements take effect under compile

        # a second run with another seed: no new graph, no recompilation, at any step
        counts, entries = dynamo_counts(), cache_entries(models["eager"])
        assert entries > 0
        for k in logs:
            logs[k].clear()
        for k in ("magcache_first", "compile_first"):
            again = sample(models[k], pos, neg, seed=2, steps=STEPS, latent_shape=shape)
            eager = sample(models["eager"], pos, neg, seed=2, steps=STEPS, latent_shape=shape)
            assert (again - eager).abs().max().item() < 1e-4
        assert dynamo_counts() == counts and cache_entries(models["eager"]) == entries
        assert sorted(set(logs["magcache_first"])) == sorted(set(logs["eager"])) == ran["eager"]
    assert global_state() == before


def test_cuda_only_choices_fail_or_fall_back_before_sampling(comfy, caplog):
    from comfyui_magcache.model_patches.compile import CompileSettingsError, compile_kwargs

    model = tiny_model("wan_t2v")
    with pytest.raises(CompileSettingsError, match="backend 'cudagraphs' needs a CUDA device; this model runs on cpu"):
        comfy.CompileModel.execute(model, "default", "cudagraphs", False, False)
    with caplog.at_level(logging.WARNING, logger="MagCache"):
        kw = compile_kwargs("reduce-overhead", "inductor", False, False, torch.device("cpu"))
        auto = compile_kwargs("max-autotune", "inductor", False, False, torch.device("cpu"))
    assert "triton.cudagraphs" not in kw["options"] and "triton.cudagraphs" not in auto["options"]
    assert auto["options"]["max_autotune"] is True
    assert "mode 'reduce-overhead' uses CUDA graphs" in caplog.text
    cuda = compile_kwargs("reduce-overhead", "inductor", False, False, torch.device("cuda"))
    assert cuda["options"]["triton.cudagraphs"] is True


def breaking_attention(func, *args, **kwargs):
    """Another node's attention override, with a graph break inside."""
    torch._dynamo.graph_break()
    return func(*args, **kwargs)


def test_a_model_dynamo_cannot_compile_runs_uncompiled_with_a_warning(comfy, caplog):
    # fullgraph=True and a graph break in another node's attention override (which CompileModel keeps): dynamo refuses
    model = tiny_model("flux").clone()
    model.model_options["transformer_options"]["optimized_attention_override"] = breaking_attention
    pos, neg = conds("flux")
    ref = sample(model, pos, neg, seed=3, steps=4)
    compiled = comfy.CompileModel.execute(model, "default", "eager", True, False).result[0]
    with caplog.at_level(logging.WARNING, logger="MagCache"), torch.inference_mode():
        out = sample(compiled, pos, neg, seed=3, steps=4)
    assert torch.equal(out, ref.to(out.dtype))
    assert "torch.compile failed" in caplog.text and caplog.text.count("torch.compile failed") == 1


def test_compile_on_the_block_list_swap(comfy, user_dir, monkeypatch):
    """Z-Image (NextDiT: its `layers` loop reads no block replacements; MagCache swaps the list): the
    compiled blocks are the ones the swapped list hands out, in either order; outputs equal eager within
    tolerance, the skip set (on the self-calibrated profile) is unchanged, and a second run recompiles
    nothing. Settings ours (the family has no published table)."""
    from comfy.patcher_extension import WrappersMP
    from comfyui_magcache.model_patches import compile as compile_module
    from comfyui_magcache.model_patches import engine
    from harness import after_each_run
    from torch._dynamo.eval_frame import OptimizedModule

    name, settings = "zimage", TINY["zimage"].settings
    pos, neg = conds(name)
    shape = TINY[name].latent
    base = tiny_model(name)
    originals = list(base.model.diffusion_model.layers._modules.values())
    warm_up_torch_compile()
    wrapped = []
    real_compile = torch.compile
    monkeypatch.setattr(compile_module.torch, "compile", lambda module, **kw: wrapped.append(module) or
                        real_compile(module, **kw))
    # the profile first (its run computes every step), so every model below reads the same table
    sample(comfy.MagCache.execute(base, "auto", *settings, 0, -1, settings_from="inputs").result[0], pos, neg, seed=1, steps=STEPS,
           latent_shape=shape)
    assert len(list((user_dir / "magcache").glob("*.json"))) == 1

    def build(order, seen, handed):
        model = base.clone()
        for step in order:
            if step == "magcache":
                model = comfy.MagCache.execute(model, "auto", *settings, 0, -1, settings_from="inputs").result[0]
            else:
                model = comfy.CompileModel.execute(model, "default", "inductor", False, False).result[0]

        def look(executor, *args, **kwargs):  # inside the model call: what the block loop will iterate
            handed.append([(type(b), getattr(b, "module", b)) for b in executor.class_obj.layers])
            return executor(*args, **kwargs)

        model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "zz_test_look", look)
        after_each_run(model, lambda run: seen.append({k[0]: list(st.skipped_steps) for k, st in run.state.branches.items()}))  # by cond/uncond
        return model

    seen = {k: [] for k in ("eager", "magcache_first", "compile_first")}
    handed = {k: [] for k in seen}
    models = {"eager": build(["magcache"], seen["eager"], handed["eager"]),
              "magcache_first": build(["magcache", "compile"], seen["magcache_first"], handed["magcache_first"]),
              "compile_first": build(["compile", "magcache"], seen["compile_first"], handed["compile_first"])}
    with torch.inference_mode():
        breaks = dynamo_counts()[2]
        outs = {k: sample(m, pos, neg, seed=2, steps=STEPS, latent_shape=shape) for k, m in models.items()}
        assert dynamo_counts()[2] == breaks
        assert [m for m in wrapped] == originals * 2  # each model's own layers, once per compiled model
        assert all(t is engine.SwappedBlock and m in originals for call in handed["eager"] for t, m in call)
        for k in ("magcache_first", "compile_first"):
            for call in handed[k]:  # the swapped list hands out the compiled blocks, hooked
                assert [t for t, _ in call] == [engine.SwappedBlock] * len(originals)
                assert [type(m) for _, m in call] == [OptimizedModule] * len(originals)
                assert [m._orig_mod for _, m in call] == originals
            assert (outs[k] - outs["eager"]).abs().max().item() < 1e-4
            assert seen[k] == seen["eager"]
        assert any(steps for steps in seen["eager"][0].values())  # MagCache skipped something

        counts, entries = dynamo_counts(), cache_entries(models["eager"])
        assert entries > 0
        for k in ("magcache_first", "compile_first"):
            again = sample(models[k], pos, neg, seed=3, steps=STEPS, latent_shape=shape)
            eager = sample(models["eager"], pos, neg, seed=3, steps=STEPS, latent_shape=shape)
            assert (again - eager).abs().max().item() < 1e-4 and seen[k][-1] == seen["eager"][-1]
        assert dynamo_counts() == counts and cache_entries(models["eager"]) == entries
    # between calls the list (swapped or not: ComfyUI leaves an object patch on until another patcher
    # loads) holds the eager blocks again: CompileModel's swap lasts one model call
    assert list(base.model.diffusion_model.layers._modules.values()) == originals
