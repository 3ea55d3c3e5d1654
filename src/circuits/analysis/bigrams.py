"""Zero-layer transformers are bigram tables (paper section "Zero-Layer Transformers").

With no attention layers, T = W_U W_E: the logits of the next token depend only on the current
token, so ``log_softmax(W_U W_E)`` (in our row convention ``W_E @ W_U``) is a bigram table read
straight from the weights. We compare it with the corpus's bigram statistics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .circuits import direct_path
from circuits.model.transformer import AttnOnlyTransformer


def model_bigram_logprobs(model: AttnOnlyTransformer, sources: np.ndarray) -> torch.Tensor:
    """log P_model(next | current) = log_softmax(W_E[current] @ W_U) for each current token in
    ``sources`` (direct path only: for a zero-layer model this is the whole model), [n, d_vocab]."""
    with torch.no_grad():
        logits = direct_path(model).T.rows(torch.as_tensor(sources, dtype=torch.long))  # [n, out]
    return logits.log_softmax(-1)


def corpus_bigram_counts(tokens: np.ndarray, sources: np.ndarray, d_vocab: int) -> np.ndarray:
    """Counts of (current, next) in the stream for current tokens in ``sources``, [n, d_vocab]."""
    row_of = np.full(d_vocab, -1, dtype=np.int64)
    row_of[sources] = np.arange(len(sources))
    stream = np.asarray(tokens, dtype=np.int64)
    rows = row_of[stream[:-1]]
    keep = rows >= 0
    flat = rows[keep] * d_vocab + stream[1:][keep]
    return np.bincount(flat, minlength=len(sources) * d_vocab).reshape(len(sources), d_vocab)


def corpus_bigram_logprobs(counts: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """Add-alpha smoothed log P_corpus(next | current) from bigram counts, [n, d_vocab]."""
    smoothed = counts + alpha
    return np.log(smoothed / smoothed.sum(1, keepdims=True))


def bigram_loss(tokens: np.ndarray, logprobs_of: callable, d_vocab: int, chunk: int = 512) -> float:
    """Mean -log P(next | current) over a stream, for a bigram table given as a row function."""
    stream = np.asarray(tokens, dtype=np.int64)
    cur, nxt = stream[:-1], stream[1:]
    total = 0.0
    for start in range(0, d_vocab, chunk):
        rows = np.arange(start, min(start + chunk, d_vocab))
        mask = (cur >= start) & (cur < rows[-1] + 1)
        if mask.any():
            table = np.asarray(logprobs_of(rows))
            total -= table[cur[mask] - start, nxt[mask]].sum()
    return total / len(cur)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def top_next_tokens(logprobs: np.ndarray, decode, k: int = 5) -> list[str]:
    """The ``k`` most likely next tokens of one table row, decoded, with probabilities."""
    order = np.argsort(-logprobs)[:k]
    return [f"{decode(int(i))!r} {np.exp(logprobs[i]):.2f}" for i in order]
