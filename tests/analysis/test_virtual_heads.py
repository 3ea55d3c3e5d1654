"""Virtual attention heads: the combined pattern and OV circuit against the looped term, and the table."""

import pytest
import torch

from circuits.analysis.composition import composition_baseline, composition_scores
from circuits.analysis.term_importance import virtual_head_effects, virtual_head_terms
from circuits.analysis.virtual_heads import (strongest_virtual_heads, virtual_head_table, virtual_ov_summary,
                                             virtual_pattern)

from .models import dense_positivity, make_model, tokens_for


def test_virtual_pattern_times_virtual_ov_is_the_virtual_term(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    _, cache = model.run_with_cache(toks)
    terms = virtual_head_terms(model, toks, cache)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    for h1, h2 in [(0, 1), (3, 3)]:
        A = virtual_pattern(cache, (0, h1), (1, h2))
        torch.testing.assert_close(A.sum(-1), torch.ones(3, tiny_cfg.n_ctx))
        assert torch.all(A.triu(1) == 0)
        want = A @ (model.embed.W_E[toks] @ a0.W_V[h1] @ a0.W_O[h1] @ a1.W_V[h2] @ a1.W_O[h2])
        torch.testing.assert_close(terms[h1, h2], want, atol=1e-6, rtol=1e-5)


def test_virtual_head_table_and_ov_summary(tiny_cfg):
    model = make_model(tiny_cfg)
    windows = tokens_for(tiny_cfg, n=25)
    table = virtual_head_table(model, windows, baseline=0.1)
    assert len(table) == 16 and table[0]["loss"] >= table[-1]["loss"]
    v, eff = composition_scores(model, "V"), virtual_head_effects(model, windows)
    for r in table:
        (_, h1), (_, h2) = r["head1"], r["head2"]
        assert r["v_score"] == pytest.approx(float(v[h1, h2]))
        assert r["v_excess"] == pytest.approx(float(v[h1, h2]) - 0.1)
        assert r["loss"] == pytest.approx(float(eff["loss"][h1, h2]))
    top = strongest_virtual_heads(table, "v_excess", top=3)
    assert [r["v_excess"] for r in top] == sorted((r["v_excess"] for r in table), reverse=True)[:3]
    s = virtual_ov_summary(model, (0, 1), (1, 2), k=5)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    dense = (model.embed.W_E @ a0.W_V[1] @ a0.W_O[1] @ a1.W_V[2] @ a1.W_O[2] @ model.unembed.W_U).T  # [out, src]
    assert s["eigen_positivity"] == pytest.approx(dense_positivity(dense), abs=1e-4)
    vals, idx = dense.flatten().topk(5)
    assert s["top_values"] == pytest.approx(vals.numpy(), rel=1e-5)
    assert list(zip(s["top_out"], s["top_src"])) == [(int(i) // 61, int(i) % 61) for i in idx]
    assert composition_baseline(32, 8, n_samples=20) > 0
