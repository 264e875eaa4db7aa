"""Family registry and model_type resolution, with stand-in model classes (no ComfyUI needed)."""
import logging

import pytest
from comfyui_magcache.model_patches import (
    ALL_SPECS,
    MODEL_TYPES,
    BlockGroup,
    FamilySpec,
    UnsupportedModel,
    available_specs,
    resolve,
    spec_for_model,
)


class FakeFlux:
    double_blocks = [object()] * 2
    single_blocks = [object()] * 3


class FakeFluxSubclass(FakeFlux):
    pass


class Other:
    pass


FAKE = FamilySpec(name="Fake", model_classes=(f"{__name__}.FakeFlux",),
                  groups=(BlockGroup("double_block", "double_blocks", ("img", "txt")),
                          BlockGroup("single_block", "single_blocks", ("img",), "last")),
                  presets=("flux", "flux_kontext"))
MISSING = FamilySpec(name="Gone", model_classes=("comfy.ldm.not_there.model.Gone",), groups=(), presets=("chroma",))


def test_family_whose_class_is_missing_is_disabled_with_a_log_line(caplog):
    with caplog.at_level(logging.WARNING, logger="MagCache"):
        assert available_specs((FAKE, MISSING)) == (FAKE,)
    assert "MagCache: Gone support disabled: comfy.ldm.not_there.model.Gone is not in this ComfyUI" in caplog.text


def test_detection_by_exact_class():
    assert spec_for_model(FakeFlux(), (FAKE,)) is FAKE
    assert spec_for_model(FakeFluxSubclass(), (FAKE,)) is None  # a subclass may run other code between blocks
    assert spec_for_model(Other(), (FAKE,)) is None


def test_auto_and_explicit_presets_resolve():
    assert resolve("auto", FakeFlux(), (FAKE,)) == (FAKE, None)
    assert resolve("flux_kontext", FakeFlux(), (FAKE,)) == (FAKE, "flux_kontext")


def test_wrong_family_preset_is_an_error_naming_the_valid_ones():
    with pytest.raises(UnsupportedModel, match=r"model_type 'wan2.1_t2v_14B' does not match the loaded model "
                                               r"\(.*FakeFlux\); for this model use 'auto' or one of: flux, flux_kontext"):
        resolve("wan2.1_t2v_14B", FakeFlux(), (FAKE,))
    with pytest.raises(UnsupportedModel, match="unknown model_type 'sdxl'"):
        resolve("sdxl", FakeFlux(), (FAKE,))


class UNetModel:
    pass


def unsupported(model) -> str:
    with pytest.raises(UnsupportedModel) as e:
        resolve("auto", model, (FAKE,))
    msg = str(e.value)
    first = msg.splitlines()[0]
    assert first.startswith("MagCache cannot accelerate this model: ") and first.endswith("Bypass the MagCache node for it.")
    assert len(first) <= 160 and len(msg) <= 400, msg
    assert msg.splitlines()[1:] == ["Supported families: Fake.", f"Loaded model class: {__name__}.{type(model).__qualname__}"]
    return first


def test_unsupported_model_says_why_in_one_short_line_then_the_families_and_its_class():
    assert "this is a UNet; MagCache works on diffusion transformers" in unsupported(UNetModel())
    assert "it is FakeFluxSubclass, a variant of Fake with its own code between blocks" in unsupported(FakeFluxSubclass())
    assert "there is no MagCache support for Other models" in unsupported(Other())


def test_a_huge_model_type_is_not_echoed_whole():
    with pytest.raises(UnsupportedModel) as e:
        resolve("x" * 5_000_000, FakeFlux(), (FAKE,))
    assert len(str(e.value)) < 300 and "unknown model_type 'xxxx" in str(e.value)


def test_block_list_follows_the_spec():
    keys = [(g.kind, i) for g, i in FAKE.blocks(FakeFlux())]
    assert keys == [("double_block", 0), ("double_block", 1), ("single_block", 0), ("single_block", 1),
                    ("single_block", 2)]


def test_every_preset_of_every_family_has_a_table_and_original_choices_stay():
    from comfyui_magcache.magcache import builtin_presets

    from comfyui_magcache.model_patches.framepack import FRAMEPACK

    named = [p for spec in ALL_SPECS + (FRAMEPACK,) for p in spec.presets]
    assert sorted(named) == sorted(builtin_presets())  # each table belongs to one family; no preset lacks one
    # FramePack's tables are its own node's (the wrapper's model never reaches the MagCache node)
    assert set(builtin_presets()) - set(FRAMEPACK.presets) == set(MODEL_TYPES) - {"auto", "auto_calibrate"}
    assert len(MODEL_TYPES) == len(set(MODEL_TYPES)) and MODEL_TYPES[-1] == "auto_calibrate"  # appended
    # the original pack's model_type combo, in its order (saved workflows store these strings); then
    # ours, new ones appended after the earlier ones
    original = ("flux", "flux_kontext", "chroma", "qwen_image", "hunyuan_video", "hunyuan_video1.5",
                "wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B",
                "wan2.1_vace_1.3B", "wan2.1_vace_14B")
    assert MODEL_TYPES[:len(original) + 1] == ("auto",) + original


def test_blocks_a_model_never_runs_are_left_out():
    from comfyui_magcache.model_patches import chroma

    class FakeChroma:
        double_blocks = [object()] * 3
        single_blocks = [object()] * 2
        skip_mmdit = [0]
        skip_dit = [1]

    assert [(g.kind, i) for g, i in chroma.SPEC.blocks(FakeChroma())] == [
        ("double_block", 1), ("double_block", 2), ("single_block", 0)]


@pytest.mark.parametrize("attrs, shape, want", [
    (dict(model_type="t2v", dim=1536, out_dim=16), (1, 16, 21, 60, 104), "wan2.1_t2v_1.3B"),
    (dict(model_type="t2v", dim=5120, out_dim=16), (1, 16, 21, 60, 104), "wan2.1_t2v_14B"),
    (dict(model_type="t2v", dim=3072, out_dim=48), (1, 48, 21, 44, 80), "wan2.2_ti2v_5B"),
    (dict(model_type="t2v", dim=3072, out_dim=48), (1, 48, 21, 44, 80, "per-frame t"), "wan2.2_ti2v_5B_i2v"),
    (dict(model_type="i2v", dim=5120, out_dim=16), (1, 16, 21, 60, 104), "wan2.1_i2v_480p_14B"),
    (dict(model_type="i2v", dim=5120, out_dim=16), (1, 16, 21, 90, 160), "wan2.1_i2v_720p_14B"),
])
def test_wan_auto_variants(attrs, shape, want):
    import types

    import torch
    from comfyui_magcache.model_patches import wan

    model = types.SimpleNamespace(**attrs)
    # Wan2.2 TI2V-5B image-to-video: ComfyUI masks the first latent frame, so the model gets one
    # timestep per frame (WAN22.process_timestep)
    t = torch.ones(1, shape[2]) if shape[-1] == "per-frame t" else torch.ones(1)
    args = {"x": torch.zeros(shape[:5]), "timestep": t}
    assert wan.SPEC.auto_preset(model, args.get) == want


def test_vace_and_hunyuan_auto_variants():
    import types

    import torch
    from comfyui_magcache.model_patches import hunyuan_video, wan_vace

    assert wan_vace.SPEC.auto_preset(types.SimpleNamespace(dim=5120), None) == "wan2.1_vace_14B"
    assert wan_vace.SPEC.auto_preset(types.SimpleNamespace(dim=1536), None) == "wan2.1_vace_1.3B"
    v15 = types.SimpleNamespace(cond_type_embedding=object())
    for steps, want in ((20, "hunyuan_video1.5"), (50, "hunyuan_video1.5_40steps")):
        to = {"sample_sigmas": torch.linspace(1, 0, steps + 1)}
        assert hunyuan_video.SPEC.auto_preset(v15, {"transformer_options": to}.get) == want
    assert hunyuan_video.SPEC.auto_preset(types.SimpleNamespace(cond_type_embedding=None), {}.get) == "hunyuan_video"
    for steps, want in ((30, "hunyuan_video1.5"), (31, "hunyuan_video1.5_40steps")):  # nearer table; a tie: 20
        to = {"sample_sigmas": torch.linspace(1, 0, steps + 1)}
        assert hunyuan_video.SPEC.auto_preset(v15, {"transformer_options": to}.get) == want


def sigmas(steps):
    import torch

    return {"transformer_options": {"sample_sigmas": torch.linspace(1, 0, steps + 1)}}


@pytest.mark.parametrize("steps, want", [(0, "flux_kontext"), (20, "flux_kontext"), (24, "flux_kontext"),
                                         (25, "flux_kontext_28steps"), (28, "flux_kontext_28steps"),
                                         (50, "flux_kontext_28steps")])
def test_flux_auto_takes_the_kontext_table_nearest_in_steps(steps, want):
    import torch
    from comfyui_magcache.model_patches import flux

    ref = {"ref_latents": [torch.zeros(1, 16, 8, 8)]}
    assert flux.SPEC.auto_preset(None, dict(sigmas(steps) if steps else {}, **ref).get) == want
    assert flux.SPEC.auto_preset(None, dict(sigmas(steps), ref_latents=None).get) == "flux"


@pytest.mark.parametrize("steps, edit, want", [(20, False, "qwen_image"), (40, False, "qwen_image"),
                                               (45, False, "qwen_image"), (46, False, "qwen_image_50steps"),
                                               (50, False, "qwen_image_50steps"), (20, True, "qwen_image_edit"),
                                               (50, True, "qwen_image_edit")])
def test_qwen_auto_takes_the_edit_table_with_reference_latents_else_nearest_steps(steps, edit, want):
    import torch
    from comfyui_magcache.model_patches import qwen_image

    args = dict(sigmas(steps), ref_latents=[torch.zeros(1, 16, 8, 8)] if edit else [])
    assert qwen_image.SPEC.auto_preset(None, args.get) == want


@pytest.mark.parametrize("hw, want", [((90, 160), "hunyuan_video"), ((68, 120), "hunyuan_video_544p"),
                                      ((60, 104), "hunyuan_video_544p"), ((80, 144), "hunyuan_video")])
def test_hunyuan_auto_takes_the_table_nearest_in_size(hw, want):
    import types

    import torch
    from comfyui_magcache.model_patches import hunyuan_video

    model = types.SimpleNamespace(cond_type_embedding=None)
    assert hunyuan_video.SPEC.auto_preset(model, {"x": torch.zeros(1, 16, 33, *hw)}.get) == want


def test_one_class_two_families_each_spec_takes_only_its_own_instances():
    """Flux.1 and Flux.2 share comfy.ldm.flux.model.Flux: Flux.2 (params.global_modulation) is never
    matched to Flux.1's spec, so 'auto' never reads a Flux.1 table on it."""
    import types

    from comfyui_magcache.model_patches import flux, flux2, spec_for_model

    class Flux:  # stands in for comfy.ldm.flux.model.Flux (matched by qualified name)
        def __init__(self, global_modulation):
            self.params = types.SimpleNamespace(global_modulation=global_modulation)

    Flux.__module__, Flux.__qualname__ = "comfy.ldm.flux.model", "Flux"
    specs = (flux.SPEC, flux2.SPEC)
    assert spec_for_model(Flux(False), specs) is flux.SPEC
    assert spec_for_model(Flux(True), specs) is flux2.SPEC
    assert spec_for_model(Flux(True), (flux.SPEC,)) is None  # Flux.1's spec alone refuses it
    assert flux2.SPEC.presets == () and flux2.SPEC.auto_preset(Flux(True), lambda n: None) is None
    with pytest.raises(UnsupportedModel, match=r"use 'auto' \(Flux.2 has no published table"):
        resolve("flux", Flux(True), specs)
    assert resolve("auto_calibrate", Flux(False), specs) == (flux.SPEC, None)


def test_self_calibration_profile_names_are_valid_and_distinct():
    from comfyui_magcache.magcache.profiles import check_name
    from comfyui_magcache.model_patches import lumina2
    from comfyui_magcache.model_patches.profile_keys import Curve, profile_name

    simple = Curve("simple", "1a2b3c4d", "whole")
    a = profile_name(lumina2.SPEC, "0123456789ab", "euler", simple, True)
    assert a == "auto Lumina-2-Z-Image 0123456789ab euler simple 1a2b3c4d cfg" and check_name(a) == a
    names = {profile_name(lumina2.SPEC, "0123456789ab", s, c, g, e)
             for s in ("euler", "heun") for c in (simple, Curve("karras", "00ff00ff"), Curve("custom", "00ff00fe"))
             for g in (True, False) for e in (True, False)}
    assert len(names) == 24  # the curve's hash tells apart what the scheduler's name cannot
    edit = profile_name(lumina2.SPEC, "0123456789ab", "euler", simple, True, True)
    assert edit == a + " edit" and check_name(edit) == edit  # an edit run (reference latents): its own profile
    long = profile_name(lumina2.SPEC, "0123456789ab", "x" * 70, simple, True)
    assert len(long) <= 80 and check_name(long) == long
    long_edit = profile_name(lumina2.SPEC, "0123456789ab", "x" * 70, simple, True, True)
    assert len(long_edit) <= 80 and check_name(long_edit) == long_edit and long_edit != long


def test_an_edit_run_is_told_apart_by_its_reference_latents():
    """Self-calibration keys an edit run (conditioning with ComfyUI's reference_latents) apart from a
    text-to-image run of the same model: its reference tokens are in the stream it measures."""
    import types

    from comfyui_magcache.model_patches.selfcal import is_edit

    def guider(*entries):
        return types.SimpleNamespace(conds={"positive": list(entries), "negative": [{"cross_attn": None}]})

    assert not is_edit(guider({"cross_attn": None, "pooled_output": None}))
    assert is_edit(guider({"cross_attn": None, "reference_latents": ["latent"]}))
    assert not is_edit(guider({"reference_latents": None}))
    assert not is_edit(types.SimpleNamespace())  # a guider without conds: text-to-image
