"""The compare maths (magcache/compare.py): PSNR, SSIM, the amplified difference, per frame and mean."""
import math

import pytest
import torch
from comfyui_magcache.magcache.compare import CompareError, compare, ssim_per_frame


def flat(value, frames=1, h=16, w=16, c=3):
    return torch.full((frames, h, w, c), float(value))


def test_identical_images_have_no_error():
    img = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    got = compare(img, img.clone())
    assert got.psnr == (math.inf, math.inf) and got.mean_psnr == math.inf
    assert got.ssim == pytest.approx((1.0, 1.0)) and torch.count_nonzero(got.difference) == 0
    assert got.text().startswith("MagCache Compare: PSNR inf (identical), SSIM 1.0000 (mean of 2 frames)")


def test_psnr_and_ssim_of_a_known_offset():
    got = compare(flat(0.5), flat(0.6))
    assert got.psnr[0] == pytest.approx(20.0)  # MSE 0.01, peak 1
    # constant images: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), the structure term is C2 / C2
    c1 = 0.01 ** 2
    assert got.ssim[0] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1))
    assert torch.allclose(got.difference, torch.full_like(got.difference, 1.0))  # 0.1 x 10
    assert torch.allclose(compare(flat(0.5), flat(0.52), amplify=10).difference, torch.full((1, 16, 16, 3), 0.2))
    assert "|a - b| x 10" in got.text() and "PSNR 20.00 dB" in got.text()


def test_more_noise_is_lower_psnr_and_ssim():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 32, 32, 3, generator=g)
    noise = torch.randn(1, 32, 32, 3, generator=g)
    small, large = compare(img, (img + 0.02 * noise).clamp(0, 1)), compare(img, (img + 0.2 * noise).clamp(0, 1))
    assert small.psnr[0] > large.psnr[0] > 0 and 1 > small.ssim[0] > large.ssim[0]


def test_per_frame_figures_and_their_mean():
    ref = torch.cat([flat(0.5), flat(0.5), flat(0.5)])
    test = torch.cat([flat(0.5), flat(0.6), flat(0.7)])
    got = compare(ref, test)
    assert got.frames == 3 and got.psnr[0] == math.inf
    assert got.psnr[1:] == pytest.approx((20.0, -10 * math.log10(0.04)))
    assert got.mean_psnr == pytest.approx(-10 * math.log10((0.0 + 0.01 + 0.04) / 3))  # of the batch's MSE
    assert got.mean_ssim == pytest.approx(sum(got.ssim) / 3)
    text = got.text()
    assert "(mean of 3 frames)" in text and "\nper frame PSNR: inf 20.00 13.98" in text
    assert "\nper frame SSIM: 1.0000 " in text


def test_different_shapes_are_a_clear_error_naming_both():
    with pytest.raises(CompareError, match=r"reference \(2, 16, 16, 3\), test \(3, 16, 16, 3\)"):
        compare(flat(0.5, frames=2), flat(0.5, frames=3))
    with pytest.raises(CompareError, match=r"reference \(1, 16, 16, 3\), test \(1, 8, 16, 3\)"):
        compare(flat(0.5), flat(0.5, h=8))
    with pytest.raises(CompareError, match="must be an IMAGE of shape"):
        compare(torch.zeros(16, 16), torch.zeros(16, 16))
    with pytest.raises(CompareError, match="amplify must be a positive number"):
        compare(flat(0.5), flat(0.5), amplify=0)


def test_small_images_and_one_frame_without_batch_axis():
    assert compare(flat(0.5, h=4, w=6)[0], flat(0.5, h=4, w=6)[0]).ssim == pytest.approx((1.0,))
    assert ssim_per_frame(flat(0.2, h=5, w=5), flat(0.2, h=5, w=5)).tolist() == pytest.approx([1.0])


def test_many_frames_list_the_first_and_say_how_many_more():
    got = compare(flat(0.5, frames=70, h=8, w=8), flat(0.6, frames=70, h=8, w=8))
    assert "(mean of 70 frames)" in got.text() and "... (6 more)" in got.text()
