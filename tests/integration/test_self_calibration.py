"""Self-calibration on real ComfyUI (tiny Lumina 2, Flux.2 and Flux, CPU): 'auto' on a family without a
published table, and model_type 'auto_calibrate' on one with tables."""
import json
import logging

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, load_profile, predict_skips
from comfyui_magcache.magcache.evidence import evidence_settings
from harness import TINY, conds, sample, tiny_model
from test_families import CASES, observe, skipped, skipped_are_head_input_plus_residual

STEPS = 12
SETTINGS = (0.24, 0.2, 3)  # ours (no published setting exists for these families)


def profiles(user_dir):
    d = user_dir / "magcache"
    return sorted(d.glob("*.json")) if d.is_dir() else []


def magcache(comfy, model, model_type="auto", settings=SETTINGS, settings_from="inputs", window=(0, -1)):
    return comfy.MagCache.execute(model, model_type, *settings, *window, settings_from=settings_from).result[0]


def by_rule(table, steps, window=(0, -1)):
    """The skip set the node's default (settings_from 'auto') gives: the evidence rule's settings."""
    thresh, retention, k = evidence_settings(table, steps, window)
    first, last = MagCacheConfig(start_step=window[0], end_step=window[1]).window(steps)
    return {b: [s for s in steps_ if first <= s <= last]
            for b, steps_ in rule(table, steps, (thresh, retention, k)).items()}, (thresh, retention, k)


def rule(table, steps, settings=SETTINGS, round_half_up=False):
    thresh, retention, K = settings
    return predict_skips(MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K), table.tables(steps), steps,
                         branches=(COND, UNCOND), round_half_up=round_half_up)


def test_first_run_measures_and_saves_then_runs_use_it(comfy, user_dir, caplog):
    name = "lumina2"
    case, shape = CASES[name], TINY[name].latent
    model = tiny_model(name)
    pos, neg = conds(name)
    patched = magcache(comfy, model, settings_from="auto")  # the node's default
    ref = sample(model, pos, neg, seed=1, steps=STEPS, latent_shape=shape)

    # 1. first run: every step computed, output of no MagCache, profile saved, one log line says so
    with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
        out = sample(patched, pos, neg, seed=1, steps=STEPS, latent_shape=shape)
    assert torch.equal(out, ref) and all(c["blocks"] > 0 for c in calls)
    [path] = profiles(user_dir)
    lines = [r.getMessage() for r in caplog.records if r.name == "MagCache"]
    said = [m for m in lines if "self-calibration" in m]
    assert len(said) == 1 and "Lumina 2 / Z-Image has no published table" in said[0] and path.stem in said[0]
    assert not any(m.startswith("MagCache: skipped") for m in lines)  # no run report beside it
    data = json.loads(path.read_text())
    assert data["family"] == "Lumina 2 / Z-Image" and data["steps"] == STEPS and data["cfg_interleaved"] is True
    assert data["sampler"] == "euler" and data["scheduler"] == "simple" and data["reference"] is None
    assert len(set(data["ratios"])) > 4  # measured, not a constant
    table, _ = load_profile(path)
    assert f"profile:{path.stem}" in comfy.MagCache.define_schema().inputs[1].options  # listed with the others

    # 2. next run (new seed, same shape): uses the profile, with the evidence rule's settings on it
    #    (retention 0.2, K 3, the smallest thresh that skips half the steps); the run's summary names them
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
        sample(patched, pos, neg, seed=2, steps=STEPS, latent_shape=shape)
    want, (thresh, retention, k) = by_rule(table, STEPS)
    assert (retention, k) == (0.2, 3) and len(want[COND]) >= STEPS // 2
    assert {b: skipped(calls, b) for b in (COND, UNCOND)} == want
    assert f"table profile:{path.stem}" in caplog.text and profiles(user_dir) == [path]
    assert f"(evidence rule: thresh {thresh:g} / retention 0.2 / K 3)" in caplog.text

    # 3. another step count: the same profile, interpolated, the rule applied at that count
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
        sample(patched, pos, neg, seed=3, steps=20, latent_shape=shape)
    want20, _ = by_rule(table, 20)
    assert {b: skipped(calls, b) for b in (COND, UNCOND)} == want20 and len(want20[COND]) >= 10
    assert f"table profile:{path.stem}" in caplog.text and profiles(user_dir) == [path]

    # 3b. settings_from 'inputs': the node's own thresh / retention / K on the same profile
    with observe(case, model.model.diffusion_model) as calls:
        sample(magcache(comfy, model), pos, neg, seed=2, steps=STEPS, latent_shape=shape)
    assert {b: skipped(calls, b) for b in (COND, UNCOND)} == rule(table, STEPS) != want

    # 3c. 'auto' keeps the start/end window (the rule counts only skips inside it) and thresh 0 still means off
    with observe(case, model.model.diffusion_model) as calls:
        sample(magcache(comfy, model, settings_from="auto", window=(0, 7)), pos, neg, seed=2, steps=STEPS,
               latent_shape=shape)
    windowed, _ = by_rule(table, STEPS, (0, 7))
    assert {b: skipped(calls, b) for b in (COND, UNCOND)} == windowed and max(windowed[COND]) <= 7
    assert magcache(comfy, model, settings=(0.0, 0.2, 3), settings_from="auto") is model

    # 4. another sampler, then another scheduler: calibrated again (output of no MagCache each time)
    for kw in ({"sampler": "heun"}, {"scheduler": "karras"}):
        before = set(profiles(user_dir))
        ref = sample(model, pos, neg, seed=4, steps=STEPS, latent_shape=shape, **kw)
        assert torch.equal(sample(patched, pos, neg, seed=4, steps=STEPS, latent_shape=shape, **kw), ref)
        [new] = set(profiles(user_dir)) - before
        meta = json.loads(new.read_text())
        assert (meta["sampler"], meta["scheduler"]) == (kw.get("sampler", "euler"), kw.get("scheduler", "simple"))

    # 5. cfg 1 is another run shape (one branch): its own profile
    before = set(profiles(user_dir))
    sample(patched, pos, neg, seed=5, steps=STEPS, cfg=1.0, latent_shape=shape)
    [new] = set(profiles(user_dir)) - before
    assert json.loads(new.read_text())["cfg_interleaved"] is False and new.stem.endswith(" nocfg")


def test_another_model_of_the_family_calibrates_itself(comfy, user_dir):
    shape = TINY["lumina2"].latent
    pos, neg = conds("lumina2")
    for seed in (0, 1):  # other weights: another fingerprint
        sample(magcache(comfy, tiny_model("lumina2", seed=seed)), pos, neg, seed=1, steps=4, latent_shape=shape)
    assert len(profiles(user_dir)) == 2
    model = tiny_model("lumina2", seed=0)  # the same weights again: found, nothing new
    sample(magcache(comfy, model), pos, neg, seed=2, steps=4, latent_shape=shape)
    assert len(profiles(user_dir)) == 2


def test_flux2_never_reads_a_flux1_table(comfy, user_dir, caplog):
    from comfyui_magcache.model_patches import UnsupportedModel, resolve

    model = tiny_model("flux2")
    dm = model.model.diffusion_model
    assert dm.params.global_modulation is True and type(dm).__name__ == "Flux"  # Flux.1's class
    spec, preset = resolve("auto", dm)
    assert spec.name == "Flux.2" and spec.presets == () and preset is None
    with pytest.raises(UnsupportedModel, match="does not match the loaded model"):
        comfy.MagCache.execute(model, "flux", *SETTINGS, 0, -1)
    pos, neg = conds("flux2")
    shape, steps = TINY["flux2"].latent, 6
    patched = magcache(comfy, model)
    ref = sample(model, pos, neg, seed=1, steps=steps, latent_shape=shape)
    with caplog.at_level(logging.INFO, logger="MagCache"):
        assert torch.equal(sample(patched, pos, neg, seed=1, steps=steps, latent_shape=shape), ref)
        sample(patched, pos, neg, seed=2, steps=steps, latent_shape=shape)
    [path] = profiles(user_dir)
    assert json.loads(path.read_text())["family"] == "Flux.2" and "Flux.2 has no published table" in caplog.text
    tables = [line.split(", table ", 1)[1] for line in caplog.text.splitlines() if ", table " in line]
    assert tables == [f"profile:{path.stem}"]  # never flux / flux_kontext


def test_auto_calibrate_on_a_family_with_tables(comfy, user_dir, caplog):
    """Fine-tunes, merges, distillations: the published table is not assumed to fit; the model is measured."""
    model = tiny_model("flux")
    pos, neg = conds("flux")
    shape, steps = TINY["flux"].latent, 6
    patched = magcache(comfy, model, "auto_calibrate")
    ref = sample(model, pos, neg, seed=1, steps=steps, latent_shape=shape)
    with caplog.at_level(logging.INFO, logger="MagCache"):
        assert torch.equal(sample(patched, pos, neg, seed=1, steps=steps, latent_shape=shape), ref)
        sample(patched, pos, neg, seed=2, steps=steps, latent_shape=shape)
    [path] = profiles(user_dir)
    data = json.loads(path.read_text())
    assert data["family"] == "Flux" and data["reference"] == "flux" and data["self_calibration"]["forced"] is True
    assert "self-calibration (model_type auto_calibrate)" in caplog.text
    assert f"table profile:{path.stem}" in caplog.text


def reference_conds(name, ref_shape, seed=0):
    """(positive, negative) of an edit run: ReferenceLatent on both sides (as ComfyUI's edit workflows
    zero out the positive for the negative), so cond and uncond still batch."""
    g = torch.Generator().manual_seed(100 + seed)
    ref = {"reference_latents": [torch.randn(ref_shape, generator=g)]}
    return conds(name, positive=ref, negative=ref)


def test_flux2_edit_with_reference_latents(comfy, user_dir, caplog):
    """Flux.2 edit (ReferenceLatent): the reference tokens are appended to the image stream (ComfyUI 0.33
    also writes img_slice over them for the single blocks). They are part of the cached hidden state, as
    Kontext's: skipped output = head input (image + reference tokens) + residual. An edit run and a
    text-to-image run of one model have different token layouts, so they never share a profile."""
    name = "flux2"
    case, shape = CASES[name], TINY[name].latent
    ref_shape = (1, shape[1], 4, 6)  # another size than the image: 24 reference tokens beside 64 image tokens
    model = tiny_model(name)
    patched = magcache(comfy, model)
    t2i, edit = conds(name), reference_conds(name, ref_shape)

    # 1. a text-to-image run measures its profile
    sample(patched, *t2i, seed=1, steps=STEPS, latent_shape=shape)
    [plain_profile] = profiles(user_dir)
    # 2. the first edit run does not read it: it measures its own (output of no MagCache, nothing skipped)
    ref = sample(model, *edit, seed=1, steps=STEPS, latent_shape=shape)
    with observe(case, model.model.diffusion_model) as calls:
        out = sample(patched, *edit, seed=1, steps=STEPS, latent_shape=shape)
    assert torch.equal(out, ref) and all(c["blocks"] > 0 for c in calls)
    assert {c["head"].shape[1] for c in calls} == {64 + 24}  # the reference tokens are in the image stream
    [edit_profile] = set(profiles(user_dir)) - {plain_profile}
    assert edit_profile.stem == plain_profile.stem + " edit"
    meta = json.loads(edit_profile.read_text())
    assert meta["self_calibration"]["edit"] is True and json.loads(plain_profile.read_text())["self_calibration"]["edit"] is False
    table, _ = load_profile(edit_profile)
    assert table.ratios != load_profile(plain_profile)[0].ratios

    # 3. the next edit run reads the edit profile: the rule's skips, skipped output = head input + residual
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagCache"), observe(case, model.model.diffusion_model) as calls:
        sample(patched, *edit, seed=2, steps=STEPS, latent_shape=shape)
    want = rule(table, STEPS, round_half_up=True)
    assert want[COND] and {b: skipped(calls, b) for b in (COND, UNCOND)} == want
    assert f"table profile:{edit_profile.stem}" in caplog.text
    assert skipped_are_head_input_plus_residual(calls) == len(want[COND])
    # 4. text-to-image again: its own profile, nothing new measured
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="MagCache"):
        sample(patched, *t2i, seed=3, steps=STEPS, latent_shape=shape)
    assert f"table profile:{plain_profile.stem}" in caplog.text and len(profiles(user_dir)) == 2


def omni_head_input(dm, put) -> list:
    """Z-Image Omni's head input: the refined caption tokens, the refined SigLIP tokens, then the refined
    reference and image tokens (the stream NextDiT's layers run on)."""
    parts = {}

    def keep(key):
        def hook(module, args, output):
            parts[key] = output.detach()
        return hook

    def on_image(module, args, output):
        put(torch.cat((parts.pop("caption"), parts.pop("siglip"), output.detach()), dim=1))

    return [dm.context_refiner[-1].register_forward_hook(keep("caption")),
            dm.siglip_refiner[-1].register_forward_hook(keep("siglip")),
            dm.noise_refiner[-1].register_forward_hook(on_image)]


def test_zimage_omni_through_the_whole_stream_cache(comfy, user_dir):
    """Z-Image Omni (ComfyUI's NextDiT with a SigLIP embedder, run with reference latents and SigLIP image
    features): the layers carry [caption, SigLIP, reference image, image] tokens; the whole stream is cached
    (the family's layout), so it works as plain Z-Image: first run measured (its own 'edit' profile), then
    the rule's skips, skipped output = head input + residual. Tiny sizes ours."""
    import dataclasses
    import inspect
    import types

    from comfy.ldm.lumina.model import NextDiT

    if "siglip_feat_dim" not in inspect.signature(NextDiT.__init__).parameters:
        pytest.skip("this ComfyUI's NextDiT has no Z-Image Omni (no siglip_feat_dim / SigLIP embedder)")
    name = "zimage"
    shape = TINY[name].latent
    case = dataclasses.replace(CASES[name], head_input=omni_head_input)
    model = tiny_model(name, siglip_feat_dim=32)
    assert model.model.diffusion_model.siglip_embedder is not None
    g = torch.Generator().manual_seed(7)
    side = {"reference_latents": [torch.randn((1, shape[1], 8, 12), generator=g)],
            "clip_vision_outputs": [types.SimpleNamespace(image_sizes=[(3, 64, 96)],
                                                          last_hidden_state=torch.randn(1, 24, 32, generator=g))]}
    pos, neg = conds(name, positive=side, negative=side)
    patched = magcache(comfy, model)

    ref = sample(model, pos, neg, seed=1, steps=STEPS, latent_shape=shape)
    with observe(case, model.model.diffusion_model) as calls:
        out = sample(patched, pos, neg, seed=1, steps=STEPS, latent_shape=shape)
    assert torch.equal(out, ref) and all(c["blocks"] > 0 for c in calls)
    # caption (8 tokens, padded to 32) + reference caption pad (32) + SigLIP (24, padded to 32) + reference
    # image (24, padded to 32) + image (64): far more than the image's own tokens
    assert {c["head"].shape[1] for c in calls} == {c["final"].shape[1] for c in calls} and calls[0]["head"].shape[1] > 64 + 32
    [path] = profiles(user_dir)
    assert path.stem.endswith(" edit")
    table, _ = load_profile(path)

    with observe(case, model.model.diffusion_model) as calls:
        sample(patched, pos, neg, seed=2, steps=STEPS, latent_shape=shape)
    want = rule(table, STEPS)
    assert want[COND] and {b: skipped(calls, b) for b in (COND, UNCOND)} == want
    assert skipped_are_head_input_plus_residual(calls) == len(want[COND])
