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
from .skip_trigram_bugs import BigramCounts
from circuits.model.transformer import AttnOnlyTransformer


def model_bigram_logprobs(model: AttnOnlyTransformer, sources: np.ndarray) -> torch.Tensor:
    """log P_model(next | current) = log_softmax(W_E[current] @ W_U) for each current token in
    ``sources`` (direct path only: for a zero-layer model this is the whole model), [n, d_vocab]."""
    with torch.no_grad():
        logits = direct_path(model).T.rows(torch.as_tensor(sources, dtype=torch.long))  # [n, out]
    return logits.log_softmax(-1)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


# ---- the same without a dense [n, d_vocab] table (GPT-2's vocabulary) ---------------------------------------

def smoothed_pair_logprobs(counts: BigramCounts, current, nxt, alpha: float = 0.01) -> np.ndarray:
    """Add-alpha log P(next | current) = log((n(c, x) + α) / (n(c) + α d_vocab)) for arrays of pairs, from sparse
    counts (``BigramCounts``): the entries of ``corpus_bigram_logprobs`` without building its rows."""
    total = counts.unigram[np.asarray(current, dtype=np.int64)]
    return np.log((counts.count(current, nxt) + alpha) / (total + alpha * counts.d_vocab))


def frequent_pairs(counts: BigramCounts, sources: np.ndarray,
                   min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (current, next) with current in ``sources`` seen at least ``min_count`` times:
    ``(current [n], next [n], count [n])``, in increasing order of current * d_vocab + next."""
    keep = (counts.pair_counts >= min_count) & np.isin(counts.keys // counts.d_vocab, np.asarray(sources))
    keys = counts.keys[keep]
    return keys // counts.d_vocab, keys % counts.d_vocab, counts.pair_counts[keep]


def counted_top_next(counts: BigramCounts, current: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most frequent successors of ``current`` and their unsmoothed probabilities P(next | current),
    most frequent first (ties: lower id first)."""
    lo, hi = np.searchsorted(counts.keys, [current * counts.d_vocab, (current + 1) * counts.d_vocab])
    n = counts.pair_counts[lo:hi]
    order = np.argsort(-n, kind="stable")[:k]
    return counts.keys[lo:hi][order] % counts.d_vocab, n[order] / max(int(counts.unigram[current]), 1)


def model_pair_logprobs(model: AttnOnlyTransformer, current, nxt, chunk: int = 256) -> np.ndarray:
    """log P_model(next | current) = log_softmax(W_E[current] @ W_U)[next] for arrays of pairs, [n]; only the
    table rows of the currents that occur are built, ``chunk`` at a time."""
    cur, nxt = np.asarray(current, dtype=np.int64), np.asarray(nxt, dtype=np.int64)
    rows, inverse = np.unique(cur, return_inverse=True)
    out = np.empty(len(cur), dtype=np.float64)
    for start in range(0, len(rows), chunk):
        table = model_bigram_logprobs(model, rows[start:start + chunk]).double().numpy()  # [chunk, d_vocab]
        sel = (inverse >= start) & (inverse < start + chunk)
        out[sel] = table[inverse[sel] - start, nxt[sel]]
    return out
