"""Zero-layer bigram maths against direct computation."""

import numpy as np
import torch

from circuits.analysis.bigrams import model_bigram_logprobs, rank_correlation
from circuits.config import ModelConfig
from circuits.model.transformer import AttnOnlyTransformer


def dense_bigram_counts(stream: np.ndarray, d_vocab: int) -> np.ndarray:
    """Counts of (current, next) in a stream, [d_vocab, d_vocab]: the dense reference of the sparse helpers."""
    counts = np.zeros((d_vocab, d_vocab), dtype=np.int64)
    np.add.at(counts, (stream[:-1], stream[1:]), 1)
    return counts


def dense_bigram_logprobs(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Add-alpha smoothed log P(next | current), [d_vocab, d_vocab]."""
    smoothed = counts + alpha
    return np.log(smoothed / smoothed.sum(1, keepdims=True))


def test_dense_references_are_the_loop():
    stream = np.random.default_rng(0).integers(0, 7, size=500)
    counts = dense_bigram_counts(stream, 7)
    for s in range(7):
        for t in range(7):
            assert counts[s, t] == sum(1 for a, b in zip(stream[:-1], stream[1:]) if a == s and b == t)
    np.testing.assert_allclose(np.exp(dense_bigram_logprobs(counts, 0.01)).sum(1), 1.0)


def test_zero_layer_model_is_its_bigram_table():
    cfg = ModelConfig(n_layers=0, d_model=16, n_heads=1, d_head=4, n_ctx=8, d_vocab=23)
    model = AttnOnlyTransformer(cfg)
    for p in model.parameters():
        p.data.normal_(0, 1)
    tokens = torch.randint(0, 23, (2, 8))
    table = model_bigram_logprobs(model, np.arange(23))
    torch.testing.assert_close(model(tokens).log_softmax(-1), table[tokens])


def test_rank_correlation():
    assert rank_correlation(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == 1.0
    assert rank_correlation(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == -1.0
