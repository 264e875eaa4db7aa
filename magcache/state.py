"""Per-run, per-branch MagCache state. One RunState is made for each sampling run and dropped after."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Hashable, Optional, Sequence

import torch

from . import streams
from .config import MagCacheConfig
from .presets import COND, UNCOND
from .rule import Accumulator, TableRule, decide_branch, replay, split_of
from .schedule import DegenerateSchedule, Schedule
from .streams import Hidden

log = logging.getLogger("MagCache")

# A branch is one conditioning chunk of the batch: (cond_or_uncond value, its uuid). Keying by the
# chunk and not by call order keeps batched CFG ([uncond, cond] in one call), separate cond/uncond
# calls and cfg = 1 on the same decisions.
BranchKey = tuple[int, Hashable]


@dataclass
class BranchState:
    branch: int  # COND or UNCOND: which half of a CFG-interleaved table it reads
    acc: Accumulator = field(default_factory=Accumulator)
    residual: Optional[Hidden] = None  # kept on the compute device, never copied to host (several streams: a tuple)
    step: int = -1  # last step this branch was evaluated at
    skipped: bool = False  # the decision taken at `step`
    skipped_steps: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.acc.reset()
        self.residual = None


def _length(values) -> Optional[int]:
    """How many values a schedule holds, from its metadata only (no read of the values)."""
    if isinstance(values, torch.Tensor):
        return values.numel()
    try:
        return len(values)
    except TypeError:
        return None


class RunState:
    """Everything MagCache remembers during one sampling run.

    decide() applies the skip rule for the branches that share one model call; the caller then
    either skips the blocks (using residual()) or computes them and hands the new residual to
    store(). Not locked itself: callers sharing it between threads serialise their calls (the
    engine holds its run's lock)."""

    def __init__(self, config: MagCacheConfig, round_half_up: bool = False, model_sigmas=None):
        self.config = config
        self.round_half_up = round_half_up
        self.default_rule = TableRule.default(round_half_up)  # for tables that carry no rule (profiles)
        self.table_names: list[str] = []  # the tables this run read, in order of first use
        self.model_sigmas = model_sigmas  # the model's sigma table, to place partial runs (Schedule)
        self.branches: dict[BranchKey, BranchState] = {}
        self.calls = 0
        self.computed_calls = 0
        self.disabled_reason: Optional[str] = None
        self._schedule_src = None
        self._schedule: Optional[Schedule] = None
        self.warned: set = set()  # warn_once keys

    # -- schedule -----------------------------------------------------------------------------
    def disable(self, reason: str) -> None:
        """Switch caching off for the rest of the run, with one warning."""
        if self.disabled_reason is None:
            self.disabled_reason = reason
            log.warning("MagCache: caching is off for this run: %s", reason)

    def warn_once(self, key, message: str, *args) -> None:
        """Log a warning the first time `key` comes up in this run (message %-formatted with args)."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning(message, *args)

    def schedule(self, sample_sigmas) -> Optional[Schedule]:
        """The run's schedule, or None when caching is off.

        Parsed (one host read) once per run: the same object again, or another one of the same
        length, reuses the parse. ComfyUI sets one schedule per sampling run (CFGGuider.inner_sample);
        MultiGPU CFG Split hands every model call on another device a fresh copy of it on that
        device, whose identity is new at every call and whose values could only be compared by
        reading them back (a host sync per call). So a same-length object is taken for a copy, with
        no read; one of another length (or no schedule) is parsed and starts the branches afresh."""
        if self.disabled_reason is not None:
            return None
        if self._schedule is None or (sample_sigmas is not self._schedule_src
                                      and _length(sample_sigmas) != len(self._schedule.sigmas)):
            try:
                sched = Schedule.from_values(sample_sigmas, self.model_sigmas)
            except DegenerateSchedule as e:
                self.disable(str(e))
                return None
            first, last = self.config.window(sched.total)
            if first > last:
                self.disable(f"start_step {first} is after end_step {last} for {sched.total} steps")
                return None
            if self._schedule is not None and sched.sigmas != self._schedule.sigmas:
                self.release()  # a new schedule within the run: start the branches afresh
            self._schedule_src, self._schedule = sample_sigmas, sched
        return self._schedule

    @property
    def current_schedule(self) -> Optional[Schedule]:
        return self._schedule

    # -- decisions ----------------------------------------------------------------------------
    def branch(self, key: BranchKey) -> BranchState:
        st = self.branches.get(key)
        if st is None:
            st = self.branches[key] = BranchState(branch=UNCOND if key[0] == UNCOND else COND)
        return st

    def fits(self, key: BranchKey, like: Hidden) -> bool:
        """Whether the branch's residual can be added to `like`. A residual of another shape, dtype
        or device is dropped (and the branch reset), never broadcast."""
        st = self.branch(key)
        r = st.residual
        if r is None:
            return False
        if not streams.same_layout(r, like):
            st.reset()
            return False
        return True

    def span(self, steps: int) -> tuple[int, int]:
        """(first, last) steps of the full `steps`-step schedule that this run covers."""
        sched = self._schedule
        if sched is None or sched.total != steps:
            return 0, steps - 1
        return sched.offset, sched.offset + sched.steps - 1

    def decide(self, step: int, steps: int, tables: dict[int, Sequence[float]],
               keys: Sequence[BranchKey], fits: Sequence[bool]) -> bool:
        """Skip the blocks for this call? Only if every branch in it would skip.

        tables: the per-branch ratios for `steps` steps; a Preset's (StepTables) carry the table's
        rule and name. A repeated evaluation of a branch at the same step (heun's second call,
        dpmpp_2s's midpoint) follows the decision taken at its first evaluation without advancing
        the accumulators. A branch that wanted to skip but is computed with the others counts as
        computed: its accumulators reset and its residual is refreshed. A run that covers only part
        of the schedule starts each branch with the accumulators the rule holds at its first step."""
        rule = getattr(tables, "rule", None) or self.default_rule
        name = getattr(tables, "name", None)
        if name and name not in self.table_names:
            self.table_names.append(name)
        first, last = self.span(steps)
        split = split_of(first, last, steps)
        wants, first_eval = [], []
        for key, ok in zip(keys, fits):
            new = key not in self.branches
            st = self.branch(key)
            if st.step == step:
                first_eval.append(False)
                wants.append(ok and st.skipped)
                continue
            if new and first > 0:
                st.acc = replay(self.config, rule, tables[st.branch], first, steps, st.branch, split)
            elif step < st.step:  # the schedule restarted: a fresh pass
                st.acc.reset()
            st.step = step
            first_eval.append(True)
            wants.append(decide_branch(st.acc, self.config, rule, tables[st.branch], step, steps, st.branch, ok, split))
        skip = bool(keys) and all(wants)
        for key, first_time, wanted in zip(keys, first_eval, wants):
            st = self.branches[key]
            if first_time:
                st.skipped = skip
                if skip:
                    st.skipped_steps.append(step)
                elif wanted:
                    st.acc.reset()  # computed with the others, though this branch alone would have skipped
        self.calls += 1
        self.computed_calls += not skip
        return skip

    def residual(self, key: BranchKey) -> Hidden:
        return self.branches[key].residual

    def store(self, key: BranchKey, residual: Hidden) -> None:
        self.branch(key).residual = residual

    # -- end of run ---------------------------------------------------------------------------
    def skipped_per_branch(self) -> dict[int, int]:
        """Skipped steps per branch (COND, UNCOND); several chunks of one branch report the most."""
        out: dict[int, int] = {}
        for (b, _), st in self.branches.items():
            b = UNCOND if b == UNCOND else COND
            out[b] = max(out.get(b, 0), len(st.skipped_steps))
        return out

    def summary(self) -> str:
        if self.disabled_reason is not None:
            return f"MagCache: skipped 0 steps (caching was off: {self.disabled_reason})"
        steps = self._schedule.steps if self._schedule is not None else 0
        per = self.skipped_per_branch()
        skipped = max(per.values(), default=0)
        names = ", ".join(f"{'cond' if b == COND else 'uncond'} {n}" for b, n in sorted(per.items()))
        est = self.calls / self.computed_calls if self.computed_calls else 1.0
        line = f"MagCache: skipped {skipped}/{steps} steps ({names}), est. {est:.1f}x"
        if self.table_names:
            line += f", table {' + '.join(self.table_names)}"
        return line

    def release(self) -> None:
        """Drop every cached residual and accumulator."""
        self.branches.clear()
