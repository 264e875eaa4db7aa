import pytest
from comfyui_magcache.magcache import (COND, UNCOND, MagCacheConfig, Preset, PresetError, builtin_presets, get_preset,
                                       interpolate, predict_skips)


def reference_nearest(values, n):
    """Independent restatement of the official nearest interpolation (round half to even)."""
    if n == 1:
        return [values[-1]]
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 20, 28, 50, 1000])
def test_interpolation_lengths(n):
    values = [1.0 + i / 100 for i in range(28)]
    out = interpolate(values, n)
    assert len(out) == n
    assert list(out) == reference_nearest(values, n)
    if n >= 2:
        assert out[0] == values[0] and out[-1] == values[-1]


def test_interpolation_identity_and_single_step():
    values = get_preset("flux").ratios
    assert interpolate(values, 28) == values
    assert interpolate(values, 1) == (values[-1],)
    assert interpolate(values, 2) == (values[0], values[-1])


def test_interpolation_rejects_bad_step_counts():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(PresetError, match="step count"):
            interpolate([1.0, 1.1], bad)


def test_branch_halves_are_kept_apart():
    # cond values are 1.x, uncond values 2.x: an interpolation mixing halves would show it
    steps = 10
    ratios = tuple(v for i in range(steps) for v in (1.0 + i / 100, 2.0 + i / 100))
    p = Preset("synthetic", steps, True, ratios)
    for n in (1, 2, 7, 10, 20, 1000):
        t = p.tables(n)
        assert all(1.0 <= v < 2.0 for v in t[COND]), n
        assert all(v >= 2.0 for v in t[UNCOND]), n
        assert list(t[COND]) == reference_nearest(ratios[0::2], n)
        assert list(t[UNCOND]) == reference_nearest(ratios[1::2], n)


def test_uninterleaved_table_serves_both_branches():
    t = get_preset("flux").tables(20)
    assert t[COND] == t[UNCOND] == interpolate(get_preset("flux").ratios, 20)


def test_builtin_tables_load_with_their_settings():
    presets = builtin_presets()
    assert {"flux", "flux_kontext", "chroma", "wan2.1_t2v_1.3B", "hunyuan_video"} <= set(presets)
    assert len(presets) == 23
    assert presets["flux"].recommended == (0.24, 0.1, 5)
    assert presets["flux_kontext"].recommended == (0.05, 0.2, 4)
    assert presets["chroma"].cfg_interleaved and len(presets["chroma"].ratios) == 52


# First and last entries of the tables added from the authors' scripts (Zehong-Ma/MagCache@df81cb1),
# as printed there: a guard against a shifted or truncated copy.
NEW_TABLES = {
    "flux_kontext_28steps": (28, False, [1.0, 1.19531, 1.07812], [0.9375, 0.93359]),
    "hunyuan_video_544p": (50, False, [1.0, 1.06971, 1.29073], [0.86139, 0.76592]),
    "qwen_image_50steps": (50, True, [1.0, 1.0, 1.64062, 1.64062, 1.45312], [0.55078, 0.55078]),
    "qwen_image_edit": (50, True, [1.0, 1.0, 1.41406, 1.41406, 1.09375], [0.50781, 0.50781]),
    "wan2.2_ti2v_5B_i2v": (50, True, [1.0, 1.0, 0.99512, 0.99559, 0.99559], [0.96655, 0.96616]),
    "framepack": (25, False, [1.0, 1.26562, 1.23438], [0.94141, 0.94141, 0.78906]),
    "framepack_f1": (25, False, [1.0, 1.25781, 1.08594], [0.9375, 0.96484, 0.78516]),
}


@pytest.mark.parametrize("name", sorted(NEW_TABLES))
def test_tables_added_from_the_authors_scripts(name):
    steps, cfg, head, tail = NEW_TABLES[name]
    p = get_preset(name)
    assert (p.steps, p.cfg_interleaved) == (steps, cfg)
    assert list(p.ratios[:len(head)]) == head and list(p.ratios[-len(tail):]) == tail
    assert "Zehong-Ma/MagCache" in p.source


def test_every_table_and_setting_names_its_source():
    for name, p in builtin_presets().items():
        assert "Zehong-Ma/" in p.source, name
        assert p.rule is not None and "Zehong-Ma/" in p.rule.source, name
        assert "Zehong-Ma/" in p.recommended_source, name  # published, none of ours
        assert "ours" not in p.recommended_source, name


def test_forced_compute_step_only_on_the_authors_flux_tables():
    forced = {name for name, p in builtin_presets().items() if p.rule.forced_step is not None}
    assert forced == {"flux", "flux_kontext_28steps"}
    assert all(builtin_presets()[n].rule.forced_step == (11, 28) for n in forced)


def test_the_original_packs_kontext_table_keeps_its_own_step_11():
    """The 20-step Kontext table exists only in the original pack, so its rule is the original's
    (nodes.py:86-97, 1211): `cur_step not in [11]` on the table index, acc_err < thresh, int(N*R)."""
    kept = {name for name, p in builtin_presets().items() if p.rule.kept_step is not None}
    assert kept == {"flux_kontext"}
    rule = get_preset("flux_kontext").rule
    assert (rule.kept_step, rule.compare, rule.retention) == ((11, 20), "<", "steps")
    assert [t for t in range(20) if rule.kept(t, 20)] == [11]
    assert [t for t in range(40) if rule.kept(t, 40)] == [22, 23]  # both read entry 11 (nearest)


def test_hunyuan_video15_by_name_switches_to_its_40_step_table_above_20_steps():
    """The original pack's wrapper (nodes.py:1202-1205) reads hunyuan_video1.5_40steps when
    hunyuan_video1.5 runs more than 20 steps; the switch is declared in the data file."""
    p = get_preset("hunyuan_video1.5")
    assert p.switch == (20, "hunyuan_video1.5_40steps") and "nodes.py:1202" in p.switch_source
    assert p.chosen(20) is p and p.chosen(8) is p
    assert p.chosen(21).name == p.chosen(40).name == p.chosen(50).name == "hunyuan_video1.5_40steps"
    assert [n for n, q in builtin_presets().items() if q.switch] == ["hunyuan_video1.5"]
    assert all(q.chosen(60) is q for n, q in builtin_presets().items() if n != "hunyuan_video1.5")
    # Its published 40-step workflow (0.06 / 0.2 / 2, end_step -2): 19 skipped steps per branch, as
    # in the original; the 20-step table interpolated to 40 steps would skip 20.
    config = MagCacheConfig(thresh=0.06, retention_ratio=0.2, K=2, end_step=-2)
    skips = predict_skips(config, p.chosen(40).tables(40), 40, branches=(COND, UNCOND), batched=False)
    assert [len(skips[b]) for b in (COND, UNCOND)] == [19, 19]
    assert len(predict_skips(config, p.tables(40), 40, batched=False)[COND]) == 20


def test_published_settings_where_the_issue_names_them():
    assert get_preset("wan2.2_ti2v_5B").recommended == (0.06, 0.2, 2)
    assert get_preset("wan2.2_t2v_14B").recommended == (0.06, 0.4, 2)
    assert get_preset("wan2.2_i2v_14B").recommended == (0.06, 0.1, 2)
    assert get_preset("hunyuan_video1.5_40steps").recommended == (0.06, 0.2, 2)
    assert get_preset("hunyuan_video1.5_40steps").recommended_end_step == -2
    assert get_preset("hunyuan_video1.5").recommended == (0.03, 0.25, 2)
    for name in ("qwen_image", "qwen_image_50steps", "qwen_image_edit"):
        assert get_preset(name).recommended == (0.06, 0.2, 2), name


@pytest.mark.parametrize("ratios, steps, inter, fragment", [
    ((), 0, False, "is empty"),
    ((1.0, float("nan")), 2, False, "entry 1 must be a finite positive number"),
    ((1.0, 0.0), 2, False, "entry 1 must be a finite positive number"),
    ((1.0, -1.0), 2, False, "entry 1 must be a finite positive number"),
    ((1.0, 1.0, 1.0), 2, False, "3 values for 2 steps, expected 2"),
    ((1.0, 1.0, 1.0), 2, True, "3 values for 2 steps, expected 4 (2 per step (cond, uncond))"),
])
def test_malformed_tables_are_rejected(ratios, steps, inter, fragment):
    with pytest.raises(PresetError) as e:
        Preset("bad", steps, inter, ratios)
    assert fragment in str(e.value)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(PresetError, match="unknown ratio table 'nope'; known: .*flux"):
        get_preset("nope")


def test_every_builtin_table_has_recommended_settings():
    from comfyui_magcache.magcache import MagCacheConfig

    for name, preset in builtin_presets().items():
        thresh, retention, K = preset.recommended
        assert 0 < thresh <= 0.3 and 0.1 <= retention <= 0.4 and 0 <= K <= 6, name
        MagCacheConfig(thresh, retention, K, end_step=preset.recommended_end_step)  # accepted by the node
