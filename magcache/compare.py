"""How far a MagCache result is from the same seed sampled without it: PSNR, SSIM and an amplified
difference image, per frame of an image batch (a video's frames) and their mean.

Images are ComfyUI IMAGE tensors, (frames, height, width, channels) with values in 0..1. PSNR uses
a peak of 1; identical frames have no error and an infinite PSNR. SSIM is the usual one (Wang et
al. 2004: Gaussian window of 11 pixels, sigma 1.5, K1 0.01, K2 0.03, data range 1, over the pixels
where the whole window fits), per channel, averaged; the window shrinks to the image on images
smaller than 11 pixels. Both are computed in float64 on the images' device."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_AMPLIFY = 10.0
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
LISTED = 64  # per-frame figures written out in the text; the mean covers every frame


class CompareError(ValueError):
    """The two images cannot be compared (message names both shapes)."""


@dataclass(frozen=True)
class Comparison:
    psnr: tuple[float, ...]  # per frame, dB (inf: identical)
    ssim: tuple[float, ...]  # per frame
    difference: torch.Tensor  # |a - b| * amplify, clamped to 0..1, same shape as the inputs
    amplify: float

    @property
    def frames(self) -> int:
        return len(self.psnr)

    @property
    def mean_psnr(self) -> float:
        """PSNR of the whole batch's mean squared error (inf only if every frame is identical)."""
        mses = [10.0 ** (-p / 10.0) if math.isfinite(p) else 0.0 for p in self.psnr]
        mse = sum(mses) / len(mses)
        return math.inf if mse == 0 else -10.0 * math.log10(mse)

    @property
    def mean_ssim(self) -> float:
        return sum(self.ssim) / len(self.ssim)

    def text(self) -> str:
        """The figures in a few lines, as the node shows and logs them."""
        head = (f"MagCache Compare: PSNR {db(self.mean_psnr)}, SSIM {self.mean_ssim:.4f}"
                + (f" (mean of {self.frames} frames)" if self.frames > 1 else "")
                + f"; difference image: |a - b| x {self.amplify:g}")
        if self.frames == 1:
            return head
        n = min(self.frames, LISTED)
        more = f" ... ({self.frames - n} more)" if self.frames > n else ""
        return (head + "\nper frame PSNR: " + " ".join(db(p, unit=False) for p in self.psnr[:n]) + more
                + "\nper frame SSIM: " + " ".join(f"{s:.4f}" for s in self.ssim[:n]) + more)


def db(value: float, unit: bool = True) -> str:
    if math.isinf(value):
        return "inf (identical)" if unit else "inf"
    return f"{value:.2f} dB" if unit else f"{value:.2f}"


def _as_frames(image, what: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise CompareError(f"{what} must be an IMAGE (a tensor), got {type(image).__name__}")
    if image.ndim == 3:  # one frame without a batch axis
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] == 0 or image.shape[-1] not in (1, 3, 4):
        raise CompareError(f"{what} must be an IMAGE of shape (frames, height, width, channels), "
                           f"got {tuple(image.shape)}")
    return image


def _gaussian(size: int, sigma: float, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_per_frame(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame (frames, H, W, C) in 0..1; a tensor of `frames` values."""
    x = a.permute(0, 3, 1, 2).to(torch.float64)
    y = b.permute(0, 3, 1, 2).to(torch.float64)
    frames, channels, h, w = x.shape
    size = min(WINDOW, h, w)
    size = size if size % 2 == 1 else size - 1
    g = _gaussian(size, SIGMA, x.device)
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size)

    def blur(t):
        return torch.nn.functional.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = K1 ** 2, K2 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


def compare(reference, test, amplify: float = DEFAULT_AMPLIFY) -> Comparison:
    """Per-frame PSNR and SSIM of `test` against `reference`, and |reference - test| * amplify."""
    a, b = _as_frames(reference, "reference"), _as_frames(test, "test")
    if a.shape != b.shape:
        raise CompareError(f"the two images differ in shape: reference {tuple(a.shape)}, test {tuple(b.shape)} "
                           "(frames, height, width, channels); compare the same seed, size and frame count")
    if not (isinstance(amplify, (int, float)) and not isinstance(amplify, bool) and math.isfinite(amplify)
            and amplify > 0):
        raise CompareError(f"amplify must be a positive number, got {amplify!r}")
    b = b.to(a.device)
    diff = (a.to(torch.float64) - b.to(torch.float64))
    mse = diff.pow(2).mean(dim=(1, 2, 3))
    psnr = torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))
    ssim = ssim_per_frame(a, b)
    difference = (diff.abs() * amplify).clamp(0, 1).to(a.dtype)
    return Comparison(tuple(psnr.tolist()), tuple(ssim.tolist()), difference, float(amplify))
