import math

import pytest
from comfyui_magcache.magcache import MagCacheConfig, MagCacheConfigError


def test_defaults_are_the_original_nodes():
    c = MagCacheConfig()
    assert (c.thresh, c.retention_ratio, c.K, c.start_step, c.end_step) == (0.06, 0.2, 2, 0, -1)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(thresh=-0.01), "magcache_thresh must be a number from 0.0 to 0.3, got -0.01"),
    (dict(thresh=0.31), "magcache_thresh must be a number from 0.0 to 0.3, got 0.31"),
    (dict(thresh=math.nan), "magcache_thresh must be a number from 0.0 to 0.3, got nan"),
    (dict(thresh="0.1"), "magcache_thresh must be a number from 0.0 to 0.3, got '0.1'"),
    (dict(retention_ratio=0.05), "retention_ratio must be a number from 0.1 to 1.0, got 0.05"),
    (dict(retention_ratio=math.inf), "retention_ratio must be a number from 0.1 to 1.0, got inf"),
    (dict(K=7), "magcache_K must be a whole number from 0 to 6, got 7"),
    (dict(K=-1), "magcache_K must be a whole number from 0 to 6, got -1"),
    (dict(K=2.5), "magcache_K must be a whole number from 0 to 6, got 2.5"),
    (dict(K=True), "magcache_K must be a whole number from 0 to 6, got True"),
    (dict(start_step=-1), "start_step must be a whole number from 0 to 10000, got -1"),
    (dict(end_step=10001), "end_step must be a whole number from -10000 to 10000, got 10001"),
    (dict(start_step=5, end_step=3), "end_step (3) is before start_step (5)"),
])
def test_bad_values_are_rejected_with_a_message(kwargs, fragment):
    with pytest.raises(MagCacheConfigError) as e:
        MagCacheConfig(**kwargs)
    assert fragment in str(e.value)


def test_whole_float_K_is_accepted():
    assert MagCacheConfig(K=3.0).K == 3


def test_retention_boundary_official_and_flux_rounding():
    c = MagCacheConfig(retention_ratio=0.1)
    assert c.retention_start(5) == 0 and c.retention_start(5, round_half_up=True) == 1
    assert c.retention_start(28) == 2 and c.retention_start(28, round_half_up=True) == 3
    assert MagCacheConfig(retention_ratio=0.2).retention_start(50) == 10


def test_window_resolves_negative_end_and_clamps():
    assert MagCacheConfig().window(20) == (0, 19)
    assert MagCacheConfig(start_step=3, end_step=-5).window(20) == (3, 15)
    assert MagCacheConfig(end_step=100).window(20) == (0, 19)


def test_retention_range_takes_the_published_wan22_setting():
    assert MagCacheConfig(retention_ratio=0.4).retention_ratio == 0.4  # MagCache4Wan2.2 T2V-A14B
    assert MagCacheConfig(retention_ratio=0.1).retention_ratio == 0.1  # the original lower bound stays
