"""Olsson et al.'s scores against looped versions of their definitions and hand-built heads."""

import numpy as np
import pytest
import torch

from circuits.config import ModelConfig
from circuits.metrics.olsson import (copying_scores, icl_positions, in_context_learning_score, induction_targets,
                                     prefix_matching_scores, random_token_samples, repeated_random_tokens)
from circuits.model.transformer import AttnOnlyTransformer

from ..analysis.models import make_model


def test_copying_score_is_the_looped_definition(tiny_cfg):
    model = make_model(tiny_cfg)
    samples = torch.tensor([[3, 7, 11, 20, 42, 60], [1, 2, 5, 8, 13, 21]])
    got = copying_scores(model, samples)
    assert got.shape == (2, 4)
    for l in range(2):
        attn = model.blocks[l].attn
        for h in range(4):
            ratios = []
            for sample in samples.tolist():
                for t in sample:
                    effect = model.embed.W_E[t] @ attn.W_V[h] @ attn.W_O[h] @ model.unembed.W_U  # every logit
                    on_sample = effect[sample]  # the sample's tokens only
                    raised = torch.relu(on_sample - on_sample.mean())
                    ratios.append(float(raised[sample.index(t)] / raised.sum()))
            assert float(got[l, h]) == pytest.approx(2 * np.mean(ratios) - 1, abs=1e-5)


def test_copying_score_of_hand_built_heads():
    """W_U = W_Eᵀ with orthonormal embeddings: OV = I copies (+1), OV = -I raises every token but the attended
    one (-1)."""
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=16, n_ctx=8, d_vocab=12)
    model = AttnOnlyTransformer(cfg).requires_grad_(False)
    Q, _ = torch.linalg.qr(torch.randn(16, 12))
    attn = model.blocks[0].attn
    model.embed.W_E.copy_(Q.T)
    model.unembed.W_U.copy_(Q)
    attn.W_V.copy_(torch.eye(16).expand(2, 16, 16))
    attn.W_O.copy_(torch.stack([torch.eye(16), -torch.eye(16)]))
    got = copying_scores(model, torch.arange(12)[None])
    torch.testing.assert_close(got[0], torch.tensor([1.0, -1.0]))


def test_copying_is_normalised_over_the_sample_not_the_vocabulary():
    """A head that raises the attended token and, by less, every token outside the sample still copies."""
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=1, d_head=16, n_ctx=8, d_vocab=40)
    model = AttnOnlyTransformer(cfg).requires_grad_(False)
    E = torch.zeros(40, 16)
    E[:16] = torch.eye(16)
    model.embed.W_E.copy_(E)
    U = torch.zeros(16, 40)
    U[:, :16] = torch.eye(16)
    U[:, 16:] = 0.5  # every token outside the sample is raised by any head output
    model.unembed.W_U.copy_(U)
    model.blocks[0].attn.W_V.copy_(torch.eye(16)[None])
    model.blocks[0].attn.W_O.copy_(torch.eye(16)[None])
    assert float(copying_scores(model, torch.arange(10)[None])) == pytest.approx(1.0)


def test_random_token_samples_are_distinct_and_of_middling_frequency():
    counts = np.arange(1000)[::-1] * 10 + 10  # token 0 the commonest
    samples = random_token_samples(counts, n_samples=4, n_tokens=25)
    assert samples.shape == (4, 25)
    assert all(len(set(row.tolist())) == 25 for row in samples)
    assert samples.min() >= 10 and samples.max() < 500  # commonest 1 % and rarest half excluded


def test_induction_targets_are_the_tokens_after_earlier_copies():
    tokens = torch.tensor([[5, 1, 2, 5, 3, 1, 5]])
    mask = induction_targets(tokens)[0]
    want = torch.zeros(7, 7, dtype=torch.bool)
    for i in range(7):
        for j in range(1, i + 1):
            want[i, j] = bool(tokens[0, j - 1] == tokens[0, i]) and j - 1 < i
    torch.testing.assert_close(mask, want)


def test_induction_targets_stay_on_the_tokens_device():
    # regression: the causal mask was built on the CPU, so evaluation crashed on CUDA at the first eval;
    # the meta device catches any such mix-up without a GPU
    assert induction_targets(torch.zeros(2, 5, dtype=torch.long, device="meta")).device.type == "meta"


def test_prefix_matching_is_the_looped_mean(tiny_cfg):
    model = make_model(tiny_cfg)
    counts = np.arange(61)[::-1] * 10 + 10
    repeated = repeated_random_tokens(counts, n_samples=3, seq_len=5, repeats=4)
    got = prefix_matching_scores(model, repeated)
    _, cache = model.run_with_cache(repeated)
    for l in range(2):
        A = cache[f"blocks.{l}.attn.hook_pattern"]
        for h in range(4):
            values = [float(sum(A[b, h, i, j] for j in range(1, i + 1) if repeated[b, j - 1] == repeated[b, i]))
                      for b in range(3) for i in range(21) if any(repeated[b, k] == repeated[b, i] for k in range(i))]
            assert float(got[l, h]) == pytest.approx(np.mean(values), abs=1e-5)


def test_icl_score_compares_late_and_early_bands():
    assert icl_positions(2048) == (50, 500) and icl_positions(257) == (25, 256)
    loss = torch.ones(4, 256)
    loss[:, 200:] = 0.5  # better predictions late in the context
    assert in_context_learning_score(loss) == pytest.approx(-0.5)
    assert in_context_learning_score(torch.ones(4, 256)) == 0.0
