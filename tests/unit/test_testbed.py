"""The testbeds' data and checker (testbed/data.py), their committed checkpoints' records, and the
evidence rule (magcache/evidence.py)."""
import json

import pytest
import torch
from comfyui_magcache.magcache import MagCacheConfig, Preset
from comfyui_magcache.magcache import evidence
from comfyui_magcache.testbed import data, models


@pytest.mark.parametrize("name", sorted(models.TESTBEDS))
def test_each_committed_checkpoint_was_trained_with_its_testbeds_settings(name):
    """`python testbed/train.py <name>` reproduces the committed checkpoint only if the settings it
    reads (models.Testbed.train) are the ones the checkpoint records, the thread count included."""
    tb = models.TESTBEDS[name]
    record = tb.checkpoint.with_suffix(".json")
    if not tb.checkpoint.is_file():
        pytest.skip(f"{name} has no committed checkpoint")
    meta = json.loads(record.read_text())
    want = {k: str(tb.train[k]) for k in ("steps", "batch", "threads")}
    assert {k: meta.get(k) for k in want} == want
    assert float(meta["lr"]) == tb.train["lr"]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_checker_accepts_every_drawn_sample_of_its_class_and_rejects_other_classes(kind):
    g = torch.Generator().manual_seed(7)
    for cls in range(data.CLASSES):
        for _ in range(5):
            x = data.draw(kind, cls, g)
            assert data.check(kind, x, cls)
            assert not any(data.check(kind, x, other) for other in range(data.CLASSES) if other != cls)
            assert data.check(kind, x + 0.2 * torch.randn(x.shape, generator=g), cls)  # mild noise


def test_checker_rejects_noise_an_empty_frame_and_a_video_moving_the_wrong_way():
    g = torch.Generator().manual_seed(3)
    assert not data.check("image", torch.randn(data.CHANNELS, 16, 16, generator=g), 0)
    assert not data.check("image", data.BACKGROUND[:, None, None].repeat(1, 16, 16), 0)
    video = data.draw("video", 0, g)  # class 0 moves right
    assert not data.check("video", video.flip(1), 0)  # played backwards: moves left
    assert not data.check("video", video[:, :1].repeat(1, data.VIDEO_FRAMES, 1, 1), 0)  # does not move


def test_rgb_projection_shows_each_class_colour_as_its_rgb():
    rgb = data.to_rgb(data.COLOURS.T[:, :, None])[:, :, 0].T
    assert torch.allclose(rgb, data.RGB, atol=1e-4)
    assert torch.allclose(data.to_rgb(data.BACKGROUND[:, None, None])[:, 0, 0], data.RGB_BACKGROUND, atol=1e-4)


def test_published_settings_skip_half_the_steps_at_the_median():
    fractions = evidence.published_skip_fractions()
    assert len(fractions) == len(evidence.published_settings()) >= 21
    assert evidence.target_fraction() == 0.5
    assert evidence.median_shape() == (0.2, 3)
    assert fractions["flux"] == pytest.approx(19 / 28)  # 0.24 / 0.1 / 5 skips 19 of 28 (the pack's README)


def test_evidence_thresh_is_the_smallest_that_skips_the_target_fraction():
    # a profile shaped like a trained model's: flat, then falling over the last steps
    ratios = tuple([1.0] + [0.99] * 20 + [0.97, 0.95, 0.93, 0.9, 0.87, 0.84, 0.8, 0.75, 0.7])
    profile = Preset(name="p", steps=30, cfg_interleaved=False, ratios=ratios)
    t = evidence.evidence_thresh(profile, 30)
    config = lambda th: MagCacheConfig(thresh=th, retention_ratio=0.2, K=3)  # noqa: E731
    assert evidence.skip_fraction(profile, config(t)) >= 0.5
    assert evidence.skip_fraction(profile, config(round(t - 0.005, 3))) < 0.5
    assert evidence.evidence_settings(profile, 30) == (t, 0.2, 3)


def test_evidence_config_keeps_the_nodes_window_and_counts_only_skips_inside_it():
    ratios = tuple([1.0] + [0.99] * 20 + [0.97, 0.95, 0.93, 0.9, 0.87, 0.84, 0.8, 0.75, 0.7])
    profile = Preset(name="p", steps=30, cfg_interleaved=False, ratios=ratios)
    base = MagCacheConfig(thresh=0.3, retention_ratio=0.5, K=6, start_step=0, end_step=-1)
    whole = evidence.evidence_config(profile, 30, base)
    assert (whole.thresh, whole.retention_ratio, whole.K) == (evidence.evidence_thresh(profile, 30), 0.2, 3)
    windowed = evidence.evidence_config(profile, 30, MagCacheConfig(thresh=0.3, start_step=0, end_step=20))
    assert (windowed.start_step, windowed.end_step) == (0, 20)
    # inside steps 0-20 half the run cannot be skipped: the rule takes the smallest thresh that skips the most
    most = max(evidence.skip_fraction(profile, MagCacheConfig(thresh=t, K=3, end_step=20)) for t in evidence.GRID)
    assert evidence.skip_fraction(profile, windowed) == most < 0.5
    assert evidence.skip_fraction(profile, MagCacheConfig(thresh=round(windowed.thresh - 0.005, 3), K=3,
                                                          end_step=20)) < most
    assert evidence.evidence_config(profile, 15, base).thresh == evidence.evidence_thresh(profile, 15)
