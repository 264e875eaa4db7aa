"""The hooks driven from two threads at once, as ComfyUI's MultiGPU CFG Split drives them: cond and
uncond model calls of one step run in parallel threads (one per device), with their own
transformer_options sharing one run. Barriers force the interleavings in which one call's head
runs between another call's head and tail; every one must give what the calls give one after the
other."""
import threading

import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig
from comfyui_magcache.magcache import state as state_module
from comfyui_magcache.model_patches import engine, flux
from toy_loop import Executor, ToyFlux

SIGMAS = torch.linspace(1.0, 0.0, 13)  # 12 steps
CONFIG = MagCacheConfig(thresh=0.3, K=3, retention_ratio=0.2)
HEAD = ("double_block", 0)  # the toy calls `between` after it: the head has decided, skipped or not
BRANCHES = {"A": (COND, "c"), "B": (UNCOND, "u")}


class Script:
    """Runs the segments of two threads' model calls in a given order.

    A segment ('A.head', 'B.tail', ...) is what one thread runs between two checkpoints; both
    threads meet at a threading.Barrier after every segment, so a thread waits at its checkpoint
    until the segments before its own have run."""

    def __init__(self, order):
        self.order = order
        self.barrier = threading.Barrier(2, timeout=20)
        self.pos = {"A": 0, "B": 0}

    def until(self, me: str, segment: str) -> None:
        while self.order[self.pos[me]] != f"{me}.{segment}":
            self.barrier.wait()  # someone else's segment runs
            self.pos[me] += 1

    def done(self, me: str) -> None:
        self.barrier.wait()
        self.pos[me] += 1

    def end_of_step(self, me: str) -> None:
        while self.pos[me] < len(self.order):
            self.barrier.wait()
            self.pos[me] += 1
        self.barrier.wait()  # both are through this step's script
        self.pos[me] = 0


def inputs(device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = {k: torch.randn(1, 6, 4, generator=g) for k in "AB"}
    x["B"] += 2.0  # the branches differ
    txt = torch.randn(1, 3, 4, generator=g)
    return x, txt


def call(run, reps, model, me, step, x, txt, sample_sigmas, between=None):
    """One model call of branch `me` at `step`, with its own transformer_options (as ComfyUI merges
    them per call) holding the shared replacements and run."""
    cou, uuid = BRANCHES[me]
    to = {"patches_replace": {"dit": reps}, "sample_sigmas": sample_sigmas, "sigmas": SIGMAS[step:step + 1],
          "cond_or_uncond": [cou], "uuids": [uuid], engine.RUN_KEY: run}
    kwargs = {"between": between} if between is not None else {}
    return engine.diffusion_model_wrapper(Executor(model.forward), x, txt, to, **kwargs)


def fresh():
    models = {k: ToyFlux() for k in "AB"}  # one model per device, as the split deep-clones it
    reps = engine.replacements(flux.SPEC, models["A"], {})
    return models, reps, engine.Run(engine.Settings(flux.SPEC, CONFIG, "flux"))


def one_after_the_other(x, txt):
    models, reps, run = fresh()
    outs = {}
    for step in range(12):
        for me in "AB":
            outs[(step, me)] = call(run, reps, models[me], me, step, x[me], txt, SIGMAS)
    return outs, run


def in_two_threads(order, x, txt):
    """Both branches' calls of every step in two threads, their segments in `order`. Thread B gets a
    fresh copy of the schedule at every call, as the split's other devices do."""
    models, reps, run = fresh()
    script = Script(order)
    outs, errors = {}, []

    def worker(me):
        try:
            for step in range(12):
                def between(key):
                    if key == HEAD:
                        script.done(me)
                        script.until(me, "tail")

                script.until(me, "head")
                sigmas = SIGMAS if me == "A" else SIGMAS.clone()
                outs[(step, me)] = call(run, reps, models[me], me, step, x[me], txt, sigmas, between)
                script.done(me)
                script.end_of_step(me)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            script.barrier.abort()

    threads = [threading.Thread(target=worker, args=(me,)) for me in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    return outs, run


ORDERS = [
    ("A.head", "B.head", "A.tail", "B.tail"),
    ("A.head", "B.head", "B.tail", "A.tail"),
    ("B.head", "A.head", "A.tail", "B.tail"),
    ("B.head", "A.head", "B.tail", "A.tail"),
    ("A.head", "A.tail", "B.head", "B.tail"),  # one after the other, for contrast
]


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_interleaved_calls_decide_as_calls_one_after_the_other(order, monkeypatch):
    x, txt = inputs()
    want, ref = one_after_the_other(x, txt)
    parsed = []
    original = state_module.Schedule.from_values
    monkeypatch.setattr(state_module.Schedule, "from_values",
                        classmethod(lambda cls, *a, **k: parsed.append(1) or original(*a, **k)))
    outs, run = in_two_threads(order, x, txt)

    for key in ("A", "B"):
        branch = BRANCHES[key]
        skipped = run.state.branches[branch].skipped_steps
        assert skipped == ref.state.branches[branch].skipped_steps and skipped, key
        assert torch.equal(run.state.residual(branch), ref.state.residual(branch))
    assert all(torch.equal(outs[k], want[k]) for k in want)  # bit-identical, every call
    assert (run.state.calls, run.state.computed_calls) == (ref.state.calls, ref.state.computed_calls) == (
        24, 24 - 2 * len(ref.state.branches[BRANCHES["A"]].skipped_steps))
    assert len(parsed) == 1  # one parse for the run, though B's schedule is a new object at every call


def test_each_branch_keeps_its_residual_on_the_device_that_computes_it():
    """Thread B computes on another device ('meta' stands in for a second GPU: any mix of devices in
    one operation raises). Nothing is copied between devices, and each residual stays where it was made."""
    x, txt = inputs()
    x["B"], txt_b = x["B"].to("meta"), txt.to("meta")
    models, reps, run = fresh()
    barrier = threading.Barrier(2, timeout=20)
    errors = []

    def worker(me):
        try:
            for step in range(12):
                barrier.wait()
                call(run, reps, models[me], me, step, x[me], txt if me == "A" else txt_b, SIGMAS.clone(),
                     lambda key: barrier.wait() if key == HEAD else None)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(me,)) for me in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    a, b = (run.state.branches[BRANCHES[k]] for k in "AB")
    assert a.skipped_steps == b.skipped_steps and a.skipped_steps
    assert a.residual.device.type == "cpu" and b.residual.device.type == "meta"


def test_a_call_never_sees_another_runs_call():
    """Blocks of a run only act inside that run's own model call; a call of another run in the same
    thread (a nested model call) leaves them forwarding."""
    x, txt = inputs()
    models, reps, run = fresh()
    other = engine.Run(engine.Settings(flux.SPEC, CONFIG, "flux"))
    token = engine.CURRENT_CALL.set(engine.Call(other, "flux"))
    try:
        to = {"patches_replace": {"dit": reps}, "sample_sigmas": SIGMAS, "sigmas": SIGMAS[:1],
              "cond_or_uncond": [0], "uuids": ["c"], engine.RUN_KEY: run}
        plain = ToyFlux().forward(x["A"], txt, {})
        assert torch.equal(models["A"].forward(x["A"], txt, to), plain)
    finally:
        engine.CURRENT_CALL.reset(token)
    assert run.state.calls == 0 and other.state.calls == 0
