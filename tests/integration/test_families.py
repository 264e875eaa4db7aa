"""Every model family on real ComfyUI: tiny models from ComfyUI's own classes, on CPU,
sampled through comfy.sample. A family without a published table (Flux.2, Lumina 2 / Z-Image) is
tested through self-calibration: its first run with 'auto' computes every step (output identical to
no MagCache), the saved profile's ratios are what the rule is applied to in the next runs."""
import contextlib
from dataclasses import dataclass

import pytest
import torch
from comfyui_magcache.magcache import (
    COND,
    UNCOND,
    MagCacheConfig,
    Schedule,
    get_preset,
    load_profile,
    predict_skips,
    streams,
)
from comfyui_magcache.model_patches import FIXTURES
from harness import TINY, conds, empty_latent, sample, tiny_model

STEPS = 12


@dataclass(frozen=True)
class Case:
    tiny: str
    preset: str  # what 'auto' must pick for the tiny model
    embed: str  # module whose output is the head input (maybe after to_tokens)
    final: tuple  # the family's own final layer(s), one per stream: the first argument is the hidden state
    # after the blocks
    blocks: tuple  # every ModuleList of blocks, extra (hint) blocks included
    to_tokens: object = None
    head_input: object = None  # hooks giving the head input where no single module's output is it
    settings: tuple = None  # ours, for a family without a table
    round_half_up: bool = False

    @property
    def self_calibrated(self) -> bool:
        return self.preset is None


# Every fixture of every registered family: a family added to the registry runs through every test here.
CASES = {f.name: Case(f.name, f.preset, f.embed, (f.final,) if isinstance(f.final, str) else tuple(f.final),
                      tuple(dict.fromkeys(g.attr for g in spec.groups)) + spec.compile_also, f.tokens,
                      f.head_input, f.settings, spec.retention_round_half_up)
         for name, (spec, f) in FIXTURES.items()}


def test_every_registered_family_has_a_case():
    from comfyui_magcache.model_patches import ALL_SPECS

    assert all(spec.fixtures for spec in ALL_SPECS), [s.name for s in ALL_SPECS if not s.fixtures]
    assert {c.tiny for c in CASES.values()} == {f.name for s in ALL_SPECS for f in s.fixtures}


@pytest.fixture(autouse=True)
def fresh_user_dir(user_dir):
    """Profiles (self-calibration) land in a fresh ComfyUI user folder per test (conftest's user_dir)."""
    return user_dir


def settings_for(case):
    if case.self_calibrated:
        assert case.settings, f"{case.tiny}: a family without a table needs fixture settings"
        return case.settings
    return get_preset(case.preset).recommended


def magcache(nodes, model, model_type, settings, start_step=0):
    thresh, retention, K = settings
    # the settings given, also on a self-calibrated profile (test_self_calibration checks the evidence rule)
    return nodes.MagCache.execute(model, model_type, thresh, retention, K, start_step, -1,
                                  settings_from="inputs").result[0]


def expected(case, settings, branches, table=None, batched=True):
    """The rule's skip set: on the preset 'auto' picks, or on `table` (a self-calibrated profile)."""
    thresh, retention, K = settings
    cfg = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
    table = table if table is not None else get_preset(case.preset)
    return predict_skips(cfg, table.tables(STEPS), STEPS, branches=branches, batched=batched,
                         round_half_up=case.round_half_up)


def self_calibrate(comfy, case, model, pos, neg, user_dir, **kw):
    """A family without a table: its first 'auto' run computes every step, gives the output of no
    MagCache and saves one profile; returns that profile's table (None for a family with tables)."""
    if not case.self_calibrated:
        return None
    shape = TINY[case.tiny].latent
    before = set((user_dir / "magcache").glob("*.json")) if (user_dir / "magcache").is_dir() else set()
    ref = sample(model, pos, neg, seed=11, latent_shape=shape, steps=STEPS, **kw)
    with observe(case, model.model.diffusion_model) as calls:
        out = sample(magcache(comfy, model, "auto", settings_for(case)), pos, neg, seed=11, latent_shape=shape,
                     steps=STEPS, **kw)
    assert torch.equal(out, ref)
    assert calls and all(c["blocks"] == calls[0]["blocks"] > 0 for c in calls)  # nothing skipped
    new = set((user_dir / "magcache").glob("*.json")) - before
    assert len(new) == 1, new
    table, meta = load_profile(new.pop())
    assert meta["steps"] == STEPS and meta["self_calibration"]["fingerprint"] and table.name.startswith("profile:auto ")
    return table


@contextlib.contextmanager
def observe(case, dm):
    """Per model call: (step, cond_or_uncond), how many blocks of any kind ran, the head input
    and the final layer's input (several streams: a tuple of each, as magcache.streams holds them)."""
    calls = []

    def where(to):
        return Schedule.from_values(to["sample_sigmas"]).step_index(float(to["sigmas"][0])), tuple(to["cond_or_uncond"])

    def on_model(module, args, kwargs):
        calls.append({"at": where(kwargs["transformer_options"]), "blocks": 0})

    def on_block(module, args):
        calls[-1]["blocks"] += 1

    def on_embed(module, args, output):
        calls[-1]["head"] = (case.to_tokens or (lambda t: t))(output.detach()).clone()

    def put_head(t):
        calls[-1]["head"] = streams.clone(t)

    def on_final(n):
        def hook(module, args):
            got = calls[-1].setdefault("finals", [None] * len(case.final))
            got[n] = args[0].detach().clone()
            calls[-1]["final"] = got[0] if len(got) == 1 else tuple(got)
        return hook

    handles = [dm.register_forward_pre_hook(on_model, with_kwargs=True)]
    handles += [getattr(dm, name).register_forward_pre_hook(on_final(n)) for n, name in enumerate(case.final)]
    if case.head_input is not None:
        handles += case.head_input(dm, put_head)
    else:
        handles.append(getattr(dm, case.embed).register_forward_hook(on_embed))
    for attr in case.blocks:
        # the modules themselves: a block-list swap may still be in place from an earlier run
        handles += [b.register_forward_pre_hook(on_block) for b in getattr(dm, attr)._modules.values()]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def skipped(calls, branch):
    return sorted({c["at"][0] for c in calls if branch in c["at"][1] and c["blocks"] == 0})


def skipped_are_head_input_plus_residual(calls) -> int:
    """Checks every skipped call of observe()'s `calls` (one branch per call, in order): the final layer
    got head input + the residual of the branch's last computed call, exactly (per stream). Returns how
    many skipped calls were checked."""
    residual, checked = None, 0
    for c in calls:
        if c["blocks"] == 0:
            want = streams.add(c["head"], residual)
            assert streams.same_layout(c["final"], want)
            assert all(torch.equal(a, b) for a, b in zip(streams.parts(c["final"]), streams.parts(want)))
            checked += 1
        else:
            residual = streams.sub(c["final"], c["head"])
    return checked


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    return CASES[request.param]


def test_auto_detection_picks_the_preset(comfy, case):
    from comfyui_magcache.model_patches import resolve

    dm = tiny_model(case.tiny).model.diffusion_model
    spec, preset = resolve("auto", dm)
    assert preset is None and type(dm).__name__ in " ".join(spec.model_classes)
    args = {"x": empty_latent(TINY[case.tiny].latent), "transformer_options": {"sample_sigmas": torch.linspace(1, 0, 21)}}
    assert spec.auto_preset(dm, args.get) == case.preset
    if case.self_calibrated:  # no table of another family is ever read on it
        assert spec.presets == ()
        return
    assert resolve(case.preset, dm) == (spec, case.preset)  # the preset names resolve explicitly too


def test_caching_windowed_off_is_bit_identical(comfy, case):
    model = tiny_model(case.tiny)
    pos, neg = conds(case.tiny)
    ref = sample(model, pos, neg, seed=3, latent_shape=TINY[case.tiny].latent, steps=STEPS)
    patched = magcache(comfy, model, "auto", settings_for(case), start_step=STEPS + 1)
    with observe(case, model.model.diffusion_model) as calls:
        out = sample(patched, pos, neg, seed=3, latent_shape=TINY[case.tiny].latent, steps=STEPS)
    assert torch.equal(out, ref)
    assert len({c["blocks"] for c in calls}) == 1 and calls[0]["blocks"] > 0
    assert magcache(comfy, model, "auto", (0.0, 0.2, 2)) is model  # thresh 0: the model itself


@pytest.mark.parametrize("cfg", [2.0, 1.0], ids=["batched_cfg", "cfg1"])
def test_skip_set_follows_the_rule_and_no_block_runs(comfy, case, cfg, user_dir):
    model = tiny_model(case.tiny)
    pos, neg = conds(case.tiny)
    settings = settings_for(case)
    table = self_calibrate(comfy, case, model, pos, neg, user_dir, cfg=cfg)
    with observe(case, model.model.diffusion_model) as calls:
        sample(magcache(comfy, model, "auto", settings), pos, neg, cfg=cfg, latent_shape=TINY[case.tiny].latent,
               steps=STEPS)
    branches = (COND, UNCOND) if cfg > 1 else (COND,)
    assert {c["at"][1] for c in calls} == ({(1, 0)} if cfg > 1 else {(0,)})
    want = expected(case, settings, branches, table)
    assert want[COND]
    for b in branches:
        assert skipped(calls, b) == want[b]
    full = max(c["blocks"] for c in calls)
    assert all(c["blocks"] in (0, full) for c in calls)  # a call runs every block (hints included) or none
    assert sum(c["blocks"] == 0 for c in calls) == len(want[COND])


def test_skipped_output_is_head_input_plus_residual_through_the_final_layer(comfy, case, user_dir):
    model = tiny_model(case.tiny)
    pos, neg = conds(case.tiny)
    self_calibrate(comfy, case, model, pos, neg, user_dir, cfg=2.0)
    with observe(case, model.model.diffusion_model) as calls:
        sample(magcache(comfy, model, "auto", settings_for(case)), pos, neg, cfg=2.0,
               latent_shape=TINY[case.tiny].latent, steps=STEPS)
    assert skipped_are_head_input_plus_residual(calls) > 0


def test_the_unpatched_model_is_unaffected(comfy, case, user_dir):
    model = tiny_model(case.tiny)
    pos, neg = conds(case.tiny)
    shape = TINY[case.tiny].latent
    self_calibrate(comfy, case, model, pos, neg, user_dir)
    ref = sample(model, pos, neg, seed=5, latent_shape=shape, steps=STEPS)
    cached = sample(magcache(comfy, model, "auto", settings_for(case)), pos, neg, seed=5, latent_shape=shape,
                    steps=STEPS)
    assert not torch.equal(cached, ref)
    assert torch.equal(sample(model, pos, neg, seed=5, latent_shape=shape, steps=STEPS), ref)
    dm = model.model.diffusion_model
    assert type(getattr(dm, "vace_layers_mapping", {})) is dict  # VACE's hint map is restored


def test_batched_and_separate_cfg_calls_give_the_same_decisions(comfy, case, user_dir):
    settings = settings_for(case)
    observed, table = {}, None
    pad = TINY[case.tiny].text_pad  # a text padded to a fixed length (Flux.2) batches unless longer
    for layout, neg_tokens in (("batched", None), ("separate", pad + 5 if pad else 5)):
        model = tiny_model(case.tiny)
        pos, neg = conds(case.tiny, neg_tokens=neg_tokens)
        if layout == "batched":  # the same model (seed) in the same run shape: one profile serves both
            table = self_calibrate(comfy, case, model, pos, neg, user_dir, cfg=2.0)
        with observe(case, model.model.diffusion_model) as calls:
            sample(magcache(comfy, model, "auto", settings), pos, neg, cfg=2.0, latent_shape=TINY[case.tiny].latent,
                   steps=STEPS)
        layouts = {c["at"][1] for c in calls}
        assert layouts == ({(1, 0)} if layout == "batched" else {(0,), (1,)})
        observed[layout] = {b: skipped(calls, b) for b in (COND, UNCOND)}
    want = expected(case, settings, (COND, UNCOND), table)
    assert observed["batched"] == want
    if case.self_calibrated:
        # measured ratios of a tiny random model differ per branch (the published tables barely do), so
        # separate calls, each deciding alone, follow the rule per branch, not the joint decision
        assert observed["separate"] == expected(case, settings, (COND, UNCOND), table, batched=False)
    else:
        assert observed["separate"] == want
