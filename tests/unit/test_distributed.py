"""What a rank of a raylight run holds (model_patches/distributed.py) and the calibration sums that add up
over ranks to one process's curves; the runs themselves: tests/integration/test_raylight.py."""
import pytest
import torch
from comfyui_magcache.magcache import COND, UNCOND, Calibration
from comfyui_magcache.model_patches import distributed
from comfyui_magcache.model_patches.distributed import Layout


def test_each_rank_knows_its_real_tokens_of_raylights_padded_chunks():
    # 147 tokens over 2 ranks: padded to 148, chunks of 74; the last row of rank 1 is padding
    assert [Layout(sp_degree=2, sp_rank=r).valid_tokens(147, 74) for r in (0, 1)] == [74, 73]
    assert [Layout(sp_degree=4, sp_rank=r).valid_tokens(9, 3) for r in range(4)] == [3, 3, 3, 0]
    assert Layout(sp_degree=2).valid_tokens(147, 73) is None  # not raylight's chunk: never guessed
    assert Layout(sp_degree=2).valid_tokens(None, 74) is None  # a token count the spec cannot give
    assert distributed.SINGLE.valid_tokens(None, 10) == 10


def test_cfg_ranks_take_their_rows_branch():
    keys = ((UNCOND, "u"), (COND, "c"))
    assert [Layout(cfg_degree=2, cfg_rank=r).local_keys(keys) for r in (0, 1)] == [keys[:1], keys[1:]]
    assert Layout(cfg_degree=2).local_keys(keys[:1]) is None
    assert distributed.SINGLE.local_keys(keys) is keys


def test_outside_raylight_the_layout_is_one_process():
    from comfyui_magcache.model_patches.wan import SPEC

    class Model:
        pass

    assert distributed.detect(SPEC, Model(), {}) is distributed.SINGLE


def residuals(steps=4, tokens=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, tokens, 8, generator=g) * (1 + s) for s in range(steps)]


def reduced(parts, steps):
    """Results of several ranks' Calibrations, each reduced with the others' sums (as all_reduce does)."""
    packed = []
    for cal in parts:
        cal.result(steps, reduce=lambda t: packed.append(t.clone()) or t)
    return [cal.result(steps, reduce=lambda t: sum(packed)) for cal in parts]


def test_sequence_chunks_measure_the_ratios_of_the_whole_sequence():
    steps, whole = 4, Calibration()
    chunks = [Calibration(), Calibration()]
    for step, (rc, ru) in enumerate(zip(residuals(), residuals(seed=1))):
        for key, r in (((COND, 0), rc), ((UNCOND, 1), ru)):
            whole.record(key, step, r)
            chunks[0].record(key, step, r[:, :4])  # rank 0: tokens 0-3
            chunks[1].record(key, step, r[:, 4:])  # rank 1: tokens 4-6 (its padding row left out by the engine)
    want = whole.result(steps)
    for got in reduced(chunks, steps):
        for curve in ("ratios", "std", "cos_dis"):
            for b in (COND, UNCOND):
                assert getattr(got, curve)[b] == pytest.approx(getattr(want, curve)[b], rel=1e-6, abs=1e-7)
    alone = chunks[0].result(steps)  # one rank's tokens alone are not the model's ratios
    assert alone.ratios[COND] != pytest.approx(want.ratios[COND], rel=1e-6)


def test_cfg_ranks_measure_one_branch_each_and_all_get_both_curves():
    steps, whole = 4, Calibration()
    ranks = [Calibration(), Calibration()]
    for step, (rc, ru) in enumerate(zip(residuals(), residuals(seed=1))):
        whole.record((COND, 0), step, rc)
        whole.record((UNCOND, 1), step, ru)
        ranks[0].record((UNCOND, "uuid of rank 0"), step, ru)
        ranks[1].record((COND, "uuid of rank 1"), step, rc)
    want = whole.result(steps)
    for got in reduced(ranks, steps):
        assert got.cfg and got.table() == pytest.approx(want.table(), rel=1e-6)


def fake_raylight(monkeypatch, sp=1, cfg=1, pp=1):
    """raylight's state as distributed.detect reads it: xfuser's groups, torch.distributed up."""
    import sys
    import types

    xf = types.SimpleNamespace(model_parallel_is_initialized=lambda: True,
                               get_sequence_parallel_world_size=lambda: sp, get_sequence_parallel_rank=lambda: 1,
                               get_classifier_free_guidance_world_size=lambda: cfg,
                               get_classifier_free_guidance_rank=lambda: 0, get_pipeline_parallel_world_size=lambda: pp,
                               get_sp_group=lambda: types.SimpleNamespace(device_group="sp"),
                               get_cfg_group=lambda: types.SimpleNamespace(device_group="cfg"))
    monkeypatch.setitem(sys.modules, "xfuser.core.distributed", xf)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)


def raylight_fn(executor, *args, **kwargs):
    pass


raylight_fn.__module__ = "raylight.distributed_modules.stand_in"


def model_with(forward=None):
    import types

    m = types.SimpleNamespace()
    if forward is not None:
        m.forward_orig = forward
    return m


def test_raylights_layout_is_read_from_its_state(monkeypatch):
    from comfyui_magcache.model_patches.flux import SPEC as FLUX
    from comfyui_magcache.model_patches.wan import SPEC as WAN

    fake_raylight(monkeypatch, sp=2)
    got = distributed.detect(WAN, model_with(raylight_fn), {})
    assert (got.sp_degree, got.sp_rank, got.cfg_degree, got.groups, got.problem) == (2, 1, 1, ("sp",), None)
    # a family that does not declare how USP shards its tokens: caching off (every rank reads the same)
    assert "sequence_parallel" in distributed.detect(FLUX, model_with(raylight_fn), {}).problem
    assert "is not raylight's" in distributed.detect(WAN, model_with(), {}).problem  # groups without its forward
    fake_raylight(monkeypatch, cfg=2)
    to = {"wrappers": {"diffusion_model": {None: [raylight_fn]}}}
    got = distributed.detect(FLUX, model_with(), to)  # CFG parallel: any family
    assert (got.sp_degree, got.cfg_degree, got.groups, got.problem) == (1, 2, ("cfg",), None)
    assert "CFG split is not on the model" in distributed.detect(FLUX, model_with(), {}).problem
    fake_raylight(monkeypatch, pp=2)
    assert "PipeFusion" in distributed.detect(WAN, model_with(), {}).problem
