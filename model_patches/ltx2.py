"""LTX-2 (Lightricks, video and audio): comfy.ldm.lightricks.av_model.LTXAVModel (supported_models.LTXAV).

Its block loop (LTXAVModel._process_transformer_blocks, ComfyUI 0.8.0 and 0.33) reads
patches_replace["dit"][("double_block", i)] for every one of its `transformer_blocks` (48 in LTX-2 19B)
and hands the replacement {"img": (video tokens, audio tokens), ...}; it reads out["img"] back as the
pair. So the family is one group whose hidden state is two streams (magcache.streams): each stream's
residual is cached, both are skipped together (a block always runs both: the audio-video
cross-attention couples them), and the calibrated ratio is measured over all tokens of both streams.
The embeddings (patchify_proj, audio_patchify_proj) and both output heads (norm_out / proj_out,
audio_norm_out / audio_proj_out) run on skipped steps.

What could make the cache wrong, and what is done about it:
- Guidance passes under the cond's keys (ComfyUI 0.33's LTXVSpatioTemporalGuidance and
  LTXVModalityGuidance): a post-CFG function calls the model once more per step with the cond's
  cond_or_uncond and uuid, but with transformer_options["stg_self_attn_blocks"] (those blocks'
  self-attention perturbed) or a2v_cross_attn / v2a_cross_attn False (the audio-video
  cross-attention cut). The branch keys cannot tell that call from the cond call, so those keys are
  the spec's uncached_options: such a call runs every block and never reads, writes or measures a
  residual (one warning per run); the cond and uncond calls cache as without it. ComfyUI 0.8.0 has
  neither node (its blocks read a2v_cross_attn / v2a_cross_attn, nothing sets them).
- LTXVReferenceAudio's identity-guidance pass (0.33) calls the model with the cond's keys but its
  conditioning stripped of the reference audio: the audio stream is shorter by the reference tokens,
  so the cached residual never fits it (a residual is applied only to a hidden state of the same
  shape) and it is computed; the cond branch then computes too while that guidance is active. Never
  wrong, no speed-up there.
- Image-to-video and keyframe conditioning (LTXVImgToVideo, LTXVAddGuide: a denoise mask gives the
  conditioning frames their own per-token timestep; guide frames are appended as tokens, and with
  keyframes only the unmasked tokens enter the blocks): the WHOLE video stream is cached, guide and
  conditioning tokens included, as its token count entering the blocks. A call whose token count
  differs from the cached residual's is computed. The output heads re-apply each token's own
  timestep modulation on skipped steps.
- Video-only runs: a plain (not nested) video latent on this model gives an empty audio stream
  (0 tokens); its residual is empty, it contributes nothing to the ratios, and the video stream is
  cached as above. No ComfyUI node sets run_vx / run_ax (the blocks' switches for one stream only);
  an audio-only run therefore does not exist in either version.

Not covered: LTX-Video 0.9 (comfy.ldm.lightricks.model.LTXVModel). Its loop reads patches_replace too
and is one group on one stream, but it is another family (other weights, its own STG nodes in custom
packs) that this spec does not test; it stays refused at the node, like every class not listed.

There is NO published MagCache table for LTX-2: 'auto' self-calibrates on a model's first run."""
from .spec import SELF_CALIBRATED_INPUTS, SELF_CALIBRATED_NOTE, BlockGroup, Example, FamilySpec, Fixture


def head_input(dm, put) -> list:
    """Hooks that hand the head's input, (video tokens, audio tokens) after the patchify projections,
    to put(); the video projection runs first in _process_input, then the audio one."""
    video = {}

    def on_video(module, args, output):
        video["t"] = output.detach()

    def on_audio(module, args, output):
        put((video.pop("t"), output.detach()))

    return [dm.patchify_proj.register_forward_hook(on_video), dm.audio_patchify_proj.register_forward_hook(on_audio)]


# A tiny LTXAVModel (sizes ours): video 2 heads x 32, audio 2 heads x 16, 3 blocks; 128 latent channels
# per video token and 8 x 16 per audio token, as the real model's patchifiers give them. The text
# conditioning is the processed context (video half, audio half: 2 x caption_channels wide), what
# ComfyUI 0.8.0's LTX-2 text encoder gives; ComfyUI 0.33 passes such a context through unchanged.
TINY = dict(image_model="ltxav", num_layers=3, attention_head_dim=32, num_attention_heads=2, cross_attention_dim=64,
            audio_attention_head_dim=16, audio_num_attention_heads=2, audio_cross_attention_dim=32,
            caption_channels=32, in_channels=128, audio_in_channels=128, connector_attention_head_dim=16,
            connector_num_attention_heads=2, connector_num_layers=1)

# (video [B, 128, frames, H, W], audio [B, 8, audio frames, 16]): the NestedTensor LTXVConcatAVLatent makes.
LATENT = ((1, 128, 2, 4, 4), (1, 8, 6, 16))

# The benchmark's mid-size model (sizes ours; not run here): video 8 x 64, audio 8 x 32, 8 blocks; per
# stream its latent, the latent cells of one token (an audio token is all 16 frequency bins) and its width.
BENCH = dict(unet=dict(num_layers=8, attention_head_dim=64, num_attention_heads=8, cross_attention_dim=512,
                       audio_attention_head_dim=32, audio_num_attention_heads=8, audio_cross_attention_dim=256,
                       caption_channels=256, connector_attention_head_dim=64, connector_num_attention_heads=4),
             latent=((1, 128, 4, 16, 16), (1, 8, 40, 16)), patch=((1, 1, 1), (1, 16)), hidden=(512, 256), cfg=2.0,
             text_dim=512)
SPEC = FamilySpec(
    name="LTX-2",
    model_classes=("comfy.ldm.lightricks.av_model.LTXAVModel",),
    groups=(BlockGroup("double_block", "transformer_blocks", outputs=("img",), image_tokens="all"),),
    presets=(),  # no published table: self-calibration
    uncached_options=("stg_self_attn_blocks", "a2v_cross_attn", "v2a_cross_attn"),
    fixtures=(Fixture("ltx2", "LTXAV", TINY, LATENT, None, "patchify_proj", ("norm_out", "audio_norm_out"),
                      head_input=head_input, settings=(0.24, 0.2, 3), bench=BENCH),),
    examples=(Example("ltx2_t2v.json", "ltx2_t2v", dict(
        ckpt="ltx-2-19b-dev-fp8.safetensors", text_encoder="gemma_3_12B_it.safetensors", model_type="auto",
        settings=SELF_CALIBRATED_INPUTS, steps=20, cfg=4.0, size=(768, 512, 97), frame_rate=25,
        prompt="a jazz pianist plays in a dim club, close-up on the hands, a mellow saxophone in the background",
        negative="blurry, low quality, still frame, watermark",
        note="MagCache for LTX-2 (text to video with audio): there is no published MagCache table for LTX-2, so "
             "model_type auto self-calibrates: the first run of a model computes every step (output identical to "
             "no MagCache) and saves its ratios as a profile, later runs use it. The video and audio streams are "
             "skipped together. " + SELF_CALIBRATED_NOTE
             + ". STG / modality-guidance passes (ComfyUI 0.33) are computed in full. The video is saved as "
             "WebM and the sound as FLAC (on ComfyUI 0.33, CreateVideo + SaveVideo make one file with both). Files: "
             "models/checkpoints/ltx-2-19b-dev-fp8.safetensors (model, video VAE and audio VAE), "
             "models/text_encoders/gemma_3_12B_it.safetensors.")),),
)
