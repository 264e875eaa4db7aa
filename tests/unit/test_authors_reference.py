"""The engine's skip decisions against a transcription of the MagCache authors' own loops.

The functions below are written from the authors' code (Zehong-Ma/MagCache at df81cb1; for Chroma
and HunyuanVideo 1.5, which have no script there, Zehong-Ma/ComfyUI-MagCache at 47bdd2a), one per
script, keeping their counters, their order of operations and their comparisons. They are
independent of the pack: which script governs which table is stated here (SCRIPT), not read from
the pack's rule data. They differ from the authors' code only where it cannot run, each marked
DEVIATION:
- a call that would skip with no residual of this model (the first call of a run; in the authors'
  code a residual left from a previous generation, another expert's, or an AttributeError) is
  computed and takes the reset branch;
- the original pack's own defects (floor interpolation, Chroma's table indexed by call count,
  cnt % 2 branch bookkeeping) are replaced by the authors' nearest interpolation and per-branch
  accumulators.

For every preset, step counts 1..60, with and without CFG, the engine (RunState.decide driven as the
engine drives it, cond and uncond as separate calls, as the authors run them) must take exactly the
reference's decisions. Wan2.2 A14B is also run as ComfyUI runs it, two samplers (one per expert)
placed inside one schedule, against the authors' single loop over both experts."""
import numpy as np
import pytest
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, RunState, builtin_presets, get_preset, predict_skips
from comfyui_magcache.model_patches import ALL_SPECS, engine as hooks

AGGRESSIVE = (0.3, 0.1, 6)  # skips a lot: exercises K, the forced step and the error budget


# ---- the authors' code, transcribed ----------------------------------------------------------------

def nearest_interp(src_array, target_length):
    """MagCache4FLUX/magcache_flux.py:13-19 (same in MagCache4Wan2.1/2.2, MagCache4HunyuanVideo)."""
    src_array = np.asarray(src_array)
    src_length = len(src_array)
    if target_length == 1:
        return np.array([src_array[-1]])
    scale = (src_length - 1) / (target_length - 1)
    mapped_indices = np.round(np.arange(target_length) * scale).astype(int)
    return src_array[mapped_indices]


def qwen_nearest_interp(original, target_length):
    """MagCache4QwenImage/magcache_generate.py:14-21 (and the Edit script): linspace, and for one step
    the first entry, not the last."""
    original = np.asarray(original)
    original_length = len(original)
    if original_length == target_length:
        return original.copy()
    indices = np.round(np.linspace(0, original_length - 1, target_length)).astype(int)
    return original[indices]


def cfg_ratios(table, steps, interp=nearest_interp):
    """init_magcache (MagCache4Wan2.2/magcache_generate.py:356-362; Wan2.1, Qwen alike): cond and
    uncond halves interpolated apart and re-interleaved; one value per model call."""
    mag_ratios = np.array(table)
    if len(mag_ratios) != steps * 2:
        con = interp(mag_ratios[0::2], steps)
        ucon = interp(mag_ratios[1::2], steps)
        mag_ratios = np.concatenate([con.reshape(-1, 1), ucon.reshape(-1, 1)], axis=1).reshape(-1)
    return mag_ratios


def flux_script(table, num_steps, thresh, retention_ratio, K):
    """MagCache4FLUX/magcache_flux.py:326-340 and 431-436 (MagCache4FLUX_Kontext identical, 328-342):
    one call per step; returns the skipped steps."""
    mag_ratios = np.array(table)
    if len(mag_ratios) != num_steps:
        mag_ratios = nearest_interp(mag_ratios, num_steps)
    accumulated_ratio, accumulated_err, accumulated_steps = 1, 0, 0
    previous_residual = None
    skipped = []
    for cnt in range(num_steps):
        skip_forward = False
        if cnt >= int(retention_ratio * num_steps + 0.5):
            cur_scale = mag_ratios[cnt]
            accumulated_ratio = accumulated_ratio * cur_scale
            accumulated_steps += 1
            accumulated_err += np.abs(1 - accumulated_ratio)
            if accumulated_err <= thresh and accumulated_steps <= K \
                    and previous_residual is not None \
                    and np.round(cnt * ((28 - 1) / (num_steps - 1))).astype(int) != 11:
                # DEVIATION: `previous_residual is not None` added (first call). With one step their
                # expression divides by zero; that step has no residual, so it is never reached.
                skip_forward = True
            else:
                accumulated_ratio = 1.0
                accumulated_steps = 0
                accumulated_err = 0
        if skip_forward:
            skipped.append(cnt)
        else:
            previous_residual = "computed"
    return skipped


def hunyuan_script(table, num_steps, thresh, retention_ratio, K):
    """MagCache4HunyuanVideo/magcache_sample_video.py:88-104 and 148-150: one call per step."""
    mag_ratios = np.array(table)
    if len(mag_ratios) != num_steps:
        mag_ratios = nearest_interp(mag_ratios, num_steps)
    accumulated_ratio, accumulated_err, accumulated_steps = 1, 0, 0
    residual_cache = None
    skipped = []
    for cnt in range(num_steps):
        skip_forward = False
        if cnt >= int(retention_ratio * num_steps):
            cur_mag_ratio = mag_ratios[cnt]
            accumulated_ratio = accumulated_ratio * cur_mag_ratio
            cur_skip_err = np.abs(1 - accumulated_ratio)
            accumulated_err += cur_skip_err
            accumulated_steps += 1
            if accumulated_err <= thresh and accumulated_steps <= K and residual_cache is not None:  # DEVIATION
                skip_forward = True
            else:
                accumulated_ratio = 1.0
                accumulated_steps = 0
                accumulated_err = 0
        if skip_forward:
            skipped.append(cnt)
        else:
            residual_cache = "computed"
    return skipped


def framepack_script(table, num_steps, thresh, retention_ratio, K):
    """MagCache4FramePack/magcache_demo_gradio.py:63-74 and 252-300 (the F1 script alike): one call per step
    (distilled CFG, cfg 1), the counter restarting with each section (initialize_magcache per section); the
    skip also needs the step's own ratio within 0.06 of 1."""
    mag_ratios = np.array(table)
    if len(mag_ratios) != num_steps:
        mag_ratios = nearest_interp(mag_ratios, num_steps)
    residual_cache = None
    skipped = []
    for cnt in range(num_steps):
        if cnt == 0:  # initialize MagCache
            accumulated_ratio, accumulated_steps, accumulated_err = 1.0, 0, 0
        skip_forward = False
        if cnt >= int(retention_ratio * num_steps) and cnt >= 1:  # keep first retention_ratio steps
            cur_mag_ratio = mag_ratios[cnt]
            accumulated_ratio = accumulated_ratio * cur_mag_ratio
            cur_skip_err = np.abs(1 - accumulated_ratio)
            accumulated_err += cur_skip_err
            accumulated_steps += 1
            if (accumulated_err <= thresh and accumulated_steps <= K and np.abs(1 - cur_mag_ratio) <= 0.06
                    and residual_cache is not None):  # DEVIATION (the residual; cnt >= 1 has one anyway)
                skip_forward = True
            else:
                accumulated_ratio = 1.0
                accumulated_steps = 0
                accumulated_err = 0
        if skip_forward:
            skipped.append(cnt)
        else:
            residual_cache = "computed"
    return skipped


def wan_script(table, sample_steps, thresh, retention_ratio, K, split_steps=None, mode="t2v",
               interp=nearest_interp):
    """MagCache4Wan2.2/magcache_generate.py:290-337 with init_magcache 340-362. With split_steps None
    this is also MagCache4Wan2.1/magcache_generate.py:278-310 (and its VACE loop 523-555) and
    MagCache4QwenImage(Edit)/magcache_generate.py:205-246: model calls alternate cond, uncond; their
    counter cnt runs over both. For Wan2.2 A14B both experts are instances of one class and share
    this state (class attributes). Returns the skipped steps per branch {COND: [...], UNCOND: [...]}."""
    num_steps = sample_steps * 2
    split_step = split_steps * 2 if split_steps is not None else None
    mag_ratios = cfg_ratios(table, sample_steps, interp)
    accumulated_err, accumulated_steps, accumulated_ratio = [0.0, 0.0], [0, 0], [1.0, 1.0]
    residual_cache = [None, None]
    skipped = {COND: [], UNCOND: []}
    for cnt in range(num_steps):
        if split_step is not None and cnt == split_step:
            residual_cache = [None, None]  # DEVIATION: in ComfyUI each expert is its own model
        use_magcache = True
        skip_forward = False
        if split_step is not None:  # t2v or i2v
            if mode == "i2v":
                if cnt < int(split_step + (num_steps - split_step) * retention_ratio):
                    use_magcache = False
            else:
                if cnt < int(split_step * retention_ratio) or (
                        cnt <= ((num_steps - split_step) * retention_ratio + split_step) and cnt >= split_step):
                    use_magcache = False
        else:
            if cnt < int(num_steps * retention_ratio):  # ti2v
                use_magcache = False
        if use_magcache:
            cur_mag_ratio = mag_ratios[cnt]
            accumulated_ratio[cnt % 2] = accumulated_ratio[cnt % 2] * cur_mag_ratio
            accumulated_steps[cnt % 2] += 1
            cur_skip_err = np.abs(1 - accumulated_ratio[cnt % 2])
            accumulated_err[cnt % 2] += cur_skip_err
            if accumulated_err[cnt % 2] < thresh and accumulated_steps[cnt % 2] <= K \
                    and residual_cache[cnt % 2] is not None:  # DEVIATION
                skip_forward = True
            else:
                accumulated_err[cnt % 2] = 0
                accumulated_steps[cnt % 2] = 0
                accumulated_ratio[cnt % 2] = 1.0
        if skip_forward:
            skipped[cnt % 2].append(cnt // 2)
        else:
            residual_cache[cnt % 2] = "computed"
    return skipped


def pack_cfg_script(table, steps, thresh, retention_ratio, K, branch):
    """Zehong-Ma/ComfyUI-MagCache nodes.py: magcache_chroma_forward 996-1011 and
    magcache_hunyuanvideo15_forward 520-536, enabled by the wrapper at 1211 (step-based retention).
    DEVIATION: the pack's floor interpolation / raw call index and its cnt % 2 bookkeeping are
    replaced by nearest interpolation of the branch's half and per-branch accumulators."""
    mag_ratios = nearest_interp(np.array(table)[branch::2], steps)
    accumulated_ratio, accumulated_err, accumulated_steps = 1, 0, 0
    residual_cache = None
    skipped = []
    for current_step_index in range(steps):
        skip_forward = False
        if current_step_index >= int(steps * retention_ratio):
            cur_mag_ratio = mag_ratios[current_step_index]
            accumulated_ratio = accumulated_ratio * cur_mag_ratio
            accumulated_steps += 1
            cur_skip_err = np.abs(1 - accumulated_ratio)
            accumulated_err += cur_skip_err
            if accumulated_err < thresh and accumulated_steps <= K and residual_cache is not None:
                skip_forward = True
            else:
                accumulated_err = 0
                accumulated_steps = 0
                accumulated_ratio = 1.0
        if skip_forward:
            skipped.append(current_step_index)
        else:
            residual_cache = "computed"
    return skipped


def pack_flux_script(table, steps, thresh, retention_ratio, K):
    """Zehong-Ma/ComfyUI-MagCache nodes.py: magcache_flux_forward 81-97 (`cur_step not in [11]`,
    acc_err < thresh, no reset at that step) with the wrapper 1199-1216 (step-based retention; cur_step
    is the table index). The original pack's rule for its own 20-step Kontext table.
    DEVIATION: the wrapper's floor interpolation (int(t*(L-1)/(N-1))) is replaced by the authors'
    nearest interpolation, for the ratio read and the table index alike (equal at N = L); with one
    step the original divides by zero, here that step reads the last entry (and is never skipped)."""
    calibration_len = len(table)
    accumulated_err, accumulated_ratio, accumulated_steps = 0, 1, 0
    residual_cache = None
    skipped = []
    for current_step_index in range(steps):
        enable_magcache = current_step_index >= int(steps * retention_ratio)
        if steps == calibration_len:
            cur_step = current_step_index
        elif steps == 1:
            cur_step = calibration_len - 1
        else:
            cur_step = int(np.round(current_step_index * ((calibration_len - 1) / (steps - 1))))
        skip_forward = False
        if enable_magcache and cur_step not in [11]:
            cur_mag_ratio = table[cur_step]
            accumulated_ratio = accumulated_ratio * cur_mag_ratio
            accumulated_steps += 1
            cur_skip_err = np.abs(1 - accumulated_ratio)
            accumulated_err += cur_skip_err
            if accumulated_err < thresh and accumulated_steps <= K and residual_cache is not None:  # DEVIATION
                skip_forward = True
            else:
                accumulated_err = 0
                accumulated_steps = 0
                accumulated_ratio = 1.0
        if skip_forward:
            skipped.append(current_step_index)
        else:
            residual_cache = "computed"
    return skipped


def pack_table(name, steps):
    """The original pack's wrapper, nodes.py:1202-1205: model_type hunyuan_video1.5 with more than 20
    steps reads the 40-step table."""
    if name == "hunyuan_video1.5" and steps > 20:
        name = "hunyuan_video1.5_40steps"
    return PACK_TABLES[name]


# The original pack's tables (its nodes.py lines 20-25), as the data file holds them.
PACK_TABLES = {name: get_preset(name).ratios for name in ("flux_kontext", "chroma", "hunyuan_video1.5",
                                                          "hunyuan_video1.5_40steps")}


# Which of the authors' scripts governs each table (from the sources, not from the pack's data).
SCRIPT = {
    "flux": "flux", "flux_kontext": "pack_flux", "flux_kontext_28steps": "flux",
    "hunyuan_video": "hunyuan", "hunyuan_video_544p": "hunyuan",
    "chroma": "pack", "hunyuan_video1.5": "pack", "hunyuan_video1.5_40steps": "pack",
    "wan2.1_t2v_1.3B": "wan", "wan2.1_t2v_14B": "wan", "wan2.1_i2v_480p_14B": "wan", "wan2.1_i2v_720p_14B": "wan",
    "wan2.1_vace_1.3B": "wan", "wan2.1_vace_14B": "wan",
    "wan2.2_ti2v_5B": "wan", "wan2.2_ti2v_5B_i2v": "wan",
    "wan2.2_t2v_14B": "wan22_t2v", "wan2.2_i2v_14B": "wan22_i2v",
    "qwen_image": "qwen", "qwen_image_50steps": "qwen", "qwen_image_edit": "qwen",
    "framepack": "framepack", "framepack_f1": "framepack",
}


def reference(name, steps, settings, split=None):
    """The authors' skipped steps per branch for this table, {COND: [...], UNCOND: [...]}.
    Branches are independent in their code (separate calls, separate accumulators), so the
    no-CFG reference is the COND entry."""
    preset = get_preset(name)
    thresh, retention, K = settings
    script = SCRIPT[name]
    if script in ("flux", "hunyuan", "framepack"):
        # FramePack: the authors run cfg 1 only (one counter for every call); with real CFG (the wrapper allows
        # it) each branch keeps its own accumulators here as in the other scripts: our choice
        fn = {"flux": flux_script, "hunyuan": hunyuan_script, "framepack": framepack_script}[script]
        got = fn(preset.ratios, steps, thresh, retention, K)
        return {COND: got, UNCOND: got}
    if script == "pack_flux":
        got = pack_flux_script(preset.ratios, steps, thresh, retention, K)
        return {COND: got, UNCOND: got}
    if script == "pack":
        table = pack_table(name, steps)
        return {b: pack_cfg_script(table, steps, thresh, retention, K, b) for b in (COND, UNCOND)}
    if script == "qwen":
        return wan_script(preset.ratios, steps, thresh, retention, K, interp=qwen_nearest_interp)
    mode = {"wan22_t2v": "t2v", "wan22_i2v": "i2v"}.get(script, "t2v")
    return wan_script(preset.ratios, steps, thresh, retention, K, split_steps=split, mode=mode)


# ---- the engine, driven as engine.py drives it --------------------------------------------------

KEYS = {COND: (COND, "c-uuid"), UNCOND: (UNCOND, "u-uuid")}


def schedule(steps, table):
    """ComfyUI's 'simple' scheduler on a model sigma table (comfy.samplers.simple_scheduler)."""
    ss = len(table) / steps
    return [float(table[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


MODEL_SIGMAS = [float(v) for v in np.linspace(0.001, 1.0, 1000)]


def placed(steps, start=0, stop=None):
    """Where RunState places a run over steps start..stop-1 of a `steps`-step simple schedule, and
    whether that is right. A short run can have exactly the sigmas of a piece of a schedule of
    another length (the simple scheduler rounds table positions down): then it cannot be told apart
    and is not counted against the engine."""
    sigmas = schedule(steps, MODEL_SIGMAS)[start:(steps if stop is None else stop) + 1]
    sched = RunState(MagCacheConfig(), model_sigmas=MODEL_SIGMAS).schedule(sigmas)
    if (sched.offset, sched.total) == (start, steps):
        return True
    other = schedule(sched.total, MODEL_SIGMAS)[sched.offset:sched.offset + len(sigmas)]
    assert other[:-1] == sigmas[:-1] and (other[-1] == 0) == (sigmas[-1] == 0), (steps, start, stop, sched)
    return False


def engine(name, steps, settings, branches, batched=False, start=0, stop=None):
    """Skipped steps per branch of one sampling run over steps start..stop-1 of a `steps`-step
    schedule (one KSamplerAdvanced); RunState places it by its sigmas, as in a real run."""
    thresh, retention, K = settings
    # FramePack's tables belong to its own node, not to a family spec: any spec then (a built-in table
    # carries its rule; the spec's default rule is not read)
    spec = next((s for s in ALL_SPECS if name in s.presets), ALL_SPECS[0])
    config = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
    run = hooks.Run(hooks.Settings(spec, config, preset=name), model_sigmas=MODEL_SIGMAS)  # the table named on the node
    state = run.state
    full = schedule(steps, MODEL_SIGMAS)
    sigmas = full[start:(steps if stop is None else stop) + 1]
    sched = state.schedule(sigmas)
    tables = run.tables(name, sched.total)
    has_residual = {b: False for b in branches}
    skipped = {b: [] for b in branches}
    calls = [tuple(branches)] if batched else [(UNCOND,), (COND,)] if UNCOND in branches else [(COND,)]
    for i in range(sched.steps):
        step = sched.global_step(sigmas[i])
        for call in calls:
            keys = [KEYS[b] for b in call]
            if state.decide(step, sched.total, tables, keys, [has_residual[b] for b in call]):
                for b in call:
                    skipped[b].append(step)
            else:
                for b in call:
                    has_residual[b] = True  # the engine stores the new residual
    return skipped


def settings_for(name):
    return [get_preset(name).recommended, AGGRESSIVE]


@pytest.mark.parametrize("name", sorted(builtin_presets()))
def test_every_preset_follows_the_authors_loop(name):
    assert name in SCRIPT, "a new table needs its script named in SCRIPT"
    for settings in settings_for(name):
        for steps in range(1, 61):
            ref = reference(name, steps, settings)
            cfg = engine(name, steps, settings, (COND, UNCOND))
            assert cfg == ref, (name, settings, steps, "CFG")
            no_cfg = engine(name, steps, settings, (COND,))
            assert no_cfg == {COND: ref[COND]}, (name, settings, steps, "no CFG")
            thresh, retention, K = settings
            rule = predict_skips(MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K),
                                 get_preset(name).chosen(steps).tables(steps), steps, branches=(COND, UNCOND), batched=False)
            assert rule == ref, (name, settings, steps, "predict_skips")


@pytest.mark.parametrize("name", sorted(builtin_presets()))
def test_batched_cfg_matches_where_the_branches_agree(name):
    """Batched cond and uncond skip together or not at all (a ComfyUI layout the authors do not
    have); where their branches decide alike, so does the batched engine."""
    agreed = 0
    for settings in settings_for(name):
        for steps in range(1, 61):
            ref = reference(name, steps, settings)
            batched = engine(name, steps, settings, (COND, UNCOND), batched=True)
            thresh, retention, K = settings
            config = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
            assert batched == predict_skips(config, get_preset(name).chosen(steps).tables(steps), steps, branches=(COND, UNCOND))
            if ref[COND] == ref[UNCOND]:
                agreed += 1
                assert batched == ref, (name, settings, steps)
    assert agreed > 0


@pytest.mark.parametrize("name", ["wan2.2_t2v_14B", "wan2.2_i2v_14B"])
def test_wan22_experts_as_two_samplers_follow_the_authors_shared_loop(name):
    compared = ambiguous = 0
    for steps in range(3, 61):
        # a low-noise run of one step ([sigma, 0]) has no spacing to be placed by, so it starts at
        # least two steps before the end
        for split in sorted({1, steps // 3, steps // 2, (26 * steps) // 40, steps - 2} - {0}):
            if not (placed(steps, 0, split) and placed(steps, split)):
                ambiguous += 1
                continue
            compared += 1
            for settings in settings_for(name) + [(0.06, 0.4, 2), (0.06, 0.1, 2)]:
                ref = reference(name, steps, settings, split=split)
                for branches in ((COND, UNCOND), (COND,)):
                    high = engine(name, steps, settings, branches, start=0, stop=split)
                    low = engine(name, steps, settings, branches, start=split)
                    for b in branches:
                        assert high[b] + low[b] == ref[b], (name, settings, steps, split, b)
    assert placed(40, 0, 20) and placed(40, 20) and placed(40, 0, 26) and placed(40, 26)
    assert compared > 10 * ambiguous, (compared, ambiguous)


def test_the_reference_is_not_vacuous():
    """The settings skip steps, the forced Flux step and the comparison matter somewhere."""
    assert reference("flux", 28, (0.24, 0.1, 5))[COND] == [3, 4, 6, 7, 8, 10, 12, 13, 14, 15, 16, 18, 19, 20, 21,
                                                           22, 24, 25, 27]
    assert all(reference(n, get_preset(n).steps, get_preset(n).recommended)[COND] for n in builtin_presets())
