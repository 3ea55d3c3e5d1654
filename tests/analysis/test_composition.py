"""Composition scores against the paper's formulas written out with dense matrices."""

import dataclasses

import pytest
import torch

from circuits.analysis.composition import (KINDS, composition_baseline, composition_scores, k_composition_circuit,
                                           patterns_without_writer, virtual_ov_circuit)
from circuits.model.transformer import AttnOnlyTransformer

from .models import make_model


def two_layer(cfg, seed=0):
    model = AttnOnlyTransformer(dataclasses.replace(cfg, n_layers=2))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.requires_grad_(False)


def paper_matrices(model, layer, h):
    """W_OV = W_O W_V and W_QK = W_Qᵀ W_K with the paper's column-vector factors, spelled out."""
    attn = model.blocks[layer].attn
    W_O, W_V = attn.W_O[h].T, attn.W_V[h].T  # [d_model, d_head], [d_head, d_model]
    W_Q, W_K = attn.W_Q[h].T, attn.W_K[h].T  # [d_head, d_model] each
    return W_O @ W_V, W_Q.T @ W_K


def fro(M):
    return torch.linalg.matrix_norm(M)


def test_scores_match_the_papers_formulas(tiny_cfg):
    model = two_layer(tiny_cfg)
    got = {kind: composition_scores(model, kind) for kind in KINDS}
    for h1 in range(4):
        ov1, _ = paper_matrices(model, 0, h1)
        for h2 in range(4):
            ov2, qk2 = paper_matrices(model, 1, h2)
            want = {
                "Q": fro(qk2.T @ ov1) / (fro(qk2) * fro(ov1)),
                "K": fro(qk2 @ ov1) / (fro(qk2) * fro(ov1)),
                "V": fro(ov2 @ ov1) / (fro(ov2) * fro(ov1)),
            }
            for kind in KINDS:
                torch.testing.assert_close(got[kind][h1, h2], want[kind], rtol=1e-5, atol=1e-7)
    # the orders matter: the reversed products give other numbers
    ov1, _ = paper_matrices(model, 0, 0)
    ov2, qk2 = paper_matrices(model, 1, 0)
    assert not torch.isclose(fro(ov1 @ ov2), fro(ov2 @ ov1), rtol=1e-3)
    assert not torch.isclose(fro(qk2 @ ov1), fro(qk2.T @ ov1), rtol=1e-3)


def hand_built(tiny_cfg, query_reads_h1: bool):
    """Head 0.0 copies dims 0-7 onto themselves; head 1.0's key (or query) reads exactly dims 0-7,
    its other side and its value read dims 8-15, which nothing in layer 0 head 0 writes."""
    model = two_layer(tiny_cfg)
    E = torch.eye(32)
    S, other = E[:, :8], E[:, 8:16]  # [d_model, d_head] bases
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    with torch.no_grad():
        a0.W_V[0], a0.W_O[0] = S, S.T  # W_OV^{0.0} = projection onto dims 0-7
        a1.W_K[0] = other if query_reads_h1 else S
        a1.W_Q[0] = S if query_reads_h1 else other
        a1.W_V[0] = other
    return model


def test_k_composition_when_the_key_reads_what_h1_writes(tiny_cfg):
    model = hand_built(tiny_cfg, query_reads_h1=False)
    base = composition_baseline(32, 8, n_samples=100)
    q, k, v = (composition_scores(model, kind)[0, 0] for kind in KINDS)
    assert float(k) == pytest.approx(8 ** -0.5, rel=1e-5)  # ||F Sᵀ S|| / (||F Sᵀ|| ||S Sᵀ||) = sqrt(8) / 8
    assert float(k) > 1.5 * base  # the baseline is 0.18 at these small sizes
    assert float(q) < 1e-6 and float(v) < 1e-6


def test_q_composition_when_the_query_reads_what_h1_writes(tiny_cfg):
    model = hand_built(tiny_cfg, query_reads_h1=True)
    q, k, v = (composition_scores(model, kind)[0, 0] for kind in KINDS)
    assert float(q) == pytest.approx(8 ** -0.5, rel=1e-5)
    assert float(k) < 1e-6 and float(v) < 1e-6


def test_baseline_is_reproducible_and_matches_the_probe():
    b = composition_baseline(256, 32, n_samples=64, seed=0)
    assert b == composition_baseline(256, 32, n_samples=64, seed=0)
    assert 0.055 < b < 0.072  # PAPER.md: 0.063 for d_model 256, d_head 32


def test_baseline_against_dense_random_scores():
    g = torch.Generator().manual_seed(5)

    def dense_sample():  # [400, 24, 24], each a [24, 6] @ [6, 24] Gaussian product
        return (torch.randn(400, 24, 6, generator=g, dtype=torch.float64)
                @ torch.randn(400, 6, 24, generator=g, dtype=torch.float64))

    Wa, Wb = dense_sample(), dense_sample()
    dense_mean = float((fro(Wa @ Wb) / (fro(Wa) * fro(Wb))).mean())
    assert composition_baseline(24, 6, n_samples=400, seed=1) == pytest.approx(dense_mean, rel=0.05)


def test_rejects_bad_arguments(tiny_cfg):
    model = two_layer(tiny_cfg)
    with pytest.raises(ValueError, match="kind"):
        composition_scores(model, "X")
    with pytest.raises(ValueError, match="layer1 < layer2"):
        composition_scores(model, "K", 1, 1)


def test_k_composition_and_virtual_ov_circuits(tiny_cfg):
    model = two_layer(tiny_cfg)
    W_E, W_U = model.embed.W_E.T, model.unembed.W_U.T  # the paper's [d_model, d_vocab], [d_vocab, d_model]
    ov1, _ = paper_matrices(model, 0, 2)
    ov2, qk2 = paper_matrices(model, 1, 3)
    torch.testing.assert_close(k_composition_circuit(model, 0, 2, 1, 3).dense(), W_E.T @ qk2 @ ov1 @ W_E)
    torch.testing.assert_close(virtual_ov_circuit(model, 0, 2, 1, 3).dense(), W_U @ ov2 @ ov1 @ W_E)


def test_composes_is_a_multiple_of_the_baseline():
    from circuits.analysis.composition import COMPOSES, composes

    assert composes(COMPOSES * 0.1, 0.1) and not composes(COMPOSES * 0.1 - 1e-6, 0.1)


def test_patterns_without_a_writer(tiny_cfg):
    model = make_model(tiny_cfg, init_std=0.3)  # sharp patterns, so that removing a writer shows
    x = torch.randint(0, tiny_cfg.d_vocab, (2, tiny_cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(x)
    real = cache["blocks.1.attn.hook_pattern"]
    out = model.blocks[0].attn.head_outputs(cache["blocks.0.hook_resid_pre"], cache["blocks.0.attn.hook_pattern"])
    for side in ("q", "k"):  # putting the writer's own output back gives the real patterns
        torch.testing.assert_close(patterns_without_writer(model, cache, (0, 1), 1, side, out[:, :, 1]), real)
    # without head 1 in the queries: the same as a forward pass whose layer-1 queries read x_1 - out^{0.1}
    attn, x1, pos = model.blocks[1].attn, cache["blocks.1.hook_resid_pre"], cache["hook_pos_embed"]
    q = (x1 - out[:, :, 1] + pos) @ attn.W_Q[2]  # head 1.2, row vectors
    k = (x1 + pos) @ attn.W_K[2]
    scores = (q @ k.transpose(-1, -2) / tiny_cfg.d_head ** 0.5).masked_fill(
        torch.ones(tiny_cfg.n_ctx, tiny_cfg.n_ctx, dtype=torch.bool).triu(1), float("-inf"))
    got = patterns_without_writer(model, cache, (0, 1), 1, "q")
    torch.testing.assert_close(got[:, 2], scores.softmax(-1), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got, real)
    assert not torch.allclose(patterns_without_writer(model, cache, (0, 1), 1, "k"), got)
    with pytest.raises(ValueError, match="side"):
        patterns_without_writer(model, cache, (0, 1), 1, "v")
