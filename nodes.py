"""The pack's ComfyUI nodes (V3 API). Thin: validation and hooking live in magcache/ and model_patches/."""
from __future__ import annotations

import logging
import os

import folder_paths
import torch
from comfy_api.latest import io

from .magcache import MagCacheConfig, get_preset, list_profiles, load_profile
from .magcache.config import (END_STEP_RANGE, K_RANGE, RETENTION_RANGE, START_STEP_RANGE, THRESH_RANGE,
                              MagCacheConfigError)
from .magcache.plot import plot_calibration
from .magcache.profiles import ProfileError, check_name, fingerprint, profile_path
from .magcache.text import clip, show
from .model_patches import (
    ALL_SPECS,
    AUTO_CALIBRATE,
    MODEL_TYPES,
    SETTINGS_FROM,
    UnsupportedModel,
    engine,
    node_text,
    resolve,
    spec_for_model,
)
from .model_patches.calibrate import profile_writer
from .model_patches.compile import BACKENDS, MODES, apply_compile, compile_kwargs
from .model_patches.handle import CalibrationHandle, unwrap
from .model_patches.selfcal import SelfCalibration
from .nodes_compare import MagCacheCompare  # noqa: F401  (the pack's nodes, in one module for tests and tools)

log = logging.getLogger("MagCache")

# For the tooltips, from the registry: every family, and those without a published table.
FAMILIES = ", ".join(spec.name for spec in ALL_SPECS)
SELF_CALIBRATED = " and ".join(", ".join(s.name for s in ALL_SPECS if not s.has_tables).rsplit(", ", 1))

RATIOS = io.Custom("MAGCACHE_RATIOS")
PROFILE_PREFIX = "profile:"
# The original calibration node's model_type choices, and the table each one is compared with.
CALIBRATION_TYPES = {"auto": None, "chroma_calibration": "chroma", "flux_calibration": "flux",
                     "flux_kontext_calibration": "flux_kontext", "hunyuanvideo1.5": "hunyuan_video1.5",
                     "qwen_image": "qwen_image"}


def profiles_dir() -> str:
    return os.path.join(folder_paths.get_user_directory(), "magcache")


def diffusion_model(model):
    return unwrap(model.get_model_object("diffusion_model"))


def family_of(model):
    spec = spec_for_model(diffusion_model(model))
    if spec is None:  # resolve() words the error with the supported families
        resolve("auto", diffusion_model(model))
    return spec


def settings_inputs(thresh=0.06, retention=0.2, K=2):
    return [
        io.Float.Input("magcache_thresh", default=thresh, min=THRESH_RANGE[0], max=THRESH_RANGE[1], step=0.01,
                       tooltip="Error budget: higher skips more steps (faster, less faithful). "
                               "0 turns MagCache off and returns the model unchanged."),
        io.Float.Input("retention_ratio", default=retention, min=RETENTION_RANGE[0], max=RETENTION_RANGE[1],
                       step=0.01, tooltip="Fraction of the first steps that are always computed; they set the "
                                          "layout of the image."),
        io.Int.Input("magcache_K", default=K, min=K_RANGE[0], max=K_RANGE[1],
                     tooltip="Most consecutive steps that may be skipped. Lower it if quality drops."),
    ]


def window_inputs():
    return [
        io.Int.Input("start_step", default=0, min=START_STEP_RANGE[0], max=START_STEP_RANGE[1],
                     tooltip="First step on which skipping is allowed."),
        io.Int.Input("end_step", default=-1, min=END_STEP_RANGE[0], max=END_STEP_RANGE[1],
                     tooltip="Last step on which skipping is allowed; negative counts from the end "
                             "(-1 = the last step)."),
    ]


def settings_from_input():
    return io.Combo.Input(
        "settings_from", options=list(SETTINGS_FROM), default="auto", optional=True,
        tooltip="auto: where MagCache calibrates the model itself (the families without a published table, "
                f"{SELF_CALIBRATED}, and 'auto_calibrate'), thresh / retention / K come from the evidence rule on "
                "that model's own profile: retention 0.2, K 3 and the smallest thresh that skips half the steps "
                "(README 'Settings from evidence'; the run's summary names them); start_step / end_step still "
                "apply and thresh 0 still turns MagCache off. Everywhere else the inputs above are used. "
                "inputs: always use the inputs above.")


def check_settings_from(value, node: str = "MagCache") -> None:
    if value not in SETTINGS_FROM:
        raise MagCacheConfigError(f"{node}: settings_from must be one of {', '.join(SETTINGS_FROM)}, got {show(value)}")


def profile_state(model_type) -> str:
    """What changes when the profile a 'profile:...' model_type names is edited or replaced ('' otherwise)."""
    if isinstance(model_type, str) and model_type.startswith(PROFILE_PREFIX):
        try:
            path = profile_path(profiles_dir(), model_type[len(PROFILE_PREFIX):])
        except ProfileError:
            return "bad name"
        return "profile " + ":".join(map(str, fingerprint(path)))
    return ""


def family_profile(model_type: str, family: str, node: str = "MagCache"):
    """The table of the saved profile a 'profile:...' model_type names, which must be of `family`."""
    preset, meta = load_profile(profile_path(profiles_dir(), model_type[len(PROFILE_PREFIX):]))
    if meta["family"] != family:
        raise ProfileError(f"{node}: profile {show(model_type)} was calibrated on {clip(meta['family'])}, "
                           f"the loaded model is {family}; pick a profile of {family} or a preset")
    return preset


class MagCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Node id, input names, order, defaults and ranges are those of the original pack:
        # workflows saved with it load and run unchanged. Saved profiles are listed after the presets.
        profiles = [PROFILE_PREFIX + name for name in list_profiles(profiles_dir())]
        return io.Schema(
            node_id="MagCache",
            display_name="MagCache",
            category="MagCache",
            description="Skips the transformer blocks on steps where the calibrated magnitude ratios say "
                        "the cached residual is good enough. Put it after the model loader (or LoRA).",
            inputs=[
                io.Model.Input("model", tooltip=f"The diffusion model to accelerate, of a supported family: "
                                                f"{FAMILIES} (variants: README support matrix)."),
                io.Combo.Input("model_type", options=list(MODEL_TYPES) + profiles, default="wan2.1_t2v_1.3B",
                               tooltip="Which calibrated ratio table to use. 'auto' picks it from the loaded "
                                       "model and the run (Kontext and Qwen-Image-Edit by reference latents, "
                                       "the table calibrated nearest to the step count or video size, Wan size "
                                       "and I2V resolution, HunyuanVideo version); "
                                       "Wan2.2 A14B experts need wan2.2_t2v_14B / wan2.2_i2v_14B; "
                                       "'profile:...' are your saved calibrations. A table for another family "
                                       f"than the loaded model is an error. {SELF_CALIBRATED} have no "
                                       "published table: 'auto' computes every step of their first run, saves "
                                       "the measured ratios as a profile of that model, sampler and scheduler "
                                       "and uses it from the next run on; 'auto_calibrate' does the same on any "
                                       "model (fine-tunes, merges, distillations)."),
                *settings_inputs(),
                *window_inputs(),
                settings_from_input(),
                RATIOS.Input("ratios", optional=True,
                             tooltip="Optional: a calibration result from a MagCache Calibration node; when "
                                     "connected it replaces model_type's table (once its sampler has run)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with MagCache; the input model is not modified.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_type=None, **kwargs):
        # ComfyUI caches this node's output by its inputs; a profile edited or re-calibrated on disk
        # must be read again, so its file's state is part of the key.
        return profile_state(model_type)

    @classmethod
    def execute(cls, model, model_type: str, magcache_thresh: float, retention_ratio: float, magcache_K: int,
                start_step: int = 0, end_step: int = -1, ratios=None, settings_from: str = "auto") -> io.NodeOutput:
        # Everything is validated first, also with thresh 0: a workflow that is wrong fails now,
        # not later when the threshold is raised.
        check_settings_from(settings_from)
        config = MagCacheConfig(thresh=magcache_thresh, retention_ratio=retention_ratio, K=magcache_K,
                                start_step=start_step, end_step=end_step)
        if ratios is not None:
            spec = family_of(model)
            if ratios.spec is not spec:
                raise UnsupportedModel(f"MagCache: the connected calibration is for {ratios.spec.name}, the loaded "
                                       f"model is {spec.name}; calibrate this model, or disconnect 'ratios'")
            preset = ratios
        elif model_type.startswith(PROFILE_PREFIX):
            spec = family_of(model)
            preset = family_profile(model_type, spec.name)
        else:
            spec, preset = resolve(model_type, diffusion_model(model))
        self_calibrate = None
        if ratios is None and (model_type == AUTO_CALIBRATE or (model_type == "auto" and not spec.presets)):
            self_calibrate = SelfCalibration(profiles_dir(), forced=model_type == AUTO_CALIBRATE)
        if config.thresh == 0:
            node_text.show("MagCache: off (magcache_thresh is 0); the model is passed on unchanged")
            return io.NodeOutput(model)
        return io.NodeOutput(engine.apply(model, spec, config, preset, self_calibrate=self_calibrate,
                                          evidence_rule=settings_from == "auto"))


class MagCacheCalibration(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagCacheCalibration",
            display_name="MagCache Calibration",
            category="MagCache",
            description="Measures the magnitude ratios of a model for your step count, sampler and scheduler. "
                        "Sample normally with the returned model (nothing is skipped); at the end the ratios are "
                        "saved as a profile that the MagCache node lists as 'profile:<name>'.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to calibrate (any family MagCache supports)."),
                io.Combo.Input("model_type", options=list(CALIBRATION_TYPES), default="auto",
                               tooltip="The built-in table the calibration is compared with in the plot; 'auto' "
                                       "takes the one MagCache's 'auto' would use."),
                io.String.Input("profile_name", default="my_calibration",
                                tooltip="Name of the profile to save (ComfyUI user folder, magcache/<name>.json); "
                                        "an existing profile of that name is replaced."),
            ],
            outputs=[
                io.Model.Output(tooltip="The model, recording while it samples; its output is unchanged."),
                RATIOS.Output(display_name="ratios",
                              tooltip="The calibration result, filled when the sampler has run: connect it to "
                                      "MagCache's 'ratios' or to MagCache Calibration Plot."),
            ],
        )

    @classmethod
    def execute(cls, model, model_type: str = "auto", profile_name: str = "my_calibration") -> io.NodeOutput:
        name = check_name(profile_name)
        spec = family_of(model)
        reference = CALIBRATION_TYPES.get(model_type)
        if reference is not None and reference not in spec.presets:
            raise UnsupportedModel(f"MagCache calibration: model_type {show(model_type)} is for another family than "
                                   f"the loaded model ({spec.name}); use 'auto'")
        handle = CalibrationHandle(spec, reference, profile_writer(spec, reference, profiles_dir(), name))
        return io.NodeOutput(engine.apply(model, spec, MagCacheConfig(thresh=0.0), reference, calibrate=handle),
                             handle)


class MagCacheCalibrationPlot(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagCacheCalibrationPlot",
            display_name="MagCache Calibration Plot",
            category="MagCache",
            description="Draws a calibration's ratio curves per branch against the built-in table and marks the "
                        "steps these settings would skip.",
            inputs=[
                RATIOS.Input("ratios", tooltip="From a MagCache Calibration node."),
                *settings_inputs(0.06, 0.2, 2),
                io.Latent.Input("after", optional=True,
                                tooltip="Connect the calibration sampler's LATENT output, so the plot is drawn "
                                        "after the calibration run."),
            ],
            outputs=[io.Image.Output(tooltip="The plot.")],
        )

    @classmethod
    def execute(cls, ratios, magcache_thresh: float, retention_ratio: float, magcache_K: int,
                after=None) -> io.NodeOutput:
        if ratios.result is None:
            raise ValueError("MagCache Calibration Plot: the calibration has no result yet; connect 'after' to the "
                             "calibration sampler's LATENT output so it runs first")
        config = MagCacheConfig(thresh=magcache_thresh, retention_ratio=retention_ratio, K=magcache_K)
        name = ratios.info.get("reference") or ratios.reference
        picture = plot_calibration(ratios.result, config, get_preset(name) if name else None,
                                   title=f"MagCache calibration: {ratios.spec.name}, {ratios.result.steps} steps",
                                   round_half_up=ratios.spec.retention_round_half_up)
        return io.NodeOutput(torch.from_numpy(picture).float().div(255).unsqueeze(0))


class CompileModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # The original pack's node id and inputs, so its workflows load. Other packs (TeaCache) also
        # register 'CompileModel': do not install them together with this one.
        return io.Schema(
            node_id="CompileModel",
            display_name="Compile Model (MagCache)",
            category="MagCache",
            description="torch.compile for the transformer blocks (regional compilation), working with MagCache "
                        "in either order. The first run compiles (slow); later runs reuse it. Changes no global "
                        "torch setting.",
            inputs=[
                io.Model.Input("model", tooltip="The model to compile (any family MagCache supports)."),
                io.Combo.Input("mode", options=list(MODES), default="default",
                               tooltip="torch.compile mode. CUDA-graph modes (reduce-overhead, max-autotune) fall "
                                       "back to their no-CUDA-graph form on a non-CUDA device."),
                io.Combo.Input("backend", options=list(BACKENDS), default="inductor",
                               tooltip="torch.compile backend. inductor works on CPU (needs a C compiler) and GPU; "
                                       "cudagraphs needs a CUDA device."),
                io.Boolean.Input("fullgraph", default=False,
                                 tooltip="Require each block to compile as one graph (an error if it cannot; the "
                                         "model then runs uncompiled with a warning)."),
                io.Boolean.Input("dynamic", default=False,
                                 tooltip="Compile for varying shapes (fewer recompiles when the resolution changes, "
                                         "slower code)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with compiled blocks; the input model is not modified.")],
        )

    @classmethod
    def execute(cls, model, mode: str = "default", backend: str = "inductor", fullgraph: bool = False,
                dynamic: bool = False) -> io.NodeOutput:
        kwargs = compile_kwargs(mode, backend, fullgraph, dynamic, model.load_device)
        outer = model.get_model_object("diffusion_model")
        spec = family_of(model)
        prefix = "diffusion_model._orig_mod" if outer is not unwrap(outer) else "diffusion_model"
        return io.NodeOutput(apply_compile(model, spec, unwrap(outer), kwargs, prefix))
