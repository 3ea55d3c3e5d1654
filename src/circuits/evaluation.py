"""Held-out loss on a whole split, for the final numbers the book and the README state."""

from __future__ import annotations

import numpy as np
import torch

from .model import AttnOnlyTransformer, loss_fn


@torch.no_grad()
def split_loss(model: AttnOnlyTransformer, tokens: np.ndarray, batch_size: int = 32,
               max_windows: int | None = None) -> float:
    """Mean next-token loss (nats, fp32) over consecutive non-overlapping windows of ``tokens``.

    Window w covers tokens[w * n_ctx : (w + 1) * n_ctx + 1]: every token but the first is
    predicted exactly once, from a context of 0 .. n_ctx - 1 earlier tokens.
    """
    n_ctx = model.cfg.n_ctx
    n_windows = (len(tokens) - 1) // n_ctx
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for one window of {n_ctx + 1}")
    model.eval()
    total, count = 0.0, 0
    for start in range(0, n_windows, batch_size):
        idx = np.arange(start, min(start + batch_size, n_windows))[:, None] * n_ctx + np.arange(n_ctx + 1)
        batch = torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))
        loss = loss_fn(model(batch[:, :-1]), batch[:, 1:], per_token=True)
        total += float(loss.sum())
        count += loss.numel()
    return total / count
