"""The benchmark's family list comes from the registry, its options keep their meaning, and its
per-step plot is drawn by magcache/plot.py (no ComfyUI needed: nothing here builds a model)."""
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from comfyui_magcache.magcache.plot import H, W, plot_step_bars
from comfyui_magcache.model_patches import FIXTURES

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))

import families  # noqa: E402
import run  # noqa: E402


def test_families_are_the_registry_fixtures_with_a_bench_size():
    benched = [name for name, (_, fixture) in FIXTURES.items() if fixture.bench]
    assert benched and list(families.FAMILIES) == benched
    for name, fam in families.FAMILIES.items():
        spec, fixture = FIXTURES[name]
        assert fam.spec is spec and fam.fixture is fixture and fam.preset == fixture.preset
        # a family with tables is timed on the one 'auto' picks; one without self-calibrates at its
        # fixture's settings (ours)
        assert fam.preset in spec.presets if spec.presets else (fam.preset is None and fixture.settings)
        assert fam.latent == tuple(fixture.bench["latent"]) and fam.cfg == fixture.bench["cfg"]
        assert fam.text_dim == fixture.bench.get("text_dim", 512)
        assert all(len(patch) == len(shape) - 2 for shape, patch, _ in fam.streams) and fam.image_tokens > 0
        assert fam.residual_elements == sum(math.prod(shape[2:]) // math.prod(patch) * hidden
                                            for shape, patch, hidden in fam.streams)


def test_every_family_is_benchmarked():
    benched = {FIXTURES[name][0].name for name in families.FAMILIES}
    assert benched == {spec.name for spec, _ in FIXTURES.values()}


def test_a_bench_size_missing_a_key_names_the_fixture():
    spec, fixture = next(iter(FIXTURES.values()))
    with pytest.raises(ValueError, match="fixture odd: bench lacks latent, patch, hidden, cfg"):
        families.family("odd", spec, dataclasses.replace(fixture, bench={"unet": {}}))


def test_options_default_to_every_family_and_quick_to_two():
    opts = run.parse([])
    assert opts.families == list(families.FAMILIES)
    assert opts.compile_families == [f for f in run.DEFAULT_COMPILE if f in families.FAMILIES]
    quick = run.parse(["--quick"])
    assert quick.families == list(run.QUICK["families"]) and quick.compile_families == []
    assert (quick.steps, quick.repeats, quick.overhead_rounds) == (8, 1, 4)
    with pytest.raises(SystemExit):
        run.parse(["--families", "no_such_family"])


def test_step_bars_draw_each_series_with_its_colors():
    red, gray = (214, 39, 40), (170, 170, 170)
    img = plot_step_bars([([1.0, 1.0], gray), ([1.0, 0.5], [(31, 119, 180), red])], "t", [("plain", gray)])
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    colors = {tuple(c) for c in img.reshape(-1, 3)}
    assert red in colors and gray in colors and (31, 119, 180) in colors
