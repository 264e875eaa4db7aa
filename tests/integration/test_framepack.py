"""FramePack / FramePack-F1 through kijai's ComfyUI-FramePackWrapper on CPU: a tiny model of the wrapper's own
HunyuanVideoTransformer3DModel class, sampled by the wrapper's FramePackSampler (its sample_hunyuan and
FlowMatchUniPC loop, once per section), with MagCache (FramePack) in front of it.

Observed from outside the pack: per model call (in order; one per step with cfg 1, cond then uncond with real
CFG) whether any block ran, the blocks' input (process_input_hidden_states) and the hidden state after them
(norm_out's input)."""
import contextlib
import logging

import pytest
import torch
from framepack_wrapper import require_wrapper, sample, tiny_model
from unit.test_authors_reference import framepack_script  # the transcription of the authors loop

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
    print(preset, got, want)
    assert len(got) == 2 and got == [want, want]
    assert all(c["blocks"] in (0, 4) for c in calls)
    assert torch.isfinite(out).all()
    assert caplog.text.count(f"MagCache: skipped {len(want)}/{STEPS} steps (cond {len(want)})") == 2
