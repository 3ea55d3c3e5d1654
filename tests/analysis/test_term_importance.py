"""Term importance (frozen-pattern passes) and per-term effects against the model and the path expansion."""

import dataclasses
import math

import pytest
import torch

from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer
from circuits.analysis.path_expansion import path_expansion_logits, path_expansion_residual
from circuits.analysis.term_importance import (constant_share, frozen_pattern_passes, single_head_effects,
                                               single_head_terms, term_effect, term_importance,
                                               virtual_head_effects, virtual_head_terms)


def make_model(cfg, n_layers=2, init_std=0.15, seed=0):
    """Large init: sharp patterns and sizeable higher-order terms, so the orders differ visibly."""
    model = AttnOnlyTransformer(dataclasses.replace(cfg, n_layers=n_layers, init_std=init_std))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.requires_grad_(False)


def windows_for(cfg, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx + 1), generator=g)


def test_last_pass_is_the_model(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    logits, cache = model.run_with_cache(w[:, :-1])
    finals = frozen_pattern_passes(model, w[:, :-1], cache)
    assert finals.shape == (3, 3, tiny_cfg.n_ctx, tiny_cfg.d_model)
    torch.testing.assert_close(finals[-1], cache["hook_resid_final"])
    torch.testing.assert_close(finals[0], model.embed.W_E[w[:, :-1]])  # pass 0: direct path only
    ti = term_importance(model, w)
    assert ti.uniform == pytest.approx(math.log(tiny_cfg.d_vocab))
    assert len(ti.losses) == 3
    assert ti.losses[-1] == pytest.approx(ti.model_loss, abs=1e-5)
    assert ti.model_loss == pytest.approx(float(loss_fn(model(w[:, :-1]), w[:, 1:])), abs=1e-4)  # fast path
    assert sum(ti.marginal) == pytest.approx(ti.uniform - ti.model_loss, abs=1e-5)
    assert len({round(x, 4) for x in ti.losses}) == 3  # the orders do change the loss


def test_order_terms_sum_to_the_logits_and_match_the_path_expansion(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    x = w[:, :-1]
    logits, cache = model.run_with_cache(x)
    finals = frozen_pattern_passes(model, x, cache)  # order k alone: pass k minus pass k - 1
    orders = torch.cat([finals[:1], finals[1:] - finals[:-1]]) @ model.unembed.W_U
    torch.testing.assert_close(orders.sum(0), logits, atol=1e-5, rtol=1e-5)
    by_order, _ = path_expansion_logits(model, x, cache, by_order=True)  # the other engineer's expansion
    torch.testing.assert_close(orders, by_order, atol=1e-5, rtol=1e-5)


def test_each_pass_holds_every_path_up_to_its_order(tiny_cfg):
    """Looped check on three layers: pass k = sum of the path-expansion terms of length <= k."""
    model = make_model(tiny_cfg, n_layers=3, init_std=0.1)
    x = windows_for(tiny_cfg, batch=2)[:, :-1]
    _, cache = model.run_with_cache(x)
    finals = frozen_pattern_passes(model, x, cache)
    terms, paths = path_expansion_residual(model, x, cache)
    for k in range(4):
        want = sum(t for t, p in zip(terms, paths) if len(p) <= k)
        torch.testing.assert_close(finals[k], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(finals[-1], cache["hook_resid_final"])


def test_single_head_terms_and_effects(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    x, y = w[:, :-1], w[:, 1:]
    logits, cache = model.run_with_cache(x)
    singles = single_head_terms(model, x, cache)  # [L, b, p, H, d]
    terms, paths = path_expansion_residual(model, x, cache)
    for t, p in zip(terms, paths):
        if len(p) == 1:
            (l, h), = p
            torch.testing.assert_close(singles[l, :, :, h], t)
    effects = single_head_effects(model, w)
    base = float(loss_fn(logits, y))
    for l, h in [(0, 1), (1, 3)]:  # looped: rebuild the logits from every path except (l, h)
        rest = sum(t for t, p in zip(terms, paths) if p != ((l, h),)) @ model.unembed.W_U
        assert float(effects[l, h]) == pytest.approx(float(loss_fn(rest, y)) - base, abs=1e-4)


def test_virtual_terms_are_the_dense_formula_and_sum_to_order_two(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    x = w[:, :-1]
    _, cache = model.run_with_cache(x)
    virt = virtual_head_terms(model, x, cache)  # [h1, h2, b, p, d]
    H = tiny_cfg.n_heads
    assert virt.shape == (H, H, 3, tiny_cfg.n_ctx, tiny_cfg.d_model)
    finals = frozen_pattern_passes(model, x, cache)
    torch.testing.assert_close(virt.sum(dim=(0, 1)), finals[2] - finals[1], atol=1e-5, rtol=1e-5)
    # the literal formula A^{h2} A^{h1} x W_V^{h1} W_O^{h1} W_V^{h2} W_O^{h2} for one pair
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    h1, h2 = 2, 1
    A1, A2 = cache["blocks.0.attn.hook_pattern"][:, h1], cache["blocks.1.attn.hook_pattern"][:, h2]
    want = A2 @ A1 @ model.embed.W_E[x] @ a0.W_V[h1] @ a0.W_O[h1] @ a1.W_V[h2] @ a1.W_O[h2]
    torch.testing.assert_close(virt[h1, h2], want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(virtual_head_terms(model, x, cache, head1=h1), virt[h1])
    with pytest.raises(ValueError, match="layer1 < layer2"):
        virtual_head_terms(model, x, cache, layer1=1, layer2=1)


def test_virtual_head_effects_remove_exactly_one_term(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    x, y = w[:, :-1], w[:, 1:]
    logits, cache = model.run_with_cache(x)
    eff = virtual_head_effects(model, w, cache)
    terms, paths = path_expansion_residual(model, x, cache)
    base = float(loss_fn(logits, y))
    for h1, h2 in [(0, 0), (3, 2)]:
        path = ((0, h1), (1, h2))
        rest = sum(t for t, p in zip(terms, paths) if p != path) @ model.unembed.W_U
        assert float(eff["loss"][h1, h2]) == pytest.approx(float(loss_fn(rest, y)) - base, abs=1e-4)
        term = terms[paths.index(path)]
        assert float(eff["norm"][h1, h2]) == pytest.approx(float(term.norm(dim=-1).mean()), rel=1e-5)


def test_gap_shares_sum_to_one(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    ti = term_importance(model, w)
    assert ti.gap == pytest.approx(ti.uniform - ti.model_loss)
    assert sum(ti.gap_shares) == pytest.approx(1.0, abs=1e-5)
    assert ti.gap_shares[0] == pytest.approx(ti.marginal[0] / ti.gap)


def test_constant_share_of_a_term():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 5, 2, 8, generator=g)  # [batch, pos, head, d_model]
    noise = noise - noise.mean(dim=(0, 1))  # zero mean over batch and positions
    const = torch.randn(2, 8, generator=g)
    assert constant_share(noise) == pytest.approx([0.0, 0.0], abs=1e-6)
    assert constant_share(const.expand(3, 5, 2, 8)) == pytest.approx([1.0, 1.0])
    # ||c||² / (||c||² + mean ||noise||²): the two parts are orthogonal on average
    mixed = constant_share(noise + const)
    want = const.pow(2).sum(-1) / (const.pow(2).sum(-1) + noise.pow(2).sum(-1).mean(dim=(0, 1)))
    torch.testing.assert_close(mixed, want)


def test_term_effect_is_the_single_head_effect_and_keeps_a_constant(tiny_cfg):
    model, w = make_model(tiny_cfg), windows_for(tiny_cfg)
    x = w[:, :-1]
    _, cache = model.run_with_cache(x)
    singles = single_head_terms(model, x, cache)  # [L, b, p, H, d]
    effects = single_head_effects(model, w, cache)
    assert term_effect(model, w, singles[1, :, :, 2], cache) == pytest.approx(float(effects[1, 2]), abs=1e-5)
    constant = torch.randn(tiny_cfg.d_model).expand(3, tiny_cfg.n_ctx, tiny_cfg.d_model)
    assert term_effect(model, w, constant, cache, keep_mean=True) == pytest.approx(0.0, abs=1e-6)
    assert term_effect(model, w, constant, cache) != pytest.approx(0.0, abs=1e-3)
