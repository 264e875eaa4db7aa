"""A toy diffusion model whose forward mimics ComfyUI's Flux block loops: the same
patches_replace calling convention, text-first single stream, in-place block updates and
ControlNet additions between blocks. Its blocks do hand-checkable arithmetic and count calls."""
from __future__ import annotations

from collections import Counter

import torch
from comfyui_magcache.model_patches import engine


class ToyDouble:
    def __init__(self, i, calls):
        self.i, self.calls = i, calls

    def __call__(self, img, txt):
        self.calls[("double_block", self.i)] += 1
        img += 0.5 * torch.tanh(img) + 0.01 * (self.i + 1)  # in place, as Flux's DoubleStreamBlock
        return img, txt * 0.9 + img.mean(dim=1, keepdim=True)


class ToySingle:
    def __init__(self, i, calls):
        self.i, self.calls = i, calls

    def __call__(self, x):
        self.calls[("single_block", self.i)] += 1
        x += 0.1 * x.mean(dim=1, keepdim=True) + 0.02 * (self.i + 1)  # mixes text into image tokens
        return x


class ToyFlux:
    def __init__(self, n_double=2, n_single=3, image_first=False, img_slice=None):
        """image_first: the single stream is image tokens, then text (HunyuanVideo before ComfyUI
        0.33). img_slice: write transformer_options["img_slice"] as ComfyUI 0.33 does (True: the
        true [start, end]; a callable: (txt_len, total) -> what to write)."""
        self.image_first, self.img_slice = image_first, img_slice
        self.calls = Counter()
        self.double_blocks = [ToyDouble(i, self.calls) for i in range(n_double)]
        self.single_blocks = [ToySingle(i, self.calls) for i in range(n_single)]
        self.final_inputs = []

    def final_layer(self, img):
        self.final_inputs.append(img.clone())
        return img * 2.0

    def forward(self, img, txt, transformer_options, ref_latents=None, control=None, between=None):
        """Like Flux.forward_orig after the embeddings: img [B, n_img, C], txt [B, n_txt, C].
        between: called with the block key after each double block, as ControlNet runs between blocks."""
        to = transformer_options
        img = img.clone()
        if ref_latents is not None:
            img = torch.cat((img, ref_latents), dim=1)
        n_img = img.shape[1]
        reps = to.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.double_blocks):
            key = ("double_block", i)
            if key in reps:
                def wrap(args, block=block):
                    out = {}
                    out["img"], out["txt"] = block(args["img"], args["txt"])
                    return out
                out = reps[key]({"img": img, "txt": txt, "vec": None, "pe": None, "transformer_options": to},
                                {"original_block": wrap})
                img, txt = out["img"], out["txt"]
            else:
                img, txt = block(img, txt)
            if control is not None:
                img[:, :control.shape[1]] += control  # ControlNet adds in place between blocks
            if between is not None:
                between(key)
        img = torch.cat((img, txt) if self.image_first else (txt, img), 1)
        start = 0 if self.image_first else txt.shape[1]
        if self.img_slice is True:
            to["img_slice"] = [start, start + n_img]
        elif self.img_slice is not None:
            to["img_slice"] = self.img_slice(txt.shape[1], img.shape[1])
        for i, block in enumerate(self.single_blocks):
            key = ("single_block", i)
            if key in reps:
                out = reps[key]({"img": img, "vec": None, "pe": None, "transformer_options": to},
                                {"original_block": lambda args, block=block: {"img": block(args["img"])}})
                img = out["img"]
            else:
                img = block(img)
        img = img[:, start:start + n_img]
        return self.final_layer(img)[:, :n_img]


class ToyLayer(torch.nn.Module):
    """A block of a loop that never reads patches_replace (as Lumina 2's NextDiT.layers): called as
    layer(x, c) (not even handed transformer_options) and returns x; updates in place."""

    def __init__(self, i, calls):
        super().__init__()
        self.i, self.calls = i, calls
        self.scale = torch.nn.Parameter(torch.tensor(0.3 + 0.1 * i))

    def forward(self, x, c, transformer_options=None):
        self.calls[("layer", self.i)] += 1
        x += self.scale * torch.tanh(x + c) + 0.01 * (self.i + 1)
        return x


class ToyStack(torch.nn.Module):
    """A toy diffusion model with one ModuleList of blocks and no block replacements."""

    def __init__(self, n=4):
        super().__init__()
        self.calls = Counter()
        self.layers = torch.nn.ModuleList(ToyLayer(i, self.calls) for i in range(n))
        self.final_inputs = []

    def final_layer(self, x):
        self.final_inputs.append(x.clone())
        return x * 2.0

    def forward(self, img, txt, transformer_options, **kwargs):
        x = img.clone()
        c = txt.mean(dim=1, keepdim=True)
        for layer in self.layers:
            x = layer(x, c)
        return self.final_layer(x)


def toy_stack_spec():
    """A throwaway family reached by the block-list swap."""
    from comfyui_magcache.model_patches.spec import BlockGroup, FamilySpec

    return FamilySpec(name="Toy stack", model_classes=("toy_loop.ToyStack",),
                      groups=(BlockGroup("layer", "layers"),), presets=("wan2.1_t2v_1.3B",), hook="block_swap")


class ToyAV:
    """A loop like LTX-2's (av_model): block replacements whose "img" is a tuple (video, audio) of two
    streams that every block reads and writes together. The toy splits its input's tokens into the
    two streams and hands the final layer both, joined again (so its input is comparable to x).
    transformer_options["toy_perturbed_blocks"] (indices) perturbs those blocks, as LTX-2's STG pass
    perturbs self-attention: another function under the same branch keys."""

    def __init__(self, n=3, n_video=4):
        self.calls = Counter()
        self.n_video = n_video
        self.transformer_blocks = [self._block(i) for i in range(n)]
        self.final_inputs = []

    def _block(self, i):
        def block(vx, ax, perturbed=False):
            self.calls[("double_block", i)] += 1
            a2v = ax.mean(dim=1, keepdim=True)  # the streams see each other (audio-video cross attention)
            gain = -0.4 if perturbed else 0.4
            return vx + gain * torch.tanh(vx) + 0.1 * a2v + 0.01 * (i + 1), ax + 0.3 * torch.sin(ax) - 0.1 * vx.mean(dim=1, keepdim=True)
        return block

    def final_layer(self, x):
        self.final_inputs.append(x.clone())
        return x * 2.0

    def forward(self, img, txt, transformer_options, **kwargs):
        to = transformer_options
        vx, ax = img[:, :self.n_video].clone(), img[:, self.n_video:].clone() + txt.mean(dim=1, keepdim=True)
        reps = to.get("patches_replace", {}).get("dit", {})
        perturbed = to.get("toy_perturbed_blocks", ())
        for i, block in enumerate(self.transformer_blocks):
            p = i in perturbed
            if ("double_block", i) in reps:
                out = reps[("double_block", i)]({"img": (vx, ax), "transformer_options": to},
                                                 {"original_block": lambda a, block=block, p=p: {"img": block(*a["img"], p)}})
                vx, ax = out["img"]
            else:
                vx, ax = block(vx, ax, p)
        return self.final_layer(torch.cat((vx, ax - txt.mean(dim=1, keepdim=True)), dim=1))


class ToyKwDouble(torch.nn.Module):
    def __init__(self, i, calls):
        super().__init__()
        self.i, self.calls = i, calls

    def forward(self, image_tokens, image_tokens_masks=None, text_tokens=None, adaln_input=None, transformer_options=None):
        self.calls[("double", self.i)] += 1
        img = image_tokens + 0.4 * torch.tanh(image_tokens + text_tokens.mean(dim=1, keepdim=True)) + 0.01 * (self.i + 1)
        return img, text_tokens * 0.9 + image_tokens.mean(dim=1, keepdim=True)


class ToyKwSingle(torch.nn.Module):
    def __init__(self, i, calls):
        super().__init__()
        self.i, self.calls = i, calls

    def forward(self, image_tokens, image_tokens_masks=None, text_tokens=None, adaln_input=None, transformer_options=None):
        self.calls[("single", self.i)] += 1
        return image_tokens + 0.1 * image_tokens.mean(dim=1, keepdim=True) + 0.02 * (self.i + 1)


class ToyKw(torch.nn.Module):
    """A loop like HiDream's: no block replacements; blocks called with keywords. Double blocks take
    image_tokens and text_tokens (the initial text plus a per-block text) and return both; then one
    stream [image, text] with a per-block text appended for each single block and cut off after it."""

    def __init__(self, n_double=2, n_single=2):
        super().__init__()
        self.calls = Counter()
        self.double_stream_blocks = torch.nn.ModuleList(ToyKwDouble(i, self.calls) for i in range(n_double))
        self.single_stream_blocks = torch.nn.ModuleList(ToyKwSingle(i, self.calls) for i in range(n_single))
        self.final_inputs = []

    def final_layer(self, x):
        self.final_inputs.append(x.clone())
        return x * 2.0

    def forward(self, img, txt, transformer_options, **kwargs):
        hidden, initial = img.clone(), txt
        per_block = [txt * (0.5 + 0.1 * i) for i in range(len(self.double_stream_blocks) + len(self.single_stream_blocks))]
        n = 0
        for block in self.double_stream_blocks:
            hidden, initial = block(image_tokens=hidden, image_tokens_masks=None,
                                    text_tokens=torch.cat((initial, per_block[n]), dim=1), adaln_input=None,
                                    transformer_options=transformer_options)
            initial = initial[:, :txt.shape[1]]
            n += 1
        n_img = hidden.shape[1]
        hidden = torch.cat((hidden, initial), dim=1)
        length = hidden.shape[1]
        for block in self.single_stream_blocks:
            hidden = block(image_tokens=torch.cat((hidden, per_block[n]), dim=1), image_tokens_masks=None,
                           text_tokens=None, adaln_input=None, transformer_options=transformer_options)
            hidden = hidden[:, :length]
            n += 1
        return self.final_layer(hidden[:, :n_img])


def toy_av_spec():
    """A throwaway two-stream family (block replacements whose hidden state is a (video, audio) pair)."""
    from comfyui_magcache.model_patches.spec import BlockGroup, FamilySpec

    return FamilySpec(name="Toy audio-video", model_classes=("toy_loop.ToyAV",),
                      groups=(BlockGroup("double_block", "transformer_blocks"),), presets=("wan2.1_t2v_1.3B",))


def toy_kw_spec():
    """A throwaway family whose blocks take their hidden states as keywords (block-list swap)."""
    from comfyui_magcache.model_patches.spec import BlockGroup, FamilySpec

    return FamilySpec(name="Toy keywords", model_classes=("toy_loop.ToyKw",), presets=("wan2.1_t2v_1.3B",),
                      groups=(BlockGroup("double", "double_stream_blocks", outputs=("img", "txt"),
                                         swap_args=("image_tokens", "text_tokens")),
                              BlockGroup("single", "single_stream_blocks", image_tokens="first",
                                         swap_args=("image_tokens",))),
                      hook="block_swap")


def hook(spec, model, existing=None) -> dict:
    """Hook a spec into a toy model as apply() does into a ComfyUI model: the block-list swap sets
    the lists on the model (apply: an object patch), block replacements are returned for the loop."""
    if spec.hook == "block_swap":
        for attr, blocks in engine.swapped_lists(spec, model, engine.CachedBlock).items():
            setattr(model, attr, blocks)
        return {}
    return engine.replacements(spec, model, existing or {})


class Executor:
    """Stands in for ComfyUI's WrapperExecutor around the diffusion model's forward."""

    def __init__(self, fn):
        self.original = fn
        self.class_obj = getattr(fn, "__self__", None)

    def __call__(self, *args, **kwargs):
        return self.original(*args, **kwargs)


def sample(model, spec, config, sigmas, x, txt, cond_or_uncond=(1, 0), preset=None, existing=None,
           calls_per_step=None, options=None, **forward_kwargs):
    """Run one 'sampling run': every step calls the model once per call layout.
    options: further transformer_options per call layout (a guidance pass's perturbation).
    Returns (outputs per call, the run)."""
    reps = hook(spec, model, existing)
    run = engine.Run(engine.Settings(spec, config, preset))
    layouts = calls_per_step or [tuple(cond_or_uncond)]
    outs = []
    for s in sigmas[:-1]:
        for n, layout in enumerate(layouts):
            to = {"patches_replace": {"dit": reps}, "sample_sigmas": sigmas, "sigmas": torch.tensor([s]),
                  "cond_or_uncond": list(layout), "uuids": [f"uuid-{c}" for c in layout], engine.RUN_KEY: run,
                  **(options[n] if options else {})}
            b = x.shape[0] // len(cond_or_uncond)
            idx = [list(cond_or_uncond).index(c) for c in layout]
            xs = torch.cat([x[i * b:(i + 1) * b] for i in idx])
            ts = torch.cat([txt[i * b:(i + 1) * b] for i in idx])
            outs.append(engine.diffusion_model_wrapper(Executor(model.forward), xs, ts, to, **forward_kwargs))
    return outs, run


class ToyPatcher:
    """What the block-list swap's multi-GPU callback reads of a ComfyUI ModelPatcher: the model (a
    BaseModel-like holder of diffusion_model), its object patches and their backups."""

    def __init__(self, diffusion_model, object_patches=None):
        import types

        self.model = types.SimpleNamespace(diffusion_model=diffusion_model)
        self.object_patches = dict(object_patches or {})
        self.object_patches_backup = {}

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def device_copy(self, diffusion_model):
        """As ComfyUI's multi-GPU deep clone: another model, this patcher's object patches copied."""
        return ToyPatcher(diffusion_model, self.object_patches)
