"""Wan2.2 A14B style: two experts, each its own model, MagCache node and KSamplerAdvanced, sharing
one schedule (high noise: steps 0-5, low noise: steps 6-11 of 12)."""
import torch
from comfyui_magcache.magcache import COND, UNCOND, MagCacheConfig, get_preset, predict_skips
from harness import TINY, conds, sample, tiny_model
from test_families import CASES, observe, skipped

STEPS, SPLIT = 12, 6
SETTINGS = get_preset("wan2.2_t2v_14B").recommended


def expert(comfy, seed):
    model = tiny_model("wan_t2v", seed=seed)
    thresh, retention, K = SETTINGS
    return model, comfy.MagCache.execute(model, "wan2.2_t2v_14B", thresh, retention, K, 0, -1).result[0]


def run_pair(high, low, pos, neg):
    shape = TINY["wan_t2v"].latent
    mid = sample(high, pos, neg, seed=1, steps=STEPS, latent_shape=shape, start_step=0, last_step=SPLIT,
                 force_full_denoise=False)
    return sample(low, pos, neg, seed=1, steps=STEPS, latent=mid, start_step=SPLIT, last_step=10000,
                  disable_noise=True)


def test_each_expert_reads_its_part_of_the_table_with_fresh_state(comfy):
    (high_model, high), (low_model, low) = expert(comfy, 0), expert(comfy, 1)
    pos, neg = conds("wan_t2v")
    case = CASES["wan_t2v"]
    with observe(case, high_model.model.diffusion_model) as high_calls, \
            observe(case, low_model.model.diffusion_model) as low_calls:
        run_pair(high, low, pos, neg)
    thresh, retention, K = SETTINGS
    cfg = MagCacheConfig(thresh=thresh, retention_ratio=retention, K=K)
    table = get_preset("wan2.2_t2v_14B").tables(STEPS)  # the full 12-step table, not a 6-step one
    want_high = predict_skips(cfg, table, STEPS, branches=(COND, UNCOND), last=SPLIT - 1)
    want_low = predict_skips(cfg, table, STEPS, branches=(COND, UNCOND), first=SPLIT)
    assert want_high[COND] and want_low[COND]
    assert want_high != predict_skips(cfg, get_preset("wan2.2_t2v_14B").tables(SPLIT), SPLIT, branches=(COND, UNCOND))
    # observed steps are local to each sampler's schedule; the low expert's step 0 is global step 6
    assert [s for s in skipped(high_calls, COND)] == want_high[COND]
    assert [s + SPLIT for s in skipped(low_calls, COND)] == want_low[COND] == \
        [s + SPLIT for s in skipped(low_calls, UNCOND)]


def test_two_experts_in_a_row_do_not_interfere(comfy):
    pos, neg = conds("wan_t2v")
    (_, high), (_, low) = expert(comfy, 0), expert(comfy, 1)
    first = run_pair(high, low, pos, neg)
    (_, high2), (_, low2) = expert(comfy, 0), expert(comfy, 1)
    assert torch.equal(run_pair(high2, low2, pos, neg), first)
    assert torch.equal(run_pair(high, low, pos, neg), first)  # second use of the same patched experts
