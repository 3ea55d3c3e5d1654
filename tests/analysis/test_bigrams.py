"""Zero-layer bigram maths against direct computation."""

import numpy as np
import torch

from circuits.analysis.bigrams import (bigram_loss, corpus_bigram_counts, corpus_bigram_logprobs, model_bigram_logprobs,
                              rank_correlation)
from circuits.config import ModelConfig
from circuits.metrics.losses import split_loss
from circuits.model.transformer import AttnOnlyTransformer


def test_corpus_counts_match_a_loop():
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 7, size=500)
    sources = np.array([1, 4, 6])
    counts = corpus_bigram_counts(stream, sources, 7)
    for i, s in enumerate(sources):
        for t in range(7):
            assert counts[i, t] == sum(1 for a, b in zip(stream[:-1], stream[1:]) if a == s and b == t)


def test_zero_layer_model_is_its_bigram_table():
    cfg = ModelConfig(n_layers=0, d_model=16, n_heads=1, d_head=4, n_ctx=8, d_vocab=23)
    model = AttnOnlyTransformer(cfg)
    for p in model.parameters():
        p.data.normal_(0, 1)
    tokens = torch.randint(0, 23, (2, 8))
    table = model_bigram_logprobs(model, np.arange(23))
    torch.testing.assert_close(model(tokens).log_softmax(-1), table[tokens])
    stream = np.random.default_rng(1).integers(0, 23, size=8 * 20 + 1)
    loss = bigram_loss(stream, lambda rows: model_bigram_logprobs(model, rows).numpy(), 23, chunk=5)
    assert abs(loss - split_loss(model, stream)) < 1e-4


def test_smoothed_corpus_table_is_normalised():
    counts = np.array([[0, 3, 1], [5, 0, 0]])
    probs = np.exp(corpus_bigram_logprobs(counts))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert probs[0, 1] > probs[0, 2] > probs[0, 0]


def test_rank_correlation():
    assert rank_correlation(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == 1.0
    assert rank_correlation(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == -1.0
