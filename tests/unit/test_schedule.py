import math

import pytest
import torch
from comfyui_magcache.magcache import DegenerateSchedule, Schedule


def karras(n, smin=0.03, smax=14.6, rho=7.0):
    ramp = [i / (n - 1) for i in range(n)]
    s = [(smax ** (1 / rho) + r * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for r in ramp]
    return s + [0.0]


def test_euler_and_ancestral_sigmas_map_to_their_steps():
    # euler and euler_ancestral evaluate the model once per step, at the schedule's sigmas
    for sigmas in (karras(20), [1 - i / 28 for i in range(28)] + [0.0]):
        sched = Schedule.from_values(torch.tensor(sigmas, dtype=torch.float32))
        f32 = torch.tensor(sigmas, dtype=torch.float32).tolist()
        assert [sched.step_index(s) for s in f32[:-1]] == list(range(len(sigmas) - 1))


def test_heun_evaluations_map_to_sensible_steps():
    sigmas = karras(6)
    sched = Schedule.from_values(sigmas)
    # heun: step i evaluates at sigma_i, then (unless sigma_{i+1} == 0) at sigma_{i+1}
    calls = []
    for i in range(6):
        calls.append(sigmas[i])
        if sigmas[i + 1] > 0:
            calls.append(sigmas[i + 1])
    assert [sched.step_index(s) for s in calls] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_dpmpp_2s_midpoints_map_to_the_step_they_lie_in():
    sigmas = karras(8)
    sched = Schedule.from_values(sigmas)
    for i in range(7):
        mid = math.sqrt(sigmas[i] * sigmas[i + 1])  # a sigma strictly inside step i's interval
        assert sched.step_index(sigmas[i]) == i
        assert sched.step_index(mid) == i


def test_sigmas_outside_the_schedule_clamp():
    sched = Schedule.from_values([1.0, 0.5, 0.0])
    assert sched.step_index(2.0) == 0
    assert sched.step_index(0.0) == 1
    assert sched.step_index(-1.0) == 1


def test_repeated_sigmas_do_not_break_the_search():
    sched = Schedule.from_values([1.0, 0.5, 0.5, 0.2, 0.0])
    assert [sched.step_index(s) for s in (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)] == [0, 0, 2, 2, 3, 3]


@pytest.mark.parametrize("values, fragment", [
    (None, "no sample_sigmas"),
    ([0.5], "1 value(s)"),
    ([0.0, 0.0], "does not move"),
    ([1.0, float("nan"), 0.0], "NaN"),
    ([0.5, 1.0, 0.0], "not descending"),
])
def test_degenerate_schedules_are_refused(values, fragment):
    with pytest.raises(DegenerateSchedule) as e:
        Schedule.from_values(values)
    assert fragment in str(e.value)


def flow_table(shift=8.0, n=1000):
    """A shifted flow-matching sigma table, ascending, as model_sampling.sigmas holds it."""
    return [shift * t / (1 + (shift - 1) * t) for t in ((i + 1) / n for i in range(n))]


def simple(table, steps):
    """ComfyUI's 'simple' scheduler: evenly spaced in the model's sigma table, then 0."""
    ss = len(table) / steps
    return [table[-(1 + int(x * ss))] for x in range(steps)] + [0.0]


def test_full_runs_are_placed_at_offset_zero_whatever_the_scheduler():
    table = flow_table()
    for sigmas in (simple(table, 20), karras(20, smin=table[0], smax=table[-1])):
        sched = Schedule.from_values(sigmas, model_sigmas=table)
        assert (sched.offset, sched.total) == (0, 20)


def test_two_expert_halves_and_denoise_runs_are_placed_in_the_full_schedule():
    table = flow_table()
    full = simple(table, 20)
    high, low = Schedule.from_values(full[:11], table), Schedule.from_values(full[10:], table)
    assert (high.offset, high.steps, high.total) == (0, 10, 20)
    assert (low.offset, low.steps, low.total) == (10, 10, 20)
    assert low.global_step(full[10]) == 10 and low.global_step(full[19]) == 19
    denoise = Schedule.from_values(simple(table, 40)[20:], table)  # KSampler denoise 0.5, 20 steps
    assert (denoise.offset, denoise.total) == (20, 40)


def test_a_schedule_ending_at_a_small_sigma_is_complete():
    table = flow_table()
    sigmas = simple(table, 12)
    sigmas[-1] = 0.001  # uni_pc ends at a small sigma instead of 0
    assert Schedule.from_values(sigmas, table).total == 12
    high = simple(table, 12)[:7]  # ...while a run that stops mid-schedule still counts what is left
    assert Schedule.from_values(high, table).total == 12


def test_without_the_model_table_a_run_is_its_own_schedule():
    sched = Schedule.from_values(simple(flow_table(), 20)[10:])
    assert (sched.offset, sched.total) == (0, 10)


def test_short_pieces_of_a_simple_schedule_are_placed_by_their_entries():
    # the simple scheduler's spacing in the table alternates between two whole numbers, so a few
    # steps' own spacing can misjudge the full schedule by one; the entries themselves place it
    table = flow_table()
    for steps, split in ((28, 1), (47, 3), (47, 44), (46, 43)):
        full = simple(table, steps)
        high, low = Schedule.from_values(full[:split + 1], table), Schedule.from_values(full[split:], table)
        assert (high.offset, high.total, low.offset, low.total) == (0, steps, split, steps), (steps, split)


def test_a_run_that_fits_several_schedules_keeps_the_estimate():
    # steps 0-1 of 36 and of 37 steps are the same table entries: either placement is as right
    table = flow_table()
    assert simple(table, 36)[:2] == simple(table, 37)[:2]
    assert Schedule.from_values(simple(table, 36)[:2], table).total in (36, 37)
