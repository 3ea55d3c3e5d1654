"""Per-head circuits, the score split and the path expansion against the model's own computation."""

import dataclasses
import math

import pytest
import torch

from circuits.analysis.circuits import (SCORE_TERMS, bilinear_scores, direct_path, eigen_positivity, ov_circuit,
                               position_scores, qk_circuit, score_terms, w_ov, w_qk)
from circuits.analysis.factored import FactoredMatrix
from circuits.model.transformer import AttnOnlyTransformer
from circuits.analysis.path_expansion import path_expansion_logits, path_expansion_residual


def make_model(cfg, n_layers, init_std=0.02, seed=0):
    cfg = dataclasses.replace(cfg, n_layers=n_layers, init_std=init_std)
    model = AttnOnlyTransformer(cfg)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.requires_grad_(False)


def tokens_for(cfg, batch=3, n=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.d_vocab, (batch, n or cfg.n_ctx), generator=g)


def test_w_ov_and_w_qk_are_the_papers_column_vector_matrices(tiny_cfg):
    model = make_model(tiny_cfg, 1)
    attn = model.blocks[0].attn
    ov, qk = w_ov(model, 0), w_qk(model, 0)
    assert ov.shape == qk.shape == (4, 32, 32)
    for h in range(4):
        # the paper's factors, literally: W_O^h [d_model, d_head], W_V^h [d_head, d_model], W_Q^h, W_K^h [d_head, d_model]
        W_O, W_V, W_Q, W_K = attn.W_O[h].T, attn.W_V[h].T, attn.W_Q[h].T, attn.W_K[h].T
        torch.testing.assert_close(ov.dense()[h], W_O @ W_V)
        torch.testing.assert_close(ov.dense()[h], (attn.W_V[h] @ attn.W_O[h]).T)  # TransformerLens's OV, transposed
        torch.testing.assert_close(qk.dense()[h], W_Q.T @ W_K)
    torch.testing.assert_close(w_qk(model, 0, scaled=True).dense(), qk.dense() / math.sqrt(8))
    with pytest.raises(ValueError, match="layer 1"):
        w_ov(model, 1)


def test_ov_circuit_is_the_logit_effect_of_attending_to_a_source_token(tiny_cfg):
    """ov[h][out, src] = change in logit ``out`` when head h attends fully to token ``src``."""
    model = make_model(tiny_cfg, 1)
    V, H = tiny_cfg.d_vocab, tiny_cfg.n_heads
    x = model.embed.W_E[torch.arange(V)][:, None]  # [V sequences of one token, 1, d_model]
    out = model.blocks[0].attn.head_outputs(x, torch.ones(V, H, 1, 1))  # [V, 1, H, d_model]
    effect = out[:, 0] @ model.unembed.W_U  # [src, head, out]
    ov = ov_circuit(model, 0).dense()  # [head, out, src]
    torch.testing.assert_close(ov, effect.permute(1, 2, 0))


def test_qk_circuit_is_the_token_part_of_the_scores(tiny_cfg):
    model = make_model(tiny_cfg, 1, init_std=0.1)
    V = tiny_cfg.d_vocab
    pairs = torch.cartesian_prod(torch.arange(V), torch.arange(V))  # (src, dst) sequences
    x = model.embed.W_E[pairs]  # [V*V, 2, d_model]
    scores = model.blocks[0].attn.scores(x, torch.zeros(2, tiny_cfg.d_model))  # no positions
    want = scores[:, :, 1, 0].reshape(V, V, -1).permute(2, 1, 0)  # [head, dst, src]
    qk = qk_circuit(model, 0)
    torch.testing.assert_close(qk_circuit(model, 0, scaled=True).dense(), want)
    torch.testing.assert_close(qk.dense() / math.sqrt(tiny_cfg.d_head), want)


def test_direct_path_is_the_zero_layer_model(tiny_cfg):
    model = make_model(tiny_cfg, 0)
    tokens = tokens_for(tiny_cfg)
    table = direct_path(model)  # [out, in]
    torch.testing.assert_close(model(tokens), table.dense().T[tokens])


def test_eigen_positivity():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(20, 5, generator=g))
    assert float(eigen_positivity(FactoredMatrix(Q, 2 * Q.T))) == pytest.approx(1.0)
    assert float(eigen_positivity(FactoredMatrix(-Q, Q.T))) == pytest.approx(-1.0)
    fm = FactoredMatrix(torch.randn(3, 20, 5, generator=g), torch.randn(3, 5, 20, generator=g))
    lam = torch.linalg.eigvals(fm.dense().double())  # dense: 15 extra zero eigenvalues change nothing
    torch.testing.assert_close(eigen_positivity(fm).double(), lam.sum(-1).real / lam.abs().sum(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1])
def test_score_terms_sum_to_the_model_scores(tiny_cfg, layer):
    model = make_model(tiny_cfg, 2, init_std=0.1)
    tokens = tokens_for(tiny_cfg)
    _, cache = model.run_with_cache(tokens)
    resid, pos = cache[f"blocks.{layer}.hook_resid_pre"], cache["hook_pos_embed"]
    terms = score_terms(model, layer, resid, pos)
    assert terms.shape == (len(SCORE_TERMS), 3, 4, 24, 24)
    scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]
    causal = torch.ones(24, 24, dtype=torch.bool).tril()
    torch.testing.assert_close(terms.sum(0)[..., causal], scores[..., causal])
    assert torch.isinf(scores[..., ~causal]).all()
    torch.testing.assert_close(terms[3][0], position_scores(model, layer, 24))
    # token.token term from the factored QK circuit (layer 0 reads embeddings only)
    if layer == 0:
        qk = qk_circuit(model, 0, scaled=True)
        t = tokens[0]
        torch.testing.assert_close(terms[0][0], qk.block(t, t))


def test_bilinear_scores_is_dst_by_src(tiny_cfg):
    model = make_model(tiny_cfg, 1, init_std=0.1)
    g = torch.Generator().manual_seed(1)
    dst, src = torch.randn(5, 32, generator=g), torch.randn(7, 32, generator=g)
    got = bilinear_scores(model, 0, dst, src)
    assert got.shape == (4, 5, 7)
    torch.testing.assert_close(got, torch.einsum("pd,hde,se->hps", dst, w_qk(model, 0).dense(), src) / math.sqrt(8))


@pytest.mark.parametrize("init_std", [0.02, 1.0])  # random; "trained-like": peaked patterns, large logits
def test_one_layer_path_expansion(tiny_cfg, init_std):
    model = make_model(tiny_cfg, 1, init_std=init_std)
    tokens = tokens_for(tiny_cfg)
    logits, cache = model.run_with_cache(tokens)
    terms, paths = path_expansion_logits(model, tokens, cache)
    assert terms.shape == (1 + 4, 3, 24, tiny_cfg.d_vocab)
    assert paths == [()] + [((0, h),) for h in range(4)]
    scale = logits.abs().max()
    torch.testing.assert_close(terms.sum(0) / scale, logits / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(terms.sum(0) / scale, model(tokens) / scale, atol=1e-5, rtol=0)
    if init_std == 1.0:
        assert cache["blocks.0.attn.hook_pattern"].amax(-1).mean() > 0.5  # really peaked
    # the paper's formula, literally: W_U W_E x_t + sum_h sum_s A^h[t, s] W_U W_OV^h W_E x_s
    torch.testing.assert_close(terms[0], direct_path(model).dense().T[tokens])
    ov = ov_circuit(model, 0).dense()  # [head, out, src]
    A = cache["blocks.0.attn.hook_pattern"]  # [batch, head, dst, src]
    for h in range(4):
        literal = torch.einsum("bts,bso->bto", A[:, h], ov[h].T[tokens])
        torch.testing.assert_close(terms[1 + h] / scale, literal / scale, atol=1e-5, rtol=0)


@pytest.mark.parametrize("init_std", [0.02, 1.0])
def test_two_layer_path_expansion_with_virtual_heads(tiny_cfg, init_std):
    model = make_model(tiny_cfg, 2, init_std=init_std)
    tokens = tokens_for(tiny_cfg, batch=2, n=16)
    logits, cache = model.run_with_cache(tokens)
    terms, paths = path_expansion_logits(model, tokens, cache)
    assert len(paths) == (4 + 1) ** 2 and paths[0] == () and paths[-1] == ((0, 3), (1, 3))
    scale = logits.abs().max()
    torch.testing.assert_close(terms.sum(0) / scale, logits / scale, atol=1e-5, rtol=0)
    by_order, orders = path_expansion_logits(model, tokens, cache, by_order=True)
    assert orders == [0, 1, 2] and by_order.shape == (3, 2, 16, tiny_cfg.d_vocab)
    torch.testing.assert_close(by_order.sum(0) / scale, logits / scale, atol=1e-5, rtol=0)
    # a virtual head: pattern A^{h2} A^{h1}, OV W_OV^{h2} W_OV^{h1}
    resid, _ = path_expansion_residual(model, tokens, cache)
    A1, A2 = cache["blocks.0.attn.hook_pattern"][:, 2], cache["blocks.1.attn.hook_pattern"][:, 1]
    ov1, ov2 = w_ov(model, 0).dense()[2], w_ov(model, 1).dense()[1]
    literal = (A2 @ A1) @ model.embed.W_E[tokens] @ (ov2 @ ov1).T
    got, size = resid[paths.index(((0, 2), (1, 1)))], literal.abs().max()
    torch.testing.assert_close(got / size, literal / size, atol=1e-5, rtol=0)


def test_zero_layer_path_expansion(tiny_cfg):
    model = make_model(tiny_cfg, 0)
    tokens = tokens_for(tiny_cfg)
    terms, paths = path_expansion_logits(model, tokens)
    assert paths == [()]
    torch.testing.assert_close(terms[0], model(tokens))
