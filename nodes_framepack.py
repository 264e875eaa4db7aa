"""MagCache for kijai's ComfyUI-FramePackWrapper (FramePack, FramePack-F1): its FramePackMODEL in and out.

Registered whether or not the wrapper is installed: its input type can only be connected from the
wrapper's loaders, and given anything else the node says what it needs. The hooking is
model_patches/framepack.py."""
from __future__ import annotations

from comfy_api.latest import io

from .magcache import MagCacheConfig, list_profiles
from .magcache.profiles import check_name
from .magcache.text import show
from .model_patches import AUTO_CALIBRATE, node_text
from .model_patches.calibrate import profile_writer
from .model_patches.handle import CalibrationHandle
from .model_patches.framepack import FRAMEPACK, SCHEDULE, apply, transformer_of
from .model_patches.selfcal import SelfCalibration
from .nodes import (PROFILE_PREFIX, RATIOS, family_profile, profile_state, profiles_dir, settings_inputs,
                    window_inputs)

FRAMEPACK_MODEL = io.Custom("FramePackMODEL")
NEEDS = ("Needs kijai's ComfyUI-FramePackWrapper (its model loaders and FramePackSampler, with use_teacache "
         "off).")


class MagCacheFramePack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        profiles = [PROFILE_PREFIX + name for name in list_profiles(profiles_dir())]
        return io.Schema(
            node_id="MagCacheFramePack",
            display_name="MagCache (FramePack)",
            category="MagCache",
            description="MagCache for FramePack and FramePack-F1 sampled by FramePackSampler: skips the transformer "
                        "blocks on steps where the authors' calibrated magnitude ratios say the cached residual is "
                        "good enough, in every section. " + NEEDS,
            inputs=[
                FRAMEPACK_MODEL.Input("model", tooltip="The FramePackMODEL from the wrapper's (Down)Load FramePack "
                                                       "Model node; it is not modified."),
                io.Combo.Input("model_type", options=[*FRAMEPACK.presets, AUTO_CALIBRATE] + profiles,
                               default="framepack",
                               tooltip="The authors' table: 'framepack' (FramePackI2V_HY) or 'framepack_f1' "
                                       "(FramePack-F1). 'auto_calibrate' measures this model itself (fine-tunes): "
                                       "its first section computes every step and saves the ratios as a profile of "
                                       "this model, sampler and CFG, used from then on. 'profile:...' are saved "
                                       "calibrations."),
                *settings_inputs(0.10, 0.2, 3),
                *window_inputs(),
            ],
            outputs=[FRAMEPACK_MODEL.Output(tooltip="The model with MagCache, for FramePackSampler "
                                                    "(use_teacache off).")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_type=None, **kwargs):
        return profile_state(model_type)  # a profile edited or re-calibrated on disk is read again

    @classmethod
    def execute(cls, model, model_type: str, magcache_thresh: float, retention_ratio: float, magcache_K: int,
                start_step: int = 0, end_step: int = -1) -> io.NodeOutput:
        config = MagCacheConfig(thresh=magcache_thresh, retention_ratio=retention_ratio, K=magcache_K,
                                start_step=start_step, end_step=end_step)
        transformer_of(model)  # a FramePackMODEL, or an error saying what is needed
        preset, self_calibrate = model_type, None
        if model_type == AUTO_CALIBRATE:
            preset, self_calibrate = None, SelfCalibration(profiles_dir(), forced=True)
        elif model_type.startswith(PROFILE_PREFIX):
            preset = family_profile(model_type, FRAMEPACK.name, "MagCache (FramePack)")
        elif model_type not in FRAMEPACK.presets:
            raise ValueError(f"MagCache (FramePack): unknown model_type {show(model_type)}; use one of "
                             f"{', '.join(FRAMEPACK.presets)}, {AUTO_CALIBRATE} or a saved profile")
        if config.thresh == 0:
            node_text.show("MagCache: off (magcache_thresh is 0); the model is passed on unchanged")
            return io.NodeOutput(model)
        return io.NodeOutput(apply(model, config, preset, self_calibrate=self_calibrate))


class MagCacheFramePackCalibration(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagCacheFramePackCalibration",
            display_name="MagCache Calibration (FramePack)",
            category="MagCache",
            description="Measures the magnitude ratios of a FramePack model for your step count and sampler. Sample "
                        "normally with the returned model (nothing is skipped); after each section the ratios are "
                        "saved as a profile that MagCache (FramePack) lists as 'profile:<name>'. " + NEEDS,
            inputs=[
                FRAMEPACK_MODEL.Input("model", tooltip="The FramePackMODEL to calibrate."),
                io.Combo.Input("model_type", options=list(FRAMEPACK.presets), default="framepack",
                               tooltip="The authors' table the calibration is compared with in the plot."),
                io.String.Input("profile_name", default="my_framepack_calibration",
                                tooltip="Name of the profile to save (ComfyUI user folder, magcache/<name>.json); "
                                        "an existing profile of that name is replaced."),
            ],
            outputs=[
                FRAMEPACK_MODEL.Output(tooltip="The model, recording while it samples; its output is unchanged."),
                RATIOS.Output(display_name="ratios", tooltip="The calibration result, filled when the sampler has "
                                                             "run: connect it to MagCache Calibration Plot."),
            ],
        )

    @classmethod
    def execute(cls, model, model_type: str = "framepack",
                profile_name: str = "my_framepack_calibration") -> io.NodeOutput:
        name = check_name(profile_name)
        transformer_of(model)
        if model_type not in FRAMEPACK.presets:
            raise ValueError(f"MagCache Calibration (FramePack): model_type must be one of "
                             f"{', '.join(FRAMEPACK.presets)}, got {show(model_type)}")
        writer = profile_writer(FRAMEPACK, model_type, profiles_dir(), name, extra={"scheduler": SCHEDULE})
        handle = CalibrationHandle(FRAMEPACK, model_type, writer)
        return io.NodeOutput(apply(model, MagCacheConfig(thresh=0.0), model_type, calibrate=handle), handle)


FRAMEPACK_NODES = [MagCacheFramePack, MagCacheFramePackCalibration]
