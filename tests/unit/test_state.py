import logging

import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, RunState, Schedule, predict_skips

CFG = MagCacheConfig(thresh=0.05, K=2, retention_ratio=0.1)
COND_T = [1.0, 1.0, 1.0, 1.01, 1.0, 1.0, 1.0, 1.0]
UNCOND_T = [1.0, 1.0, 1.2, 1.0, 1.0, 1.0, 1.03, 1.0]
TABLES = {COND: COND_T, UNCOND: UNCOND_T}
C, U = (COND, "c-uuid"), (UNCOND, "u-uuid")


def simulate(state, calls_per_step, steps=8, tables=TABLES):
    """Drive a RunState as the engine does; return the skipped steps per call layout."""
    x = torch.zeros(1, 4, 3)
    skipped = {}
    for step in range(steps):
        for keys in calls_per_step:
            fits = [state.fits(k, x) for k in keys]
            if state.decide(step, steps, tables, keys, fits):
                skipped.setdefault(keys, []).append(step)
            else:
                for k in keys:
                    state.store(k, torch.full_like(x, float(step)))
    return skipped


def test_batched_cfg_matches_the_reference_rule():
    state = RunState(CFG)
    got = simulate(state, [(U, C)])  # ComfyUI batches uncond first
    ref = predict_skips(CFG, TABLES, 8, branches=(COND, UNCOND), batched=True)
    assert got[(U, C)] == ref[COND] == ref[UNCOND]
    assert state.branches[C].skipped_steps == ref[COND]


def test_separate_calls_match_the_reference_rule_in_either_order():
    ref = predict_skips(CFG, TABLES, 8, branches=(COND, UNCOND), batched=False)
    for order in ([(C,), (U,)], [(U,), (C,)]):
        got = simulate(RunState(CFG), order)
        assert got[(C,)] == ref[COND] and got[(U,)] == ref[UNCOND]
    assert ref[COND] != ref[UNCOND]  # the tables really differ per branch


def test_cfg_one_uses_the_cond_half():
    got = simulate(RunState(CFG), [(C,)])
    assert got[(C,)] == predict_skips(CFG, TABLES, 8, branches=(COND,))[COND]


def test_branch_state_is_isolated():
    state = RunState(CFG)
    x = torch.zeros(1, 2, 2)
    state.store(C, x + 1)
    assert state.fits(C, x) and not state.fits(U, x)
    state.store(U, x + 2)
    assert torch.equal(state.residual(C), x + 1) and torch.equal(state.residual(U), x + 2)
    state.branch(U).acc.advance(1.5, 0.3, 2)
    assert state.branch(C).acc.ratio == 1.0


def test_runs_do_not_share_state():
    first = RunState(CFG)
    simulate(first, [(U, C)])
    second = RunState(CFG)
    assert second.branches == {} and second.calls == 0
    assert simulate(second, [(U, C)]) == simulate(RunState(CFG), [(U, C)])
    first.release()
    assert first.branches == {}


def test_repeated_evaluation_follows_the_first_decision_without_advancing():
    state = RunState(MagCacheConfig(thresh=0.3, K=6, retention_ratio=0.1))
    x = torch.zeros(1, 2, 2)
    tables = {COND: [1.0, 1.01, 1.01], UNCOND: [1.0, 1.01, 1.01]}
    assert not state.decide(0, 3, tables, [C], [False])
    state.store(C, x)
    assert state.decide(1, 3, tables, [C], [True])
    acc = (state.branch(C).acc.ratio, state.branch(C).acc.steps)
    assert state.decide(1, 3, tables, [C], [True])  # heun's second call at the same step
    assert (state.branch(C).acc.ratio, state.branch(C).acc.steps) == acc
    assert state.branch(C).skipped_steps == [1]


def test_a_residual_of_another_shape_is_dropped_never_broadcast():
    state = RunState(CFG)
    state.store(C, torch.zeros(1, 4, 3))
    assert not state.fits(C, torch.zeros(1, 5, 3))
    assert state.residual(C) is None
    state.store(C, torch.zeros(1, 4, 3))
    assert not state.fits(C, torch.zeros(1, 4, 3, dtype=torch.float64))
    state.store(C, torch.zeros(1, 4, 3))
    assert not state.fits(C, torch.zeros(1, 4, 3, device="meta"))  # another device
    assert state.residual(C) is None


def test_degenerate_schedule_disables_the_run_with_one_warning(caplog):
    state = RunState(CFG)
    with caplog.at_level(logging.WARNING, logger="MagCache"):
        assert state.schedule(torch.tensor([0.0, 0.0])) is None
        assert state.schedule(torch.tensor([0.0, 0.0])) is None
    assert [r.getMessage() for r in caplog.records] == [
        "MagCache: caching is off for this run: sample_sigmas does not move (all 0)"]
    assert "caching was off" in state.summary()


def test_an_empty_window_disables_the_run():
    state = RunState(MagCacheConfig(start_step=30))
    assert state.schedule(torch.linspace(1, 0, 21)) is None
    assert "start_step 30 is after end_step 19 for 20 steps" in state.disabled_reason


def test_schedule_is_parsed_once_per_schedule_object():
    state = RunState(CFG)
    sigmas = torch.linspace(1, 0, 9)
    first = state.schedule(sigmas)
    assert first.steps == 8 and state.schedule(sigmas) is first


def test_copies_of_the_schedule_are_not_read_again(monkeypatch):
    """MultiGPU CFG Split hands each call on another device a new copy of the schedule: same length,
    same run, no second parse (a host read per call on a GPU). Another length is a new schedule."""
    state = RunState(CFG)
    sigmas = torch.linspace(1, 0, 9)
    first = state.schedule(sigmas)
    state.store(C, torch.zeros(1, 4, 3))
    parsed = []
    original = Schedule.from_values
    monkeypatch.setattr(Schedule, "from_values",
                        classmethod(lambda cls, *a, **k: parsed.append(1) or original(*a, **k)))
    assert all(state.schedule(sigmas.clone()) is first for _ in range(5)) and state.schedule(sigmas) is first
    assert state.schedule(torch.linspace(1, 0, 9).to("meta")) is first  # values that cannot even be read
    assert parsed == [] and state.residual(C) is not None
    other = state.schedule(torch.linspace(1, 0, 13))
    assert other.steps == 12 and parsed == [1] and C not in state.branches  # a new schedule starts afresh


def test_summary_line():
    state = RunState(CFG)
    simulate(state, [(U, C)])
    n = len(state.branches[C].skipped_steps)
    state.schedule(torch.linspace(1, 0, 9))
    assert state.summary() == f"MagCache: skipped {n}/8 steps (cond {n}, uncond {n}), est. {8 / (8 - n):.1f}x"


def test_summary_names_the_tables_the_run_read():
    from comfyui_magcache.magcache import get_preset

    state = RunState(MagCacheConfig(thresh=0.24, retention_ratio=0.1, K=5))
    simulate(state, [(C,)], steps=28, tables=get_preset("flux").tables(28))
    n = len(state.branches[C].skipped_steps)
    assert 11 not in state.branches[C].skipped_steps  # the table's forced step
    state.schedule(torch.linspace(1, 0, 29))
    assert state.summary() == f"MagCache: skipped {n}/28 steps (cond {n}), est. {28 / (28 - n):.1f}x, table flux"
    state.decide(0, 28, get_preset("flux_kontext").tables(28), [U], [False])
    assert state.summary().endswith(", table flux + flux_kontext")


def test_a_run_placed_late_in_the_schedule_starts_with_the_shared_accumulators():
    from comfyui_magcache.magcache import get_preset, predict_skips

    # Wan2.2 T2V-A14B's low-noise expert as its own sampler: steps 26..39 of 40
    model_sigmas = [i / 1000 for i in range(1, 1001)]
    ss = 1000 / 40
    full = [model_sigmas[-(1 + int(x * ss))] for x in range(40)] + [0.0]
    cfg = MagCacheConfig(thresh=0.06, retention_ratio=0.4, K=2)
    state = RunState(cfg, model_sigmas=model_sigmas)
    sched = state.schedule(full[26:])
    assert (sched.offset, sched.total) == (26, 40)
    tables = get_preset("wan2.2_t2v_14B").tables(40)
    x = torch.zeros(1, 2, 2)
    got = []
    for step in range(26, 40):
        fits = [state.fits(C, x)]
        if state.decide(step, 40, tables, [C], fits):
            got.append(step)
        else:
            state.store(C, x)
    assert got == predict_skips(cfg, tables, 40, first=26)[COND]
