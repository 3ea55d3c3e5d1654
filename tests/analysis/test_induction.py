"""The two circuits of an induction head (positivity, eigenvalues, the K-composition circuit's orientation) and
the previous-token head, against dense versions and hand-built heads."""

import math

import numpy as np
import pytest
import torch

from circuits.analysis.circuits import bilinear_scores
from circuits.analysis.composition import k_composition_circuit
from circuits.analysis.induction import (induction_eigenvalues, induction_positivity, offset_profile,
                                         attends_over_several_tokens, recent_mass,
                                         several_token_heads, source_preference)
from circuits.config import ModelConfig
from circuits.metrics.heads import previous_token_heads
from circuits.metrics.olsson import previous_token_scores
from circuits.model.transformer import AttnOnlyTransformer

from .models import dense_positivity, make_model, tokens_for


def previous_token_model(prev: int = 2) -> AttnOnlyTransformer:
    """Head 0.``prev`` attends to the previous position: positions in dims 0-15 (one-hot), tokens above."""
    cfg = ModelConfig(n_layers=2, d_model=48, n_heads=4, d_head=16, n_ctx=16, d_vocab=30, init_std=0.05)
    model = AttnOnlyTransformer(cfg)
    model.reset_parameters(torch.Generator().manual_seed(1))
    model.requires_grad_(False)
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
        model.pos_embed.W_pos[:, :16] = torch.eye(16)
        model.embed.W_E[:, :16] = 0
        a0 = model.blocks[0].attn
        a0.W_Q[prev] = 0
        a0.W_K[prev] = 0
        a0.W_Q[prev, :16] = 40 * torch.eye(16)
        a0.W_K[prev, :16] = torch.eye(16).roll(1, dims=1)  # key of position j lands on query j + 1
    return model


def test_previous_token_head_is_found_not_hard_coded():
    for prev in (1, 3):
        model = previous_token_model(prev)
        text = tokens_for(model.cfg, batch=4)
        assert float(previous_token_scores(model, text)[0, prev]) > 0.99
        assert previous_token_heads(previous_token_scores(model, text)) == [(0, prev)]


def test_k_composition_circuit_orientation_is_dst_by_src(tiny_cfg):
    """Entry [dst, src]: the layer-1 score of a query token dst against a key position where the
    layer-0 head wrote W_OV W_E[src] (row vectors: W_E[src] W_V W_O)."""
    model = make_model(tiny_cfg)
    a0 = model.blocks[0].attn
    dst, src = torch.tensor([1, 5, 9]), torch.tensor([2, 4, 8, 30])
    for h1, h2 in [(0, 0), (2, 3)]:
        key_in = model.embed.W_E[src] @ a0.W_V[h1] @ a0.W_O[h1]
        want = bilinear_scores(model, 1, model.embed.W_E[dst], key_in)[h2]  # scaled by 1/sqrt(d_head)
        got = k_composition_circuit(model, 0, h1, 1, h2).block(dst, src) / math.sqrt(tiny_cfg.d_head)
        torch.testing.assert_close(got, want)


def test_induction_positivity_and_eigenvalues_match_dense(tiny_cfg):
    model = make_model(tiny_cfg, init_std=0.1)
    prev = (0, 2)
    pos = induction_positivity(model, prev)
    eig = induction_eigenvalues(model, prev)
    assert eig["ov"].shape == eig["qk"].shape == (4, tiny_cfg.d_head) and np.iscomplexobj(eig["qk"])
    E, U = model.embed.W_E, model.unembed.W_U
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    for h in range(4):
        ov_dense = (E @ a1.W_V[h] @ a1.W_O[h] @ U).T  # paper's W_U W_OV W_E [out, src]
        kc_dense = E @ a1.W_Q[h] @ a1.W_K[h].T @ (E @ a0.W_V[2] @ a0.W_O[2]).T  # [dst, src]
        assert float(pos["ov"][h]) == pytest.approx(dense_positivity(ov_dense), abs=1e-4)
        assert float(pos["qk"][h]) == pytest.approx(dense_positivity(kc_dense), abs=1e-4)
        lam = torch.linalg.eigvals(kc_dense.double())
        top = lam[lam.abs().argsort(descending=True)][: tiny_cfg.d_head]
        assert np.sort_complex(top.numpy()) == pytest.approx(np.sort_complex(eig["qk"][h]), abs=1e-5)
    with pytest.raises(ValueError, match="after layer 0"):
        induction_positivity(model, prev, layer=0)




def test_offset_profile_matches_a_loop(tiny_cfg):
    model = make_model(tiny_cfg, init_std=0.2)
    text = tokens_for(tiny_cfg, batch=3)
    k = 5
    got = offset_profile(model, text, layer=1, max_offset=k)
    _, cache = model.run_with_cache(text)
    A = cache["blocks.1.attn.hook_pattern"]  # [b, H, dst, src]
    n = text.shape[1]
    want = torch.zeros(tiny_cfg.n_heads, k + 2)
    for t in range(k, n):
        for s in range(t + 1):
            d = t - s
            want[:, min(d, k + 1)] += A[:, :, t, s].mean(0)
    want /= n - k
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(recent_mass(got, 3), want[:, 1:4].sum(-1))
    torch.testing.assert_close(offset_profile(model, text, layer=1, max_offset=k, cache=cache), got)
    with pytest.raises(ValueError, match="max_offset"):
        offset_profile(model, text, max_offset=n)


def test_offset_profile_finds_the_previous_token_head():
    model = previous_token_model(prev=3)
    text = tokens_for(model.cfg, batch=4)
    profile = offset_profile(model, text, max_offset=4)
    assert float(profile[3, 1]) > 0.99 and int(profile[:, 1].argmax()) == 3


def test_several_token_heads_rule():
    def profile(rows):  # offsets 0..4 and "further"; each row sums to 1
        return torch.tensor(rows, dtype=torch.float64)

    rows = [[0.0, 0.95, 0.05, 0.0, 0.0, 0.0],  # 0: previous-token head: one offset, not several
            [0.1, 0.25, 0.2, 0.2, 0.15, 0.1],  # 1: spread over the last 4 tokens (0.8 of its attention)
            [0.9, 0.05, 0.0, 0.0, 0.0, 0.05],  # 2: present token
            [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # 3: far back
            [0.2, 0.2, 0.15, 0.1, 0.1, 0.25]]  # 4: spread, 0.55 on the last 4 tokens
    assert several_token_heads(profile(rows), k=4) == [1, 4]  # most attention on those tokens first
    assert attends_over_several_tokens(profile(rows), k=4).tolist() == [False, True, False, False, True]
    narrow = [0.1, 0.1, 0.6, 0.05, 0.05, 0.1]  # mostly one offset: not "several tokens"
    far = [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]  # spread, but most attention further back
    assert not bool(attends_over_several_tokens(profile([narrow]), k=4)[0])
    assert not bool(attends_over_several_tokens(profile([far]), k=4)[0])
    assert several_token_heads(profile(rows), k=2) == []  # over 2 tokens, head 1 has 0.45 < 0.5


def test_source_preference():
    n = 6
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]  # [dst, src], rows sum to 1
    tokens = torch.tensor([[3, 1, 3, 2, 0, 1]])
    ratio, count = source_preference(uniform[None], tokens, d_vocab=5)
    torch.testing.assert_close(ratio, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))  # 4 never occurs
    torch.testing.assert_close(count, torch.tensor([1.0, 2.0, 1.0, 2.0, 0.0]))
    on_first = torch.zeros(1, n, n)
    on_first[..., 0] = 1  # every destination attends to position 0 (token 3)
    ratio, _ = source_preference(on_first, tokens, d_vocab=5)
    expected0 = sum(1 / (t + 1) for t in range(n))  # what a uniform pattern gives position 0
    assert float(ratio[3]) == pytest.approx(n / expected0 / 2)  # token 3: positions 0 (n / e0) and 2 (0)
    assert float(ratio[1]) == 0.0
