"""Knock-outs through the hook points: zeroing a head is zeroing its W_O; mean ablation writes the mean output;
every metric applies to the ablated model unchanged."""

import pytest
import torch

from circuits.analysis.ablation import ablate, ablation_hooks, ablation_prefix_matching
from circuits.metrics.losses import per_token_loss
from circuits.metrics.olsson import prefix_matching_scores

from .models import make_model, tokens_for


def test_ablating_nothing_is_the_model(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    logits, cache = model.run_with_cache(toks)
    with ablate(model, []):
        got_logits, got_cache = model.run_with_cache(toks)
    torch.testing.assert_close(got_logits, logits, rtol=0, atol=0)
    for k, v in cache.items():
        torch.testing.assert_close(got_cache[k], v, rtol=0, atol=0)


def test_zero_ablation_is_zeroing_w_o(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    zeroed = make_model(tiny_cfg)
    zeroed.blocks[0].attn.W_O[1] = 0
    want_logits, want_cache = zeroed.run_with_cache(toks)
    with ablate(model, {(0, 1)}):
        logits, cache = model.run_with_cache(toks)
        torch.testing.assert_close(prefix_matching_scores(model, toks), prefix_matching_scores(zeroed, toks))
        windows = tokens_for(tiny_cfg, n=25)
        torch.testing.assert_close(per_token_loss(model, windows), per_token_loss(zeroed, windows))
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], want_cache["blocks.1.attn.hook_pattern"])
    intact = model.run_with_cache(toks)[1]["blocks.1.attn.hook_pattern"]  # the hooks are gone again
    assert not torch.allclose(intact, want_cache["blocks.1.attn.hook_pattern"])  # layer 1 had moved
    table = ablation_prefix_matching(model, toks)
    assert table.shape == (4, 2, 4)
    torch.testing.assert_close(table[1], prefix_matching_scores(zeroed, toks))
    with pytest.raises(ValueError, match="does not exist"):
        ablation_hooks(model, {(2, 0)})


def test_mean_ablation_writes_the_mean_output(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    ref = tokens_for(tiny_cfg, batch=5, seed=3)
    with ablate(model, {(1, 2)}, mode="mean", mean_tokens=ref):
        _, cache = model.run_with_cache(toks)
    mean = model.run_with_cache(ref)[1]["blocks.1.attn.hook_result"][:, :, 2].mean(dim=(0, 1))
    torch.testing.assert_close(cache["blocks.1.attn.hook_result"][:, :, 2], mean.expand(3, tiny_cfg.n_ctx, -1))
    with pytest.raises(ValueError, match="mean_tokens"):
        ablation_hooks(model, {(1, 2)}, mode="mean")
    with pytest.raises(ValueError, match="mode must be"):
        ablation_hooks(model, {(1, 2)}, mode="resample")
