"""Virtual attention heads: the combined pattern and OV circuit against the looped term, and the table."""

import pytest
import torch

from circuits.analysis.circuits import eigen_positivity
from circuits.analysis.composition import composition_baseline, virtual_ov_circuit
from circuits.analysis.term_importance import virtual_head_terms
from circuits.analysis.virtual_heads import virtual_pattern

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


def test_virtual_ov_circuit_is_the_product_of_the_two_heads(tiny_cfg):
    model = make_model(tiny_cfg)
    ov = virtual_ov_circuit(model, 0, 1, 1, 2)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    dense = (model.embed.W_E @ a0.W_V[1] @ a0.W_O[1] @ a1.W_V[2] @ a1.W_O[2] @ model.unembed.W_U).T  # [out, src]
    torch.testing.assert_close(ov.dense(), dense, atol=1e-5, rtol=1e-5)
    assert float(eigen_positivity(ov)) == pytest.approx(dense_positivity(dense), abs=1e-4)
    assert composition_baseline(32, 8, n_samples=20) > 0
