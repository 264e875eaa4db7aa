"""The MagCache skip rule as the authors' code applies it, with what differs between their scripts
held as data (TableRule, one per ratio table), and a reference predictor.

Per branch (cond or uncond), on each step:
- a step the retention (or start_step/end_step, or the table's kept step) keeps is computed and
  leaves the accumulators untouched, as in the authors' code;
- otherwise: acc_ratio *= ratio[t]; acc_steps += 1; acc_err += |1 - acc_ratio|, and the step is
  skipped if acc_err <= thresh (or < thresh: the comparison is the table's) and acc_steps <= K and
  the step is not the table's forced step (and, where the table says so, |1 - ratio[t]| is within its
  max_step_deviation); if not, the accumulators reset and the step is computed
  (the "reset branch").
- A step with no cached residual to add (the first step of a run) takes the reset branch.
- thresh 0 never skips (the node returns the model unchanged then)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .config import MagCacheConfig

COND, UNCOND = 0, 1  # the values ComfyUI puts in transformer_options["cond_or_uncond"]
COMPARES = ("<=", "<")
RETENTIONS = ("steps", "steps_half_up", "calls")
EXPERTS = ("t2v", "i2v")


class RuleError(ValueError):
    """A table's rule data is malformed."""


@dataclass(frozen=True)
class TableRule:
    """What the authors' script for a table does differently from the others.

    compare: "<=" (skip while acc_err <= thresh) or "<".
    retention: where the retention boundary lies for N steps and retention ratio R:
        "steps": steps t < int(R*N) are kept (HunyuanVideo; the original pack);
        "steps_half_up": t < int(R*N + 0.5) (Flux, Flux-Kontext);
        "calls": the CFG scripts count model calls, cond then uncond, c = 2t (+1 for uncond),
            and keep c < int(2N*R), so at a half step the uncond branch starts a step earlier.
    forced_step: (step, of): the step t with round(t*(of-1)/(N-1)) == step is never skipped; it
        takes the reset branch (Flux, Flux-Kontext: step 11 of 28). N = 1 has no forced step
        (the authors' formula divides by zero there; the only step has no residual anyway).
    kept_step: (step, of): the steps t that read entry `step` of the `of`-entry table,
        round(t*(of-1)/(N-1)) == step (every such step; none for some N), are computed and leave
        the accumulators untouched, like a retained step (the original pack's 20-step Kontext
        table: `cur_step not in [11]`). N = 1 has none (the original divides by zero there).
    experts: Wan2.2 A14B's per-expert retention when the run is one expert's part of the
        schedule (split = the first low-noise step S), in calls (c, 2N, 2S as above):
        "t2v": keep c < int(2S*R) and 2S <= c <= (2N-2S)*R + 2S;
        "i2v": keep c < int(2S + (2N-2S)*R) (the high-noise expert is never cached).
        A run covering the whole schedule (split unknown) uses "calls" retention.
    max_step_deviation: a further condition on each skip: the step's own ratio must satisfy
        |1 - ratio[t]| <= max_step_deviation, else the step takes the reset branch (FramePack and
        FramePack-F1: 0.06). None: no such condition.
    source: the authors' file (and lines) the rule is transcribed from.
    """

    compare: str = "<="
    retention: str = "steps"
    forced_step: Optional[tuple[int, int]] = None
    kept_step: Optional[tuple[int, int]] = None
    experts: Optional[str] = None
    max_step_deviation: Optional[float] = None
    source: str = ""

    def __post_init__(self):
        if self.compare not in COMPARES:
            raise RuleError(f"rule compare must be one of {COMPARES}, got {self.compare!r}")
        if self.retention not in RETENTIONS:
            raise RuleError(f"rule retention must be one of {RETENTIONS}, got {self.retention!r}")
        if self.experts is not None and (self.experts not in EXPERTS or self.retention != "calls"):
            raise RuleError(f"rule experts must be one of {EXPERTS} with retention 'calls', got {self.experts!r}")
        for key, value in (("forced_compute_step", self.forced_step), ("kept_compute_step", self.kept_step)):
            if value is None:
                continue
            step, of = value
            if not (isinstance(step, int) and isinstance(of, int) and of >= 2 and 0 <= step < of):
                raise RuleError(f"{key} must be 0 <= step < of, of >= 2; got {value!r}")
        dev = self.max_step_deviation
        if dev is not None and (isinstance(dev, bool) or not isinstance(dev, (int, float)) or not 0 <= dev < 1e9):
            raise RuleError(f"max_step_deviation must be a number >= 0, got {dev!r}")

    @classmethod
    def default(cls, round_half_up: bool = False) -> "TableRule":
        """The rule for tables that carry none (calibration profiles): the family's retention rounding."""
        return cls(retention="steps_half_up" if round_half_up else "steps")

    @classmethod
    def from_data(cls, data: Optional[Mapping]) -> "TableRule":
        if not data:
            return cls()
        forced, kept = data.get("forced_compute_step"), data.get("kept_compute_step")
        return cls(compare=data.get("compare", "<="), retention=data.get("retention", "steps"),
                   forced_step=(forced["step"], forced["of"]) if forced else None,
                   kept_step=(kept["step"], kept["of"]) if kept else None,
                   experts=data.get("experts"), max_step_deviation=data.get("max_step_deviation"),
                   source=data.get("source", ""))

    def forced(self, step: int, steps: int) -> bool:
        """Is `step` of a `steps`-step run the table's forced compute step?"""
        return _maps_to(self.forced_step, step, steps)

    def kept(self, step: int, steps: int) -> bool:
        """Is `step` of a `steps`-step run the table's kept step (computed, accumulators untouched)?"""
        return _maps_to(self.kept_step, step, steps)

    def steady(self, ratio: float) -> bool:
        """Does this step's own ratio allow a skip (max_step_deviation)?"""
        return self.max_step_deviation is None or abs(1.0 - ratio) <= self.max_step_deviation

    def retained(self, config: MagCacheConfig, step: int, steps: int, branch: int = COND,
                 split: Optional[int] = None) -> bool:
        """Does the retention keep this step of this branch computed? split: the first low-noise
        step of a Wan2.2 A14B schedule, when the run is one expert's part of it."""
        R = config.retention_ratio
        if self.retention == "steps_half_up":
            return step < int(R * steps + 0.5)
        if self.retention == "steps":
            return step < int(R * steps)
        call, calls = 2 * step + (1 if branch == UNCOND else 0), 2 * steps
        if self.experts is None or split is None:
            return call < int(calls * R)
        s = 2 * split
        if self.experts == "i2v":
            return call < int(s + (calls - s) * R)
        return call < int(s * R) or (s <= call <= (calls - s) * R + s)


def _maps_to(target: Optional[tuple[int, int]], step: int, steps: int) -> bool:
    """Does `step` of a `steps`-step run read entry target[0] of a target[1]-entry table (nearest)?"""
    if target is None or steps < 2:
        return False
    entry, of = target
    return round(step * ((of - 1) / (steps - 1))) == entry


@dataclass
class Accumulator:
    """Error accumulated by one branch since its last computed step."""

    ratio: float = 1.0
    err: float = 0.0
    steps: int = 0

    def reset(self) -> None:
        self.ratio, self.err, self.steps = 1.0, 0.0, 0

    def advance(self, mag_ratio: float, thresh: float, K: int, inclusive: bool = True, allowed: bool = True) -> bool:
        """Fold in this step's ratio; True if the step may be skipped. A refusal resets.

        inclusive: acc_err <= thresh (else <). allowed: False on a forced step or when there is
        no residual to skip with; the step then takes the reset branch."""
        self.ratio *= mag_ratio
        self.steps += 1
        self.err += abs(1.0 - self.ratio)
        within = self.err <= thresh if inclusive else self.err < thresh
        if thresh > 0 and within and self.steps <= K and allowed:
            return True
        self.reset()
        return False


def eligible(config: MagCacheConfig, step: int, steps: int, round_half_up: bool = False,
             rule: Optional[TableRule] = None, branch: int = COND, split: Optional[int] = None) -> bool:
    """May `step` be skipped at all: past the retention boundary, inside start/end_step and not the
    table's kept step."""
    rule = rule if rule is not None else TableRule.default(round_half_up)
    first, last = config.window(steps)
    return (first <= step <= last and not rule.retained(config, step, steps, branch, split)
            and not rule.kept(step, steps))


def split_of(first: int, last: int, steps: int) -> Optional[int]:
    """The expert boundary implied by a run covering steps first..last of `steps`: a run starting
    late is the low-noise expert (split = first), one ending early the high-noise expert
    (split = last + 1); a whole-schedule run has none."""
    if first > 0:
        return first
    if last < steps - 1:
        return last + 1
    return None


def decide_branch(acc: Accumulator, config: MagCacheConfig, rule: TableRule, ratios: Sequence[float], step: int,
                  steps: int, branch: int, has_residual: bool, split: Optional[int] = None) -> bool:
    """One branch's decision at one step (see the module docstring). True: skip."""
    if not eligible(config, step, steps, rule=rule, branch=branch, split=split):
        return False  # computed; the authors' code leaves the accumulators as they are
    return acc.advance(ratios[step], config.thresh, config.K, inclusive=rule.compare == "<=",
                       allowed=has_residual and not rule.forced(step, steps) and rule.steady(ratios[step]))


def replay(config: MagCacheConfig, rule: TableRule, ratios: Sequence[float], until: int, steps: int, branch: int,
           split: Optional[int] = None) -> Accumulator:
    """The accumulators a branch holds at step `until` when steps 0..until-1 ran under the rule on
    one state: a run that starts inside the schedule continues from there, as the authors' two
    Wan2.2 experts share one state."""
    acc = Accumulator()
    for step in range(until):
        decide_branch(acc, config, rule, ratios, step, steps, branch, has_residual=step > 0, split=split)
    return acc


def predict_skips(config: MagCacheConfig, tables: Mapping[int, Sequence[float]], steps: int,
                  branches: Sequence[int] = (0,), batched: bool = True,
                  round_half_up: bool = False, first: int = 0, last: int | None = None,
                  rule: Optional[TableRule] = None) -> dict[int, list[int]]:
    """Skipped steps per branch for one euler-like run (one model evaluation per step).

    tables: per-branch ratios for `steps` steps (Preset.tables(steps) carries its rule; a plain
    mapping uses `rule`, or the default rule with round_half_up).
    batched=True: the branches share one model call, so blocks are skipped only when every
    branch would skip; a branch computed anyway counts as computed (accumulators reset).
    batched=False: each branch is its own call and decides alone.
    first/last: the run covers only steps first..last of a `steps`-step schedule (a sampler
    that runs part of the schedule, as Wan2.2's two experts do); it starts with no residual and
    with the accumulators the rule holds at `first`."""
    rule = rule or getattr(tables, "rule", None) or TableRule.default(round_half_up)
    last = steps - 1 if last is None else last
    split = split_of(first, last, steps)
    acc = {b: replay(config, rule, tables[b], first, steps, b, split) for b in branches}
    skipped: dict[int, list[int]] = {b: [] for b in branches}
    for step in range(first, last + 1):
        wants = {b: decide_branch(acc[b], config, rule, tables[b], step, steps, b, step > first, split)
                 for b in branches}
        groups = [list(branches)] if batched else [[b] for b in branches]
        for group in groups:
            skip = all(wants[b] for b in group)
            for b in group:
                if skip:
                    skipped[b].append(step)
                elif wants[b]:
                    acc[b].reset()
    return skipped
