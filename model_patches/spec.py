"""The declarative description of a model family: what a new family's spec file fills in."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

ArgGetter = Callable[[str], Any]  # name of a diffusion-model forward argument -> its value in this call


@dataclass(frozen=True)
class BlockGroup:
    """One ModuleList of transformer blocks, in execution order.

    kind: the block kind in patches_replace["dit"] keys, e.g. "double_block".
    attr: the ModuleList attribute on the diffusion model, e.g. "double_blocks".
    outputs: the keys a replacement returns for this kind, e.g. ("img", "txt").
    key: the one of `outputs` that holds the hidden state the cache skips ("img"; Kandinsky 5: "x").
        Its value may be a tuple of streams that run and are skipped together (LTX-2: (video, audio));
        each stream's residual is cached (magcache.streams), and image_tokens must then be "all".
    swap_args: hook "block_swap" only: the block's arguments that carry `outputs`, in order: keyword
        names for blocks called with keywords (HiDream: ("image_tokens", "text_tokens")), positions for
        blocks called positionally (FramePack: (0, 1), hidden and text states); the block then returns
        one value per output (a tuple for several). Empty: the block is called
        block(hidden, *args, **kwargs) and returns the hidden state.
    image_tokens: where the image tokens sit in args["img"]: "all" (image stream only), or, for a
        joint stream, the layout of ComfyUI versions that do not say it themselves: "last" (text
        tokens first, then image: Flux single blocks) or "first" (image first: HunyuanVideo before
        ComfyUI 0.33). Where ComfyUI writes transformer_options["img_slice"], that is used instead.
    skip_attr: optional attribute holding indices of this group that the model never runs
        (Chroma's skip_mmdit / skip_dit); those blocks are neither head nor tail.
    """

    kind: str
    attr: str
    outputs: tuple[str, ...] = ("img",)
    image_tokens: str = "all"
    skip_attr: Optional[str] = None
    key: str = "img"
    swap_args: tuple[Union[str, int], ...] = ()

    def __post_init__(self):
        if self.image_tokens not in ("all", "first", "last"):
            raise ValueError(f"image_tokens must be 'all', 'first' or 'last', got {self.image_tokens!r}")
        if self.key not in self.outputs:
            raise ValueError(f"{self.kind}: key {self.key!r} must be one of outputs {self.outputs}")
        if self.swap_args and len(self.swap_args) != len(self.outputs):
            raise ValueError(f"{self.kind}: swap_args {self.swap_args} must name one argument per output {self.outputs}")


def no_extras(latent: tuple, generator) -> dict:
    return {}


@dataclass(frozen=True)
class Fixture:
    """A tiny instance of the family, built from ComfyUI's own classes with random weights: what the
    integration tests, the benchmark and the server test sample. Sizes are ours, not the models'.

    name: the fixture's name in tests (tiny_model(name)).
    comfy_config: the class in comfy.supported_models that builds it.
    unet_config: its (tiny) config; bench: overrides for the benchmark's mid-size model;
        checkpoint: overrides that make a state dict ComfyUI's loader detects (server test), or None.
    latent: the latent shape sampled; for a model of several streams, one shape per stream (a tuple of
        shapes: the latent is sampled as a ComfyUI NestedTensor, e.g. LTX-2's (video, audio)).
    preset: the table 'auto' must pick for it; None for a family without tables (self-calibration).
    embed, final: the module whose output is the head's input, and the one whose first input is the
        hidden state after the blocks (tests check skipped output = head input + residual there). For
        several streams, final is a tuple naming one module per stream, in the order of the streams.
    tokens: how the embed output becomes the head's token layout (Wan: [B, C, T, H, W] -> [B, THW, C]).
    text_dim / pooled_dim / guidance: what the conditioning carries (pooled_output when pooled_dim).
    extras: (latent shape, torch.Generator) -> further conditioning keys (I2V images, VACE frames).
    slow: its loadable checkpoint is large (0.5B+): the server run is a slow test.
    head_input: optional; (diffusion model, put) -> hook handles that call put(tensor) with the head's
        input on every model call, for models where it is no single module's output (Lumina 2: the
        caption refiner's output and the noise refiner's, concatenated; LTX-2: a tuple, one tensor per
        stream). Replaces embed/tokens.
    settings: (thresh, retention, K) the tests use for a family without a table: ours, not published.
    text_pad: model_base pads the text to at least this many tokens (Flux.2: 512), so a negative prompt
        that must not batch with the positive needs more.
    """

    name: str
    comfy_config: str
    unet_config: Mapping[str, Any]
    latent: tuple[int, ...]
    preset: Optional[str]
    embed: str
    final: Union[str, tuple[str, ...]]
    text_dim: int = 64
    pooled_dim: Optional[int] = None
    guidance: Optional[float] = None
    tokens: Optional[Callable] = None
    extras: Callable[[tuple, Any], dict] = no_extras
    bench: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: Optional[Mapping[str, Any]] = None
    slow: bool = False
    head_input: Optional[Callable] = None
    settings: Optional[tuple] = None
    text_pad: int = 0


@dataclass(frozen=True)
class Example:
    """A workflow the pack ships for the family: examples/<file>, written by scripts/make_examples.py
    with its template of that name and these parameters (model files as ComfyUI's example pages name
    them; MagCache settings as the table's recommended ones). run: a fixture whose loadable
    checkpoint runs it end to end in the server test."""

    file: str
    template: str
    params: Mapping[str, Any] = field(default_factory=dict)
    run: Optional[str] = None


# The MagCache inputs the examples of a family without a published table show (ours: the evidence rule's
# retention and K, and the thresh it chose on the trained testbed); with settings_from 'auto' (the
# node's default) the rule sets all three on the model's own profile, and the note says so.
SELF_CALIBRATED_INPUTS = (0.12, 0.2, 3)
SELF_CALIBRATED_NOTE = (
    "With settings_from auto (the default) those runs take thresh / retention / K from the evidence rule on "
    "the profile: retention 0.2, K 3 and the smallest thresh that skips half the steps (the medians of the "
    "MagCache authors' recommended settings on their own tables; README 'Settings from evidence'), and the "
    "run's summary names them; the three inputs (0.12 / 0.2 / 3 here, ours) apply with settings_from inputs")

HOOKS = ("patches_replace", "block_swap")


@dataclass(frozen=True)
class FamilySpec:
    """A model family MagCache can patch.

    model_classes: qualified names of the ComfyUI diffusion-model classes ("comfy.ldm.flux.model.Flux");
        matched exactly, since subclasses may run other code between blocks.
    groups: the block lists, in execution order; the first block run is the head, the last the tail.
    presets: the ratio-table names valid for this family; the first is what 'auto' uses unless
        `variant` picks one.
    variant: optional; (diffusion model, forward-argument getter) -> the preset 'auto' uses.
    hint_maps: dict attributes of the model mapping a block index to extra blocks the forward runs
        between blocks, outside the block replacements (VACE's vace_layers_mapping); on skipped
        calls they read as empty, so those blocks are skipped too.
    compile_also: further ModuleLists of blocks that CompileModel compiles (VACE's vace_blocks).
    retention_round_half_up: the retention boundary is int(R*N + 0.5) (official Flux) instead of int(R*N).
    hook: how the blocks are reached. "patches_replace": ComfyUI's block replacements
        (patches_replace["dit"], for block loops that read them). "block_swap": for loops that do not
        (Lumina 2 / Z-Image, HiDream): an object patch on the clone puts in a ModuleList of the same
        blocks whose iteration hands each block out wrapped; each group's blocks are then called as
        block(hidden_state, *args, **kwargs) -> hidden_state.
    fixtures: tiny instances for the tests and the benchmark (every generic test runs on each).
    examples: the example workflows shipped for the family.
    accepts: optional; diffusion model -> whether this family takes that instance of its class. For
        classes that hold several families (ComfyUI loads Flux.1 and Flux.2 into one Flux class): a
        family that refuses a model is never matched to it, so its tables are never read on it.
    uncached_options: transformer_options keys that make a model call compute another function than
        the sampled model (LTX-2's STG pass perturbs self-attention, its modality-guidance pass cuts the
        audio-video cross-attention) while it carries the same branch keys (cond_or_uncond, uuids) as
        the unperturbed call. A call whose transformer_options hold any of them runs every block and
        neither reads, writes nor measures any branch's cache (one warning per run).
    sequence_parallel: optional; for raylight's sequence parallel (USP), which pads the cached stream's
        tokens at the end to a multiple of its degree and runs one contiguous chunk of them (dim 1) per
        rank: (diffusion model, forward-argument getter) -> that stream's token count before the split,
        or None when the call holds what the spec cannot count. Without it the family's runs under USP
        are not cached (one warning on every rank). Used only to leave the padding out of measurements.
    presets may be empty: a family without a published table ('auto' then self-calibrates).
    """

    name: str
    model_classes: tuple[str, ...]
    groups: tuple[BlockGroup, ...]
    presets: tuple[str, ...]
    variant: Optional[Callable[[Any, ArgGetter], str]] = None
    hint_maps: tuple[str, ...] = ()
    compile_also: tuple[str, ...] = ()
    retention_round_half_up: bool = False
    hook: str = "patches_replace"
    fixtures: tuple[Fixture, ...] = ()
    examples: tuple[Example, ...] = ()
    accepts: Optional[Callable[[Any], bool]] = None
    uncached_options: tuple[str, ...] = ()
    sequence_parallel: Optional[Callable[[Any, ArgGetter], Optional[int]]] = None

    def __post_init__(self):
        if self.hook not in HOOKS:
            raise ValueError(f"{self.name}: hook must be one of {', '.join(HOOKS)}, got {self.hook!r}")

    def __deepcopy__(self, memo):  # immutable; ComfyUI deep-copies model_options at every clone
        return self

    def takes(self, diffusion_model) -> bool:
        """Whether this family takes this model instance (its class matched already)."""
        return self.accepts is None or bool(self.accepts(diffusion_model))

    def uncached_by(self, transformer_options: dict) -> Optional[str]:
        """The first of uncached_options a model call's transformer_options hold, if any."""
        return next((k for k in self.uncached_options if k in transformer_options), None)

    @property
    def has_tables(self) -> bool:
        return bool(self.presets)

    def blocks(self, diffusion_model) -> list[tuple[BlockGroup, int]]:
        """Every (group, index) block this model instance runs, in execution order."""
        out = []
        for g in self.groups:
            never = set(getattr(diffusion_model, g.skip_attr, ()) or ()) if g.skip_attr else set()
            out += [(g, i) for i in range(len(getattr(diffusion_model, g.attr))) if i not in never]
        return out

    def auto_preset(self, diffusion_model, arg: ArgGetter) -> Optional[str]:
        """The table 'auto' reads; None for a family without tables (it self-calibrates)."""
        if self.variant is not None:
            return self.variant(diffusion_model, arg)
        return self.presets[0] if self.presets else None


def steps_of(arg: ArgGetter) -> int:
    """The run's step count, for variants that pick a table by calibrated step count."""
    to = arg("transformer_options") or {}
    sigmas = to.get("sample_sigmas")
    return len(sigmas) - 1 if sigmas is not None else 0


def nearest_steps(steps: int, names: tuple[str, ...]) -> str:
    """Of several tables of one model, the one calibrated for the step count nearest to the run's
    (a tie, or an unknown step count, takes the first listed)."""
    from ..magcache import get_preset

    if steps <= 0:
        return names[0]
    return min(names, key=lambda n: abs(get_preset(n).steps - steps))


def pixels(x, scale: int = 8) -> int:
    """Pixel area of a run from its latent (..., H, W), for a VAE with `scale`x spatial downsampling."""
    return x.shape[-2] * x.shape[-1] * scale * scale if x is not None else 0
