from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, get_preset, predict_skips

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
    # step 7: ratio 0.95, err 0.05, not < 0.05 -> compute
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


def test_no_hard_coded_step_exception():
    # the original pack forced step 11 to compute; here only the rule decides.
    # flat ratios, K=6: steps 0-1 retained, six skips, one compute, six skips, ...
    got = skips(MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1), [1.0] * 20)
    assert got == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19]


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


def test_published_flux_settings_on_the_flux_table():
    cfg = MagCacheConfig(thresh=0.24, retention_ratio=0.1, K=5)
    table = get_preset("flux").tables(28)
    got = predict_skips(cfg, table, 28, round_half_up=True)[COND]
    assert got and min(got) >= 3 and len(got) >= 10


def test_a_run_covering_part_of_the_schedule_starts_fresh():
    cfg = MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1)
    # steps 5..9 of 10: step 5 has no residual yet, the others may skip
    assert skips(cfg, [1.0] * 10, first=5) == [6, 7, 8, 9]
    assert skips(cfg, [1.0] * 10, last=4) == [1, 2, 3, 4]
