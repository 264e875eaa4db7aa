"""Hooks MagCache into a ComfyUI model through its official extension points only.

- Every transformer block gets a hook (CachedBlock): a replacement in patches_replace["dit"]
  (chained onto any replacement another node put there), or, for block loops that do not read
  those, a wrapper handed out by the block-list swap (swap.py). On a computed call the head clones its input and the tail
  stores tail-output minus head-input (image tokens) per branch; on a skipped call no block runs
  and the tail hands on head-input + cached residual.
- A DIFFUSION_MODEL wrapper marks the span of one model call (and picks the preset for 'auto'):
  it makes the call's Call and hands it to the blocks through a context variable, so what one call
  decides stays with that call. Each thread has its own context, so model calls running at the same
  time (MultiGPU CFG Split runs cond and uncond in parallel threads, sharing the run) never see
  each other's call; the run's shared state is changed under the run's lock.
- An OUTER_SAMPLE wrapper creates the run's state, logs one line at the end (also shown on the
  sampler node in the UI) and drops the state in a `finally`. Nothing is stored on the shared model; a family's hint maps (VACE) are swapped
  through object patches of the clone, which ComfyUI applies and undoes with the clone.

ComfyUI is imported only inside the functions that ComfyUI itself calls, so the block logic can be
driven by plain block loops in unit tests.
"""
from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Optional

import torch

from ..magcache import COND, Calibration, IncompleteCalibration, MagCacheConfig, Preset, RunState, get_preset, streams
from ..magcache import evidence
from ..magcache.text import clip
from . import calibrate, distributed, node_text, selfcal
from .handle import CalibrationHandle, unwrap
from .selfcal import MEASURING, Plan, SelfCalibration
from .spec import BlockGroup, FamilySpec
from .swap import CachedBlockList, SwappedBlock, install_swap, swapped_lists  # noqa: F401  (re-exported)

log = logging.getLogger("MagCache")

# The model call in progress in this thread (blocks, hint maps); set by diffusion_model_wrapper.
CURRENT_CALL: contextvars.ContextVar = contextvars.ContextVar("magcache_call", default=None)

SETTINGS_KEY = "magcache"  # transformer_options key of the node's Settings
RUN_KEY = "magcache_run"  # transformer_options key of the live Run during sampling
WRAPPER_KEY = "magcache"


@dataclass(frozen=True)
class Settings:
    """What the node leaves on its clone: immutable, so ComfyUI's deep copies can share it.

    preset: a preset name, a Preset (a profile), a CalibrationHandle (a calibration wired in), or
    None for 'auto' (the spec picks per call). calibrate: set by the calibration node: every step
    is computed and the residuals are recorded into this handle. self_calibrate: 'auto' on a family
    without tables, or 'auto_calibrate': each run uses this model's saved profile for its shape, or
    measures and saves it (selfcal.plan, once per run). evidence: a run on a self-calibrated profile takes
    thresh / retention / K from the evidence rule on that profile (magcache.evidence) instead of `config`."""

    spec: FamilySpec
    config: MagCacheConfig
    preset: object = None
    calibrate: Optional[CalibrationHandle] = None
    self_calibrate: Optional[SelfCalibration] = None
    evidence: bool = False

    def __deepcopy__(self, memo):
        return self


@dataclass
class Call:
    """What the head decided for one model call; only that call's thread sees it."""

    run: "Run"
    preset: object  # a preset name or a Preset
    to: Optional[dict] = None  # the model call's transformer_options, for blocks not handed them
    active: bool = False
    skip: bool = False
    step: int = -1
    keys: tuple = ()
    n_img: object = 0  # image tokens the head saw (several streams: a tuple)
    sp_tokens: Optional[int] = None  # raylight's USP: the cached stream's tokens before the split
    real: Optional[int] = None  # of this rank's n_img tokens, those that are not USP padding
    head_in: object = None  # computed call: clone of the head's input (streams.Hidden)
    skip_out: object = None  # skipped call: head input + cached residual


class Run:
    """One sampling run: the core state, shared by every model call of the run (also by calls
    running at the same time in other threads: state, calibration and tables change under `lock`)."""

    def __init__(self, settings: Settings, model_sigmas=None, plan: Optional[Plan] = None,
                 rule_config: Optional[MagCacheConfig] = None):
        self.settings = settings
        self.plan = plan
        config, self.handle = settings.config, settings.calibrate
        self.preset = settings.preset  # fixed for the run; None: 'auto'
        self.rule_config = None  # the evidence rule's settings on the profile, when they replace the node's
        if plan is not None and plan.preset is not None:  # self-calibration: this model's saved profile
            self.preset = plan.preset
            if rule_config is not None:
                config = self.rule_config = rule_config
        elif plan is not None:  # self-calibration: this run measures (every step computed)
            config, self.handle = MagCacheConfig(thresh=0.0), plan.handle
        self.state = RunState(config, settings.spec.retention_round_half_up, model_sigmas)
        self.lock = threading.Lock()  # taken twice per model call (head, tail), never per block
        self.auto_variant: Optional[str] = None
        self.last_preset = None  # the table the last model call read
        self.calibration = Calibration() if self.handle is not None else None
        if isinstance(self.preset, CalibrationHandle):
            handle = self.preset
            self.preset = handle.result.preset("calibration") if handle.result is not None else None
            if self.preset is None:
                self.state.disable("the connected calibration has no result yet (its sampler has not run)")
        self._tables: dict = {}
        self.layout: Optional[distributed.Layout] = None  # what this rank holds of a call; at the first call

    def disable(self, reason: str) -> None:
        """Caching off for the rest of the run, said once at its end; safe from any model call's thread."""
        with self.lock:
            self.state.disable(reason)

    def tables(self, preset, steps: int):
        """The call's table for `steps` steps. A table the node named follows its declared switch
        (Preset.chosen: hunyuan_video1.5 above 20 steps, as the original pack); the run report names
        the table read. 'auto' (self.preset None) has picked its table already."""
        table = preset if isinstance(preset, Preset) else get_preset(preset)
        if self.preset is not None:
            table = table.chosen(steps)
        key = (table.name, table.ratios if isinstance(preset, Preset) else None, steps)
        if key not in self._tables:
            self._tables[key] = table.tables(steps)
        return self._tables[key]


def branch_keys(transformer_options: dict) -> tuple:
    cou = transformer_options.get("cond_or_uncond")
    if not cou:
        return ((COND, 0),)
    uuids = transformer_options.get("uuids")
    if not uuids or len(uuids) != len(cou):
        uuids = [None] * len(cou)
    return tuple((int(c), u if u is not None else i) for i, (c, u) in enumerate(zip(cou, uuids)))


ALL = slice(None)  # every token of every stream is an image token


def image_slice(group: BlockGroup, to: dict, total, n_img) -> Optional[slice]:
    """Where the n_img image tokens the head saw sit among the `total` tokens of this group's stream.

    ComfyUI's word first: `transformer_options["img_slice"]` ([start, end]) where it writes one
    (Flux, Chroma, HunyuanVideo since ComfyUI 0.33 put it before their single blocks); otherwise the
    spec's layout for older versions. The token counts must add up, or None: the layout is not
    established and no residual may be measured or applied on it. Several streams (token counts are
    tuples) are only ever whole: ALL."""
    if group.image_tokens == "all":
        return ALL if total is not None and total == n_img else None
    if not isinstance(total, int) or not isinstance(n_img, int):
        return None
    given = to.get("img_slice")
    if given is not None:
        try:
            start, end = int(given[0]), int(given[1])
        except (TypeError, ValueError, IndexError):
            return None
    elif group.image_tokens == "last":
        start, end = total - n_img, total
    else:
        start, end = 0, n_img
    return slice(start, end) if 0 <= start and end <= total and end - start == n_img else None


def with_image_tokens(x, where: slice, img):
    if where is ALL or (where.start == 0 and where.stop == x.shape[1]):
        return img
    return torch.cat((x[:, :where.start], img, x[:, where.stop:]), dim=1)


def image_tokens(x, where: slice):
    return x if where is ALL else x[:, where]


def layout_problem(group: BlockGroup, to: dict, total: int, n_img: int) -> str:
    return (f"cannot tell where the {n_img} image tokens are among the {total} tokens of the {group.kind} stream "
            f"(img_slice {to.get('img_slice')!r}, expected layout '{group.image_tokens}')")


class CachedBlock:
    """The hook of one block: a patches_replace["dit"] entry, or what a SwappedBlock calls. Outside a
    MagCache run it only forwards."""

    def __init__(self, group: BlockGroup, is_head: bool, is_tail: bool, inner=None):
        self.group, self.is_head, self.is_tail, self.inner = group, is_head, is_tail, inner

    def refuse(self, to: dict, reason: str) -> None:
        """Caching off for the run of this call (one warning at the end), e.g. a block called in a way
        its spec does not declare. Blocks handed no transformer_options (FramePack's) use the call's."""
        call = CURRENT_CALL.get()
        run = (to or (call.to if call is not None else None) or {}).get(RUN_KEY)
        if run is not None:
            run.disable(reason)

    def compute(self, args: dict, extra: dict) -> dict:
        if self.inner is not None:  # another node's replacement at this key: keep it in the chain
            return self.inner(args, extra)
        return extra["original_block"](args)

    def __call__(self, args: dict, extra: dict) -> dict:
        call: Optional[Call] = CURRENT_CALL.get()
        to = args.get("transformer_options") or (call.to if call is not None else None) or {}
        run: Optional[Run] = to.get(RUN_KEY)
        if run is None or call is None or call.run is not run:
            return self.compute(args, extra)
        key = self.group.key
        if self.is_head:
            self.begin(run, call, args[key], to)
        if call.active and call.skip:
            out = {k: args[k] for k in self.group.outputs}
            if self.is_tail:
                call.active = False
                total = streams.tokens(args[key])
                where = image_slice(self.group, to, total, call.n_img)
                if where is None:  # not after a computed call of this branch confirmed the layout; never guess
                    run.disable(layout_problem(self.group, to, total, call.n_img))
                else:
                    out[key] = with_image_tokens(args[key], where, call.skip_out)
            return out
        out = self.compute(args, extra)
        if self.is_tail and call.active:
            total = streams.tokens(out[key])
            where = image_slice(self.group, to, total, call.n_img)
            if where is None:
                run.disable(layout_problem(self.group, to, total, call.n_img))
                call.active, call.head_in = False, None
            else:
                self.finish(run, call, image_tokens(out[key], where))
        return out

    @staticmethod
    def begin(run: Run, call: Call, img, to: dict) -> None:
        call.active = call.skip = False
        call.head_in = call.skip_out = None
        state = run.state
        keys = branch_keys(to)
        sigmas = to.get("sigmas")
        n_img = streams.tokens(img)
        if n_img is None:
            run.disable("the blocks' hidden state is not a [batch, tokens, channels] tensor (or one per stream)")
            return
        with run.lock:
            sched = state.schedule(to.get("sample_sigmas"))
        layout = run.layout or distributed.SINGLE
        mine = layout.local_keys(keys)  # raylight's CFG split: this rank's rows are one branch of the call
        if sched is None or sigmas is None or mine is None or streams.batch(img) % len(mine):
            return
        if layout.split:
            call.real = layout.valid_tokens(call.sp_tokens, n_img)
            if call.real is None:  # shapes are the same on every rank: all switch off together
                run.disable(f"{n_img} tokens on this rank are not raylight's chunk of {call.sp_tokens}")
                return
        step = sched.global_step(float(sigmas.reshape(-1)[0]))  # the one scalar read per model call
        b = streams.batch(img) // len(mine)
        with run.lock:
            fits = [state.fits(k, streams.rows(img, i * b, (i + 1) * b)) for i, k in enumerate(mine)]
            if mine is not keys:  # every branch of the call is decided as one process does, from the table
                fits = [all(fits)] * len(keys)
            call.skip = state.decide(step, sched.total, run.tables(call.preset, sched.total), keys, fits)
            res = [state.residual(k) for k in mine] if call.skip else None
        call.active, call.keys, call.n_img, call.step = True, mine, n_img, step
        if call.skip:
            call.skip_out = streams.add(img, streams.cat_rows(res))
        else:
            # blocks update their input in place (Flux: img += ...); contiguous so the residual
            # arithmetic does not mix layouts with the blocks' contiguous outputs (Wan passes a transposed view)
            call.head_in = streams.clone(img)

    @staticmethod
    def finish(run: Run, call: Call, img_out) -> None:
        residual = streams.sub(img_out, call.head_in)  # on the device that computed it, and stays there
        b = streams.batch(residual) // len(call.keys)
        with run.lock:
            for i, k in enumerate(call.keys):
                chunk = streams.rows(residual, i * b, (i + 1) * b)
                run.state.store(k, chunk)
                if run.calibration is not None:  # USP: this rank's real tokens (no padding)
                    real = chunk if call.real in (None, call.n_img) else chunk[:, :call.real]
                    run.calibration.record(k, call.step, real)
        call.head_in = None
        call.active = False


class SkippedCallsSeeEmpty(dict):
    """A hint map (block index -> extra blocks) that reads as empty during a skipped model call."""

    def get(self, key, default=None):
        call = CURRENT_CALL.get()
        if call is not None and call.active and call.skip:
            return default
        return super().get(key, default)


def _find_transformer_options(args, kwargs) -> Optional[dict]:
    to = kwargs.get("transformer_options")
    if isinstance(to, dict):
        return to
    for a in reversed(args):
        if isinstance(a, dict) and ("sigmas" in a or "patches_replace" in a or RUN_KEY in a):
            return a
    return None


def diffusion_model_wrapper(executor, *args, **kwargs):
    """Marks one model call; blocks called outside it (or outside a run) only forward."""
    to = _find_transformer_options(args, kwargs)
    run: Optional[Run] = to.get(RUN_KEY) if to is not None else None
    if run is None:
        return executor(*args, **kwargs)
    settings = run.settings
    perturbed = settings.spec.uncached_by(to)
    if perturbed is not None:  # another function under the same branch keys: its blocks only forward (no Call)
        with run.lock:
            run.state.warn_once(perturbed, "MagCache: model calls with transformer_options[%r] (another function than "
                                "the sampled model under the cond's keys) run every block, outside the cache", perturbed)
        return executor(*args, **kwargs)
    bound = None

    def arg(name):
        nonlocal bound
        if bound is None:
            try:
                bound = inspect.signature(executor.original).bind_partial(*args, **kwargs).arguments
            except (TypeError, ValueError):
                bound = kwargs
        return bound.get(name, kwargs.get(name))

    model = getattr(executor, "class_obj", None)
    if run.layout is None:  # once per run, the same on every rank: raylight's layout or a single process
        layout = distributed.detect(settings.spec, unwrap(model), to) if model is not None else distributed.SINGLE
        if layout.problem is not None:
            run.disable(layout.problem)
        run.layout = layout
    preset = run.preset
    if preset is None:
        preset = settings.spec.auto_preset(model, arg)
        if preset is None:  # a family without tables: only ever measured (self-calibration, calibration node)
            preset = MEASURING
        # A variant seen once holds for the whole run: Kontext's reference latents may sit on the
        # positive only, and its uncond calls must still read the Kontext table. (With a step's calls
        # in parallel threads, an uncond call of the first step may start before the cond call sets
        # it: harmless, a branch's first call never skips, having no residual, and its accumulators
        # restart after it, so the table it read does not count.)
        if preset != (settings.spec.presets[0] if settings.spec.presets else MEASURING):
            run.auto_variant = preset
        preset = run.auto_variant or preset
    run.last_preset = preset
    call = Call(run, preset, to)
    if run.layout.sp_degree > 1 and run.layout.problem is None:
        call.sp_tokens = settings.spec.sequence_parallel(unwrap(model), arg)
    token = CURRENT_CALL.set(call)
    try:
        return executor(*args, **kwargs)
    finally:
        CURRENT_CALL.reset(token)


def outer_sample_wrapper(executor, *args, **kwargs):
    """Fresh state for every sampling run, released in a finally (also on interrupt)."""
    import comfy.model_patcher

    guider = executor.class_obj
    orig = guider.model_options
    settings: Optional[Settings] = orig.get("transformer_options", {}).get(SETTINGS_KEY)
    if settings is None:
        return executor(*args, **kwargs)
    sampling = guider.model_patcher.get_model_object("model_sampling")
    model_sigmas = getattr(sampling, "sigmas", None)
    sigmas = selfcal.sigmas_of(args, kwargs)
    run = new_run(settings, model_sigmas.tolist() if model_sigmas is not None else None,  # once per run
                  lambda: selfcal.plan(settings.spec, settings.self_calibrate, guider, args, kwargs, sampling),
                  steps=len(sigmas) - 1 if sigmas is not None else None)
    guider.model_options = comfy.model_patcher.create_model_options_clone(orig)
    guider.model_options["transformer_options"][RUN_KEY] = run
    completed = False
    try:
        out = executor(*args, **kwargs)
        completed = True
        return out
    finally:
        end_run(run, completed, lambda: {"sampler": selfcal.sampler_name(args, kwargs), "model_sampling": sampling,
                                         "sigmas": selfcal.sigmas_of(args, kwargs)})
        guider.model_options = orig


def new_run(settings: Settings, model_sigmas, planner, steps: Optional[int] = None) -> Run:
    """A run's state. planner() -> its self-calibration Plan (this model's profile for the run's shape, or a
    handle that measures it), asked for when the settings self-calibrate; if it fails, caching is off for
    the run (said once), the generation is never lost to it. steps: the run's step count (its sigmas), for
    the evidence rule."""
    plan, failure = None, None
    if settings.self_calibrate is not None and settings.calibrate is None:
        try:
            plan = planner()
        except Exception as e:
            log.exception("MagCache: self-calibration could not start")
            plan = Plan("", preset=MEASURING)
            failure = f"self-calibration could not start: {clip(str(e).splitlines()[0] if str(e) else type(e).__name__, 200)}"
    rule_config = None
    if settings.evidence and steps and plan is not None and plan.preset not in (None, MEASURING):
        try:
            rule_config = evidence.evidence_config(plan.preset, steps, settings.config)
        except Exception as e:  # the rule on a broken profile: caching off, the generation goes on
            log.exception("MagCache: the evidence rule failed on this model's profile")
            plan = Plan("", preset=MEASURING)
            failure = f"the evidence rule failed: {clip(str(e).splitlines()[0] if str(e) else type(e).__name__, 200)}"
    run = Run(settings, model_sigmas, plan, rule_config)
    if failure is not None:
        run.state.disable(failure)
    return run


def end_run(run: Run, completed: bool, info) -> None:
    """A run's end: its calibration saved (info() -> its sampler, model_sampling and sigmas), only from a run
    that completed (interrupt, OOM: nothing), or its summary logged, either shown on the executing node (the
    sampler) in the UI when a server runs; then its residuals dropped."""
    if run.calibration is not None:
        node_text.show(finish_calibration(run, info()) if completed else calibrate.stopped(run))
    else:
        report = run_report(run)
        log.info(report)
        node_text.show(report)
    with run.lock:
        run.state.release()


def run_report(run: Run) -> str:
    """The run's summary line and the table it read, e.g. 'MagCache: skipped 9/20 steps (cond 9, uncond 9),
    est. 1.8x, table flux'; a run with caching off says why."""
    line = run.state.summary()  # names the tables the run read (RunState.table_names)
    rule = run.rule_config
    if rule is not None and run.state.disabled_reason is None:
        line += f" (evidence rule: thresh {rule.thresh:g} / retention {rule.retention_ratio:g} / K {rule.K})"
    return line


def finish_calibration(run: Run, info: dict) -> str:
    """Hand the run's curves to the calibration handle and return what happened, for the UI. A failure
    is logged and reported, never raised, so the generation itself is never lost to it. info: the run's
    sampler, model_sampling and sigmas, for the profile's record."""
    sched = run.state.current_schedule
    try:
        layout = run.layout or distributed.SINGLE
        reduce = (lambda sums: distributed.all_reduce(layout, sums)) if layout.groups else None
        result = run.calibration.result(sched.steps, sched.offset, reduce) if sched is not None else None
        if result is None:
            log.warning("MagCache calibration: nothing was recorded in this run")
            return "MagCache calibration: nothing was recorded in this run, no profile was saved"
        handle = run.handle
        handle.finish(result, dict(info, offset=sched.offset, total=sched.total, preset=run.last_preset))
        return handle.info.get("message") or f"MagCache calibration: measured {result.steps} steps"
    except IncompleteCalibration as e:  # a step never measured (caching switched off part-way): nothing made up
        message = f"MagCache calibration: the profile was NOT saved: {e}"
        log.warning(message)
        return message
    except Exception as e:
        log.exception("MagCache calibration: the result could not be saved")
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"MagCache calibration: the profile was NOT saved: {clip(first, 300)}"
    finally:
        run.calibration.release()


def replacements(spec: FamilySpec, diffusion_model, existing: dict) -> dict:
    """patches_replace["dit"] entries for every block; `existing` entries (another node's) are chained."""
    blocks = spec.blocks(diffusion_model)
    out = {}
    for n, (group, i) in enumerate(blocks):
        inner = existing.get((group.kind, i))
        if isinstance(inner, CachedBlock):  # MagCache applied twice: the newer settings replace the older
            inner = inner.inner
        out[(group.kind, i)] = CachedBlock(group, n == 0, n == len(blocks) - 1, inner)
    return out


def apply(model, spec: FamilySpec, config: MagCacheConfig, preset=None, calibrate: Optional[CalibrationHandle] = None,
          self_calibrate: Optional[SelfCalibration] = None, evidence_rule: bool = False):
    """Return a clone of the ModelPatcher `model` with MagCache hooked in; `model` is not touched.
    evidence_rule: runs on a self-calibrated profile take their settings from the evidence rule."""
    from comfy.patcher_extension import WrappersMP

    model = model.clone()
    dm = model.get_model_object("diffusion_model")
    prefix = "diffusion_model._orig_mod" if dm is not unwrap(dm) else "diffusion_model"
    if spec.hook == "block_swap":  # a list already swapped by MagCache is replaced: newer settings win
        install_swap(model, spec, unwrap(dm), prefix, CachedBlock, WRAPPER_KEY)  # + the split's device copies
    else:
        existing = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        for (kind, i), patch in replacements(spec, unwrap(dm), existing).items():
            model.set_model_patch_replace(patch, "dit", kind, i)
    for attr in spec.hint_maps:
        current = getattr(unwrap(dm), attr)
        if not isinstance(current, SkippedCallsSeeEmpty):
            model.add_object_patch(f"{prefix}.{attr}", SkippedCallsSeeEmpty(current))
    model.model_options["transformer_options"][SETTINGS_KEY] = Settings(spec, config, preset, calibrate, self_calibrate, evidence_rule)
    for kind, fn in ((WrappersMP.OUTER_SAMPLE, outer_sample_wrapper),
                     (WrappersMP.DIFFUSION_MODEL, diffusion_model_wrapper)):
        model.remove_wrappers_with_key(kind, WRAPPER_KEY)
        model.add_wrapper_with_key(kind, WRAPPER_KEY, fn)
    return model
