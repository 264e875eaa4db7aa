"""Profiles you can trust, on real ComfyUI (tiny Lumina 2, CPU): a profile is written only from a run that
completed; profiles are keyed by the sigma curve the run used; the fingerprint notices a changed layer;
a profile with a wrongly typed field is measured again."""
import json
import logging

import pytest
import torch
from harness import TINY, conds, sample, tiny_model

NAME = "lumina2"
SHAPE = TINY[NAME].latent
STEPS = 12
STOP_AT = 5  # the interrupting callback fires after this many steps
SETTINGS = (0.24, 0.2, 3)  # ours


def listing(user_dir) -> dict:
    """{file name: bytes} of the profile folder (json, png and anything else in it)."""
    d = user_dir / "magcache"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}


def profiles(user_dir) -> list:
    return sorted(n for n in listing(user_dir) if n.endswith(".json"))


def magcache(comfy, model, model_type="auto"):
    return comfy.MagCache.execute(model, model_type, *SETTINGS, 0, -1, settings_from="inputs").result[0]


def interrupt():
    import comfy.model_management

    return comfy.model_management.InterruptProcessingException()


STOPS = {  # how a run ends early: ComfyUI's cancel button, and out-of-memory as torch and older code raise it
    "interrupt": interrupt,
    "torch OutOfMemoryError": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "RuntimeError out of memory": lambda: RuntimeError("CUDA error: out of memory"),
}


def stopping(make):
    def callback(step, x0, x, total):
        if step + 1 == STOP_AT:
            raise make()
    return callback


def run_stopped(model, pos, neg, make, **kw):
    with pytest.raises(BaseException) as info:
        sample(model, pos, neg, seed=3, steps=STEPS, latent_shape=SHAPE, callback=stopping(make), **kw)
    assert type(info.value) is type(make())  # the generation's own error reaches the caller unchanged


@pytest.mark.parametrize("stop", sorted(STOPS))
def test_an_interrupted_self_calibration_saves_nothing_and_keeps_the_profile(comfy, user_dir, caplog, stop):
    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    patched = magcache(comfy, model)
    sample(patched, pos, neg, seed=1, steps=STEPS, latent_shape=SHAPE)  # complete: one profile
    [name] = profiles(user_dir)
    before = listing(user_dir)

    # 1. a new run shape (karras) stopped at a middle step: nothing new written, said on the log
    with caplog.at_level(logging.INFO, logger="MagCache"):
        run_stopped(patched, pos, neg, STOPS[stop], scheduler="karras")
    assert listing(user_dir) == before
    said = [r.getMessage() for r in caplog.records if r.name == "MagCache" and "interrupted" in r.getMessage()]
    assert said == [f"MagCache self-calibration interrupted at step {STOP_AT} of {STEPS}: nothing saved, "
                    "existing profile kept"]

    # 2. a profile that must be measured again (a wrongly typed field): the stopped re-measurement keeps it
    path = user_dir / "magcache" / name
    data = json.loads(path.read_text())
    data["self_calibration"] = "yes"
    path.write_text(json.dumps(data))
    bad = listing(user_dir)
    run_stopped(patched, pos, neg, STOPS[stop])
    assert listing(user_dir) == bad
    # 3. and a run that completes replaces it with a good one (every step computed: the output of no MagCache)
    ref = sample(model, pos, neg, seed=4, steps=STEPS, latent_shape=SHAPE)
    assert torch.equal(sample(patched, pos, neg, seed=4, steps=STEPS, latent_shape=SHAPE), ref)
    assert profiles(user_dir) == [name] and json.loads(path.read_text())["self_calibration"]["fingerprint"]


@pytest.mark.parametrize("stop", sorted(STOPS))
def test_an_interrupted_calibration_node_run_keeps_my_calibration(comfy, user_dir, caplog, stop):
    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    cal_model, handle = comfy.MagCacheCalibration.execute(model, "auto", "my_calibration").result
    sample(cal_model, pos, neg, seed=1, steps=STEPS, latent_shape=SHAPE)
    before = listing(user_dir)
    assert sorted(before) == ["my_calibration.json", "my_calibration.png"] and handle.result is not None

    again, handle2 = comfy.MagCacheCalibration.execute(model, "auto", "my_calibration").result
    with caplog.at_level(logging.INFO, logger="MagCache"):
        run_stopped(again, pos, neg, STOPS[stop], scheduler="beta")
    assert listing(user_dir) == before and handle2.result is None
    assert (f"MagCache calibration interrupted at step {STOP_AT} of {STEPS}: nothing saved, existing profile kept"
            in caplog.text) and "saved profile" not in caplog.text


def test_a_completed_run_with_steps_not_measured_saves_nothing(comfy, user_dir, caplog):
    """Caching switched off part-way (here from a wrapper, as a layout problem would): the run completes,
    its later steps were never measured, so no profile is made of it and the old one stays."""
    from comfy.patcher_extension import WrappersMP
    from comfyui_magcache.model_patches import engine

    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    cal, _ = comfy.MagCacheCalibration.execute(model, "auto", "my_calibration").result
    sample(cal, pos, neg, seed=1, steps=STEPS, latent_shape=SHAPE)
    before = listing(user_dir)
    calls = []

    def switch_off(executor, *args, **kwargs):
        to = kwargs.get("transformer_options") or next(a for a in reversed(args) if isinstance(a, dict))
        calls.append(1)
        if len(calls) == 7:
            to[engine.RUN_KEY].disable("switched off by the test")
        return executor(*args, **kwargs)

    again, handle = comfy.MagCacheCalibration.execute(model, "auto", "my_calibration").result
    again.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test", switch_off)
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(again, pos, neg, seed=2, steps=STEPS, latent_shape=SHAPE)
    assert listing(user_dir) == before and handle.result is None
    said = [r for r in caplog.records if "NOT saved" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None  # one warning, no traceback: nothing went wrong in MagCache
    assert said[0].getMessage() == ("MagCache calibration: the profile was NOT saved: cond branch measured 6 of "
                                    f"{STEPS} steps (first missing: step 7)")


def sigmas_of(model, sampler, scheduler, steps, denoise):
    """The sigmas ComfyUI's KSampler samples with (independent of the pack)."""
    import comfy.samplers

    ks = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler, scheduler=scheduler,
                                 denoise=denoise, model_options=model.model_options)
    return tuple(round(v, 5) for v in ks.sigmas.tolist())


SCHEDULERS = ("simple", "exponential", "beta", "karras", "normal")
DENOISE = (0.3, 0.6, 0.9)


def test_each_sigma_curve_gets_its_own_profile(comfy, user_dir, caplog):
    """dpm_2 and uni_pc drop the second-to-last sigma (no scheduler name matches their curves) and a
    partial denoise samples a piece of a schedule: each curve is measured and saved on its own; two runs
    share a profile only when ComfyUI gives them the very same sigmas."""
    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    patched = magcache(comfy, model)
    steps = 10  # int(10 / 0.9) = 11: denoise 0.9 is a piece of a longer schedule too (at 8 steps it is the whole)
    configs = [(s, c, 1.0) for s in ("dpm_2", "uni_pc") for c in SCHEDULERS]
    configs += [(s, "simple", d) for s in ("euler", "dpm_2") for d in DENOISE]
    latent = torch.randn((1, *SHAPE[1:]), generator=torch.Generator().manual_seed(5))  # img2img: a latent to denoise
    names = {}
    for sampler, scheduler, denoise in configs:
        before = set(profiles(user_dir))
        sample(patched, pos, neg, seed=1, steps=steps, sampler=sampler, scheduler=scheduler, denoise=denoise,
               latent=latent)
        new = set(profiles(user_dir)) - before
        assert len(new) <= 1
        names[(sampler, scheduler, denoise)] = new.pop() if new else None
    curves = {cfg: (cfg[0], sigmas_of(model, *cfg[:2], steps, cfg[2])) for cfg in configs}
    # a config saved nothing new only when an earlier one had the same sampler and the same sigmas
    for i, cfg in enumerate(configs):
        earlier = [c for c in configs[:i] if curves[c] == curves[cfg]]
        assert (names[cfg] is None) == bool(earlier), cfg
    assert len(profiles(user_dir)) == len(set(curves.values())) >= len(configs) - 2
    for (sampler, scheduler, denoise), name in names.items():
        if name is not None:  # a recognised scheduler stays readable in the name and the record
            meta = json.loads((user_dir / "magcache" / name).read_text())
            assert f" {meta['sampler']} " in name and meta["sampler"] == sampler.replace("uni_pc", "unipc")
            assert meta["scheduler"] in (scheduler, "sgm_uniform") and f" {meta['scheduler']} " in name, (name, denoise)
            assert (meta.get("offset", 0) > 0) == (denoise < 1)
    # the same configs again: nothing new; each run reads its curve's profile
    before = listing(user_dir)
    for sampler, scheduler, denoise in configs:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="MagCache"):
            sample(patched, pos, neg, seed=2, steps=steps, sampler=sampler, scheduler=scheduler, denoise=denoise,
                   latent=latent)
        want = names[(sampler, scheduler, denoise)] or next(
            names[c] for c in configs if names[c] and curves[c] == curves[(sampler, scheduler, denoise)])
        assert f"table profile:{want[:-5]}" in caplog.text
    assert sorted(listing(user_dir)) == sorted(before)


def test_custom_sigmas_get_a_profile_per_curve(comfy, user_dir):
    """SamplerCustom with sigmas no scheduler makes: named 'custom', told apart by the curve's hash."""
    import comfy.sample as comfy_sample
    import comfy.samplers as comfy_samplers

    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    patched = magcache(comfy, model)
    latent = torch.zeros(SHAPE)
    noise = comfy_sample.prepare_noise(latent, 1)
    curves = [torch.linspace(1, 0, 9) ** p for p in (1.5, 2.0, 1.5)]  # the first again at the end
    made = []
    for sigmas in curves:
        comfy_sample.sample_custom(patched, noise, 2.0, comfy_samplers.sampler_object("euler"), sigmas, pos, neg,
                                   latent, disable_pbar=True, seed=1)
        made.append(profiles(user_dir))
    assert [len(m) for m in made] == [1, 2, 2] and all(" euler custom " in n for n in made[-1])


def test_a_changed_middle_layer_changes_the_fingerprint(comfy):
    from comfyui_magcache.model_patches.profile_keys import model_fingerprint

    def fp(patcher):
        return model_fingerprint(patcher, patcher.model.diffusion_model)

    model, same = tiny_model(NAME), tiny_model(NAME)
    assert fp(model) == fp(same) == fp(model.clone())
    layers = model.model.diffusion_model.layers
    middle = layers[len(layers) // 2]
    with torch.no_grad():
        for p in middle.parameters():
            p.mul_(1.01)  # every tensor of one block changed a little (a merged fine-tune of it)
    assert fp(model) != fp(same)
    other = tiny_model(NAME)
    with torch.no_grad():
        for name, p in other.model.diffusion_model.named_parameters():
            if "attention" in name and name.endswith("weight"):
                p.add_(0.001)  # a LoRA merged into every attention weight
    assert fp(other) != fp(same)
    # a weight patch (LoRA) and its strength count
    key = next(k for k in same.model.state_dict() if k.startswith("diffusion_model.layers.") and k.endswith("weight"))
    lora = same.clone()
    lora.add_patches({key: (torch.zeros_like(same.model.state_dict()[key]),)}, 0.5)
    stronger = same.clone()
    stronger.add_patches({key: (torch.zeros_like(same.model.state_dict()[key]),)}, 0.7)
    assert len({fp(same), fp(lora), fp(stronger)}) == 3


def test_a_wrongly_typed_field_is_measured_again_with_one_warning(comfy, user_dir, caplog):
    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    patched = magcache(comfy, model)
    sample(patched, pos, neg, seed=1, steps=STEPS, latent_shape=SHAPE)
    [name] = profiles(user_dir)
    path = user_dir / "magcache" / name
    data = json.loads(path.read_text())
    data["self_calibration"]["edit"] = "no"
    path.write_text(json.dumps(data))
    ref = sample(model, pos, neg, seed=2, steps=STEPS, latent_shape=SHAPE)
    with caplog.at_level(logging.INFO, logger="MagCache"):
        out = sample(patched, pos, neg, seed=2, steps=STEPS, latent_shape=SHAPE)
    assert torch.equal(out, ref)  # measured again: every step computed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "MagCache"]
    assert len(warnings) == 1 and "'self_calibration.edit' must be true or false" in warnings[0]
    assert "it is measured again" in warnings[0] and "caching is off" not in caplog.text
    assert json.loads(path.read_text())["self_calibration"]["edit"] is False and profiles(user_dir) == [name]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(patched, pos, neg, seed=3, steps=STEPS, latent_shape=SHAPE)
    assert f"table profile:{name[:-5]}" in caplog.text  # and used from then on


def test_only_the_most_recently_used_automatic_profiles_are_kept(comfy, user_dir, caplog, monkeypatch):
    from comfyui_magcache.magcache import profiles as profile_files

    monkeypatch.setattr(profile_files, "KEEP_AUTO", 3)  # 20 in use; 3 keeps the test short
    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    patched = magcache(comfy, model)
    cal, _ = comfy.MagCacheCalibration.execute(model, "auto", "mine").result  # a named profile: never counted
    sample(cal, pos, neg, seed=1, steps=4, latent_shape=SHAPE)
    made = []
    for scheduler in ("simple", "karras", "exponential"):
        sample(patched, pos, neg, seed=1, steps=4, scheduler=scheduler, latent_shape=SHAPE)
        made.append(next(n for n in profiles(user_dir) if n not in made and n != "mine.json"))
    sample(patched, pos, neg, seed=2, steps=4, scheduler="simple", latent_shape=SHAPE)  # simple used again
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(patched, pos, neg, seed=1, steps=4, scheduler="beta", latent_shape=SHAPE)  # a fourth: one goes
    left = profiles(user_dir)
    assert len(left) == 4 and "mine.json" in left and made[0] in left and made[1] not in left  # karras: least recent
    assert made[1][:-5] + ".png" not in listing(user_dir)
    assert f"Removed the 1 least recently used automatic profile(s) of this model (at most 3 are kept): " \
           f"{made[1][:-5]}" in caplog.text


def test_a_run_over_part_of_the_schedule_measures_its_own_steps_and_reads_them_in_place(comfy, user_dir):
    """KSamplerAdvanced from step 4 of 12 (the second of two samplers, an img2img): the run measures its own
    8 steps, saved with where they sit (offset 4 of 12); the next such run reads them at those steps: the
    rule's skips on them, as for any partial run of a table."""
    from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, load_profile, predict_skips
    from comfyui_magcache.model_patches import lumina2
    from comfyui_magcache.model_patches.selfcal import in_schedule
    from test_families import CASES, observe, skipped

    model = tiny_model(NAME)
    pos, neg = conds(NAME)
    patched = magcache(comfy, model)
    latent = torch.randn((1, *SHAPE[1:]), generator=torch.Generator().manual_seed(5))
    kw = dict(steps=STEPS, latent=latent, start_step=4, last_step=10000)
    ref = sample(model, pos, neg, seed=1, **kw)
    assert torch.equal(sample(patched, pos, neg, seed=1, **kw), ref)  # measured: every step computed
    [name] = profiles(user_dir)
    table, meta = load_profile(user_dir / "magcache" / name)
    assert (table.steps, meta["offset"], meta["total"]) == (STEPS - 4, 4, STEPS)
    with observe(CASES[NAME], model.model.diffusion_model) as calls:
        sample(patched, pos, neg, seed=2, **kw)
    thresh, retention, K = SETTINGS
    want = predict_skips(MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K),
                         in_schedule(table, meta).tables(STEPS), STEPS, branches=(COND, UNCOND),
                         round_half_up=lumina2.SPEC.retention_round_half_up, first=4)
    got = {b: [4 + s for s in skipped(calls, b)] for b in (COND, UNCOND)}  # observe() counts the run's own steps
    assert want[COND] and got == want and profiles(user_dir) == [name]
