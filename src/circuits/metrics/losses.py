"""Next-token losses: per token, by position in the context, and over a whole held-out split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from circuits.model.transformer import AttnOnlyTransformer


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """Next-token cross-entropy in nats of logits [batch, pos, d_vocab] at targets [batch, pos]: the mean,
    or [batch, pos] when ``per_token``."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    loss = loss.view(targets.shape)
    return loss if per_token else loss.mean()


@torch.no_grad()
def per_token_loss(model: AttnOnlyTransformer, windows: torch.Tensor, positions: list[int] | None = None
                   ) -> torch.Tensor:
    """Next-token loss [batch, pos] of windows [batch, n_ctx + 1] (inputs ``w[:, :-1]``, targets ``w[:, 1:]``);
    with ``positions``, only at those positions [batch, len(positions)], unembedding nothing else (most of a
    forward pass's cost at our width)."""
    x = model.residual_stream(windows[:, :-1])  # x_L: [batch, pos, d_model]
    targets = windows[:, 1:]
    if positions is not None:
        x, targets = x[:, positions], targets[:, positions]
    return loss_fn(model.unembed(x), targets, per_token=True)


def position_bins(n_pos: int, n_bins: int = 32) -> list[int]:
    """Edges of about ``n_bins`` bins over positions 0 .. n_pos - 1, spaced evenly in log(1 + position), so
    that the first positions, where every extra token of context matters most, get bins of their own.
    Bin i covers positions edges[i] <= t < edges[i + 1]."""
    edges = np.unique(np.round(np.geomspace(1, n_pos + 1, n_bins + 1)).astype(int) - 1)
    return [int(e) for e in edges]


def loss_by_position(per_token: torch.Tensor, edges: list[int]) -> list[float]:
    """Mean loss in each bin of positions (``position_bins``) of a per-token loss [batch, pos]."""
    return [float(per_token[:, a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]
