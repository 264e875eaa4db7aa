"""The pack's ComfyUI nodes (V3 API). Thin: validation and hooking live in magcache/ and model_patches/."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .magcache import MagCacheConfig
from .magcache.config import END_STEP_RANGE, K_RANGE, RETENTION_RANGE, START_STEP_RANGE, THRESH_RANGE
from .model_patches import MODEL_TYPES, available_specs, engine, resolve


class MagCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Node id, input names, order, defaults and ranges are those of the original pack:
        # workflows saved with it load and run unchanged.
        return io.Schema(
            node_id="MagCache",
            display_name="MagCache",
            category="MagCache",
            description="Skips the transformer blocks on steps where the calibrated magnitude ratios say "
                        "the cached residual is good enough. Put it after the model loader (or LoRA).",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate: Flux, Flux-Kontext, Chroma, "
                                                "HunyuanVideo (1, 1.5), Wan2.1/2.2 (T2V, I2V, VACE) or Qwen-Image."),
                io.Combo.Input("model_type", options=list(MODEL_TYPES), default="wan2.1_t2v_1.3B",
                               tooltip="Which calibrated ratio table to use. 'auto' picks it from the loaded "
                                       "model (Kontext, Wan size and I2V resolution, HunyuanVideo version); "
                                       "Wan2.2 A14B experts need wan2.2_t2v_14B / wan2.2_i2v_14B. A preset "
                                       "for another family than the loaded model is an error."),
                io.Float.Input("magcache_thresh", default=0.06, min=THRESH_RANGE[0], max=THRESH_RANGE[1], step=0.01,
                               tooltip="Error budget: higher skips more steps (faster, less faithful). "
                                       "0 turns MagCache off and returns the model unchanged."),
                io.Float.Input("retention_ratio", default=0.2, min=RETENTION_RANGE[0], max=RETENTION_RANGE[1],
                               step=0.01, tooltip="Fraction of the first steps that are always computed; they "
                                                  "set the layout of the image."),
                io.Int.Input("magcache_K", default=2, min=K_RANGE[0], max=K_RANGE[1],
                             tooltip="Most consecutive steps that may be skipped. Lower it if quality drops."),
                io.Int.Input("start_step", default=0, min=START_STEP_RANGE[0], max=START_STEP_RANGE[1],
                             tooltip="First step on which skipping is allowed."),
                io.Int.Input("end_step", default=-1, min=END_STEP_RANGE[0], max=END_STEP_RANGE[1],
                             tooltip="Last step on which skipping is allowed; negative counts from the end "
                                     "(-1 = the last step)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with MagCache; the input model is not modified.")],
        )

    @classmethod
    def execute(cls, model, model_type: str, magcache_thresh: float, retention_ratio: float, magcache_K: int,
                start_step: int = 0, end_step: int = -1) -> io.NodeOutput:
        if magcache_thresh == 0:
            return io.NodeOutput(model)
        config = MagCacheConfig(thresh=magcache_thresh, retention_ratio=retention_ratio, K=magcache_K,
                                start_step=start_step, end_step=end_step)
        spec, preset = resolve(model_type, engine.unwrap(model.get_model_object("diffusion_model")))
        return io.NodeOutput(engine.apply(model, spec, config, preset))


class MagCacheExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        available_specs()  # logs, once, any family whose model class this ComfyUI lacks
        return [MagCache]


async def comfy_entrypoint() -> MagCacheExtension:
    return MagCacheExtension()
