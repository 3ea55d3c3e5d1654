"""Training and validation windows cut from a flat token stream (a memmap of a split), and the check that
the stream's ids fit the model's vocabulary."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def sample_batch(tokens: np.ndarray, batch_size: int, n_ctx: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``n_ctx + 1`` tokens, [batch, n_ctx + 1] (inputs + targets).

    Deterministic given ``generator``; windows may cross document boundaries (marked by eos).
    """
    high = len(tokens) - n_ctx - 1
    if high <= 0:
        raise ValueError(f"token stream of length {len(tokens)} is too short for windows of {n_ctx + 1}")
    starts = torch.randint(0, high, (batch_size,), generator=generator).numpy()
    return torch.from_numpy(np.stack([np.asarray(tokens[s: s + n_ctx + 1], dtype=np.int64) for s in starts]))


def iter_eval_batches(tokens: np.ndarray, batch_size: int, n_ctx: int, n_batches: int) -> Iterator[torch.Tensor]:
    """``n_batches`` fixed batches of evenly spaced windows, [batch, n_ctx + 1], the same every call."""
    n = batch_size * n_batches
    high = len(tokens) - n_ctx - 1
    if high <= 0:
        raise ValueError(f"token stream of length {len(tokens)} is too short for windows of {n_ctx + 1}")
    starts = np.linspace(0, high, n, dtype=np.int64)
    for i in range(n_batches):
        chunk = starts[i * batch_size: (i + 1) * batch_size]
        yield torch.from_numpy(np.stack([np.asarray(tokens[s: s + n_ctx + 1], dtype=np.int64) for s in chunk]))


def check_token_range(tokens: np.ndarray, d_vocab: int, what: str = "token stream") -> None:
    """Raise ``ValueError`` if any id is >= ``d_vocab``: an embedding lookup must never wrap."""
    if len(tokens) == 0:
        return
    top = max(int(tokens[i:i + (1 << 26)].max()) for i in range(0, len(tokens), 1 << 26))
    if top >= d_vocab:
        raise ValueError(f"{what} holds token id {top} but the vocabulary has only {d_vocab} ids "
                         "(tokens built with another tokenizer? delete them and rebuild)")
