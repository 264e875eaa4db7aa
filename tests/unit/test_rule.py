import pytest
from comfyui_magcache.magcache import (
    COND,
    UNCOND,
    Accumulator,
    MagCacheConfig,
    RuleError,
    TableRule,
    get_preset,
    predict_skips,
    replay,
)

# One branch, 8 steps; worked by hand in the comments.
RATIOS = [1.0, 1.0, 1.02, 0.99, 0.97, 1.10, 1.0, 0.95]


def skips(config, ratios=RATIOS, **kw):
    return predict_skips(config, {COND: ratios}, len(ratios), **kw)[COND]


def test_hand_computed_schedule():
    # step 0: no residual yet -> compute
    # step 1: ratio 1.0, err 0, 1 step -> skip
    # step 2: ratio 1.02, err 0.02, 2 steps -> skip
    # step 3: ratio 1.0098, err 0.0298, 3 steps > K -> compute (reset)
    # step 4: ratio 0.97, err 0.03 -> skip
    # step 5: ratio 1.067, err 0.097 -> compute (reset)
    # step 6: ratio 1.0 -> skip
    # step 7: ratio 0.95, err 0.050000000000000044 > 0.05 -> compute
    assert skips(MagCacheConfig(thresh=0.05, K=2, retention_ratio=0.1)) == [1, 2, 4, 6]


def test_hand_computed_schedule_with_retention():
    # int(0.3 * 8) = 2: steps 0 and 1 computed; then
    # step 2: err 0.02 -> skip; step 3: err 0.0298, 2 steps -> skip;
    # step 4: ratio 0.979506, err 0.050294 -> compute; step 5: err 0.1 -> compute;
    # step 6: skip; step 7: err 0.05 -> compute
    assert skips(MagCacheConfig(thresh=0.05, K=2, retention_ratio=0.3)) == [2, 3, 6]


def test_K_zero_and_thresh_zero_never_skip():
    assert skips(MagCacheConfig(thresh=0.3, K=0, retention_ratio=0.1)) == []
    assert skips(MagCacheConfig(thresh=0.0, K=6, retention_ratio=0.1)) == []


def test_start_and_end_step_window():
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1, start_step=3, end_step=-3)
    assert skips(cfg, [1.0] * 10) == [3, 4, 5, 6, 7]


def test_no_forced_step_without_one_in_the_table_rule():
    # flat ratios, K=6: steps 0-1 retained, six skips, one compute, six skips, ...
    got = skips(MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1), [1.0] * 20)
    assert got == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19]


def test_forced_step_maps_step_11_of_28_to_any_step_count():
    rule = TableRule(forced_step=(11, 28))
    assert [t for t in range(28) if rule.forced(t, 28)] == [11]
    assert [t for t in range(20) if rule.forced(t, 20)] == [8]  # round(8 * 27/19) = round(11.37)
    assert [t for t in range(56) if rule.forced(t, 56)] == [22, 23]  # 10.8 and 11.29 both round to 11
    assert [t for t in range(55) if rule.forced(t, 55)] == [22]  # 11.0; 23 -> 11.5 rounds half to even: 12
    assert not rule.forced(0, 1)  # one step: their formula divides by zero; no forced step
    assert not TableRule().forced(11, 28)


def test_forced_step_takes_the_reset_branch():
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1)
    rule = TableRule(retention="steps_half_up", forced_step=(11, 28))
    got = skips(cfg, [1.0] * 28, rule=rule)
    # 0-2 retained; 3-8 skipped (K 6), 9 computed; 10 skipped; 11 forced: computed and reset;
    # so 12-17 are six skips again
    assert got == [3, 4, 5, 6, 7, 8, 10, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24, 26, 27]


def test_kept_step_is_computed_and_leaves_the_accumulators_as_they_are():
    """The original pack's `cur_step not in [11]`: unlike the forced step, no reset there."""
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1)
    kept = TableRule(kept_step=(11, 20))
    got = skips(cfg, [1.0] * 20, rule=kept)
    # 0-1 retained; 2-7 skipped (K 6), 8 computed; 9, 10 skipped; 11 kept (acc_steps stays 2);
    # 12-15 skipped (acc_steps 3..6), 16 computed; 17-19 skipped
    assert got == [2, 3, 4, 5, 6, 7, 9, 10, 12, 13, 14, 15, 17, 18, 19]
    forced = skips(cfg, [1.0] * 20, rule=TableRule(forced_step=(11, 20)))
    assert forced == [2, 3, 4, 5, 6, 7, 9, 10, 12, 13, 14, 15, 16, 17, 19]  # reset at 11: six skips after it
    assert not kept.kept(0, 1) and [t for t in range(10) if kept.kept(t, 10)] == [5]  # round(5 * 19/9) = 11


def test_flux_at_28_steps_skips_what_the_authors_script_skips():
    # MagCache4FLUX/magcache_flux.py at its own settings: 19 steps, step 11 computed
    p = get_preset("flux")
    got = predict_skips(MagCacheConfig(*p.recommended), p.tables(28), 28)[COND]
    assert got == [3, 4, 6, 7, 8, 10, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 24, 25, 27]


def test_inclusive_and_strict_comparison():
    # ratio 1.25 gives an error of exactly 0.25: skipped with <=, computed with <
    cfg = MagCacheConfig(thresh=0.25, K=2, retention_ratio=0.1)
    assert skips(cfg, [1.0, 1.0, 1.25], rule=TableRule(compare="<=")) == [1, 2]
    assert skips(cfg, [1.0, 1.0, 1.25], rule=TableRule(compare="<")) == [1]
    assert Accumulator().advance(1.25, 0.25, 2) and not Accumulator().advance(1.25, 0.25, 2, inclusive=False)
    assert not Accumulator().advance(1.0, 0.0, 2)  # thresh 0 never skips, even with no error at all


def test_retention_counted_in_calls_starts_uncond_a_step_earlier_at_half_steps():
    # the CFG scripts keep calls c < int(2N*R), c = 2t (cond), 2t + 1 (uncond)
    rule, cfg = TableRule(retention="calls"), MagCacheConfig(retention_ratio=0.2)
    # N = 28: 2N*R = 11.2 -> calls 0..10 kept: cond up to step 5, uncond up to step 4
    assert [t for t in range(10) if rule.retained(cfg, t, 28, COND)] == [0, 1, 2, 3, 4, 5]
    assert [t for t in range(10) if rule.retained(cfg, t, 28, UNCOND)] == [0, 1, 2, 3, 4]
    # N = 50: 20 calls, a whole number of steps: both keep steps 0..9
    assert sum(rule.retained(cfg, t, 50, COND) for t in range(50)) == 10
    assert sum(rule.retained(cfg, t, 50, UNCOND) for t in range(50)) == 10
    assert TableRule(retention="steps").retained(cfg, 5, 28, COND) is False  # int(5.6) = 5
    assert TableRule(retention="steps_half_up").retained(cfg, 5, 28, COND) is True  # int(6.1) = 6


def test_wan22_per_expert_retention():
    # 40 steps, low noise from step 26 (split), as MagCache4Wan2.2 counts calls
    t2v, i2v = TableRule(retention="calls", experts="t2v"), TableRule(retention="calls", experts="i2v")
    cfg = MagCacheConfig(retention_ratio=0.4)
    kept = {b: [t for t in range(40) if t2v.retained(cfg, t, 40, b, split=26)] for b in (COND, UNCOND)}
    # high noise: calls < int(52*0.4) = 20 -> steps 0-9; low noise: 52 <= c <= 28*0.4 + 52 = 63.2
    assert kept[COND] == list(range(10)) + list(range(26, 32))
    assert kept[UNCOND] == list(range(10)) + list(range(26, 32))
    cfg = MagCacheConfig(retention_ratio=0.1)
    kept = {b: [t for t in range(40) if i2v.retained(cfg, t, 40, b, split=26)] for b in (COND, UNCOND)}
    # calls < int(52 + 28*0.1) = 54: the whole high-noise part and step 26
    assert kept[COND] == kept[UNCOND] == list(range(27))
    # a run over the whole schedule (no split known): plain retention in calls
    assert [t for t in range(40) if t2v.retained(cfg, t, 40, COND)] == [0, 1, 2, 3]


def test_a_low_noise_run_continues_the_accumulators_of_the_shared_state():
    # the authors' two experts share one state: the protected start of the low-noise part leaves the
    # accumulators as the high-noise part left them
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.4)
    rule = TableRule(retention="calls", experts="t2v")
    ratios = [1.0] + [1.01] * 11
    acc = replay(cfg, rule, ratios, 6, 12, COND, split=6)
    # high part: calls < int(12*0.4) = 4 kept (steps 0, 1); steps 2-5 skipped, accumulating
    assert acc.steps == 4 and acc.ratio == pytest.approx(1.01 ** 4)
    whole = predict_skips(cfg, {COND: ratios}, 12, rule=rule, last=5)[COND] + \
        predict_skips(cfg, {COND: ratios}, 12, rule=rule, first=6)[COND]
    assert whole == [2, 3, 4, 5, 9, 10]  # 6-8 kept (12 <= c <= 16.8); 9, 10 skipped; 11 exceeds K


def test_malformed_rules_are_rejected():
    for kw in (dict(compare="=="), dict(retention="half"), dict(experts="t2v"), dict(forced_step=(28, 28))):
        with pytest.raises(RuleError):
            TableRule(**kw)


def test_flux_rounding_of_the_retention_boundary():
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1)
    assert skips(cfg, [1.0] * 5) == [1, 2, 3, 4]
    # int(1.5 + 0.5) = 2 (Flux) vs int(1.5) = 1 (official rule elsewhere)
    assert skips(cfg, [1.0] * 15, round_half_up=True) == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14]
    assert skips(cfg, [1.0] * 15) == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]


def test_batched_branches_skip_only_together():
    cfg = MagCacheConfig(thresh=0.05, K=2, retention_ratio=0.1)
    cond = [1.0] * 6
    uncond = [1.0, 1.0, 1.2, 1.0, 1.0, 1.0]  # uncond refuses step 2
    batched = predict_skips(cfg, {COND: cond, UNCOND: uncond}, 6, branches=(COND, UNCOND), batched=True)
    alone = predict_skips(cfg, {COND: cond, UNCOND: uncond}, 6, branches=(COND, UNCOND), batched=False)
    assert alone == {COND: [1, 2, 4, 5], UNCOND: [1, 3, 4]}
    # batched: step 2 computed for both; cond's accumulators reset there, so it skips 3 and 4, not 5
    assert batched == {COND: [1, 3, 4], UNCOND: [1, 3, 4]}




def test_a_run_covering_part_of_the_schedule_starts_fresh():
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1)
    # steps 5..9 of 10: step 5 has no residual yet, the others may skip
    assert skips(cfg, [1.0] * 10, first=5) == [6, 7, 8, 9]
    assert skips(cfg, [1.0] * 10, last=4) == [1, 2, 3, 4]


def test_max_step_deviation_refuses_a_skip_on_an_unsteady_step_and_resets():
    """FramePack's rule (MagCache4FramePack/magcache_demo_gradio.py:265): a skip also needs |1 - ratio[t]| <= 0.06;
    a step whose own ratio is further from 1 takes the reset branch even with the budget unspent."""
    from comfyui_magcache.magcache.rule import Accumulator, TableRule, decide_branch

    config = MagCacheConfig(thresh=0.15, retention_ratio=0.1, K=6)
    ratios = [1.0, 1.0, 1.01, 1.07, 1.01, 0.93, 1.0]
    steady, plain = TableRule(max_step_deviation=0.06), TableRule()
    got = {}
    for name, rule in (("steady", steady), ("plain", plain)):
        acc, got[name] = Accumulator(), []
        for t in range(len(ratios)):
            if decide_branch(acc, config, rule, ratios, t, len(ratios), 0, has_residual=t > 0):
                got[name].append(t)
    # acc_err after steps 1..4: 0, 0.01, 0.0907, 0.1822 > 0.15: step 4 computed; 5, 6: 0.07, 0.14
    assert got["plain"] == [1, 2, 3, 5, 6]
    assert got["steady"] == [1, 2, 4, 6]  # 3 (1.07) and 5 (0.93) deviate more than 0.06: computed, reset
    assert TableRule.from_data({"max_step_deviation": 0.06}).max_step_deviation == 0.06
    with pytest.raises(RuleError, match="max_step_deviation"):
        TableRule(max_step_deviation=-1)
