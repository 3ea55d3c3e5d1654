"""Positional heads (paper "One-Layer Attention-Only Transformers"): heads whose pattern is decided by
position alone, measured on real text against the position·position score term (``position_scores``).
"""

from __future__ import annotations

import torch

from .circuits import position_scores
from circuits.model.transformer import AttnOnlyTransformer

RECENT = 8  # the "recent window" of a recency profile: the token itself and the 7 before it


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension with sources after the destination masked, [..., dst, src]."""
    n = scores.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


@torch.no_grad()
def attention_summary(model: AttnOnlyTransformer, tokens: torch.Tensor, layer: int = 0) -> dict[str, torch.Tensor]:
    """Per-head attention statistics on text ``tokens`` [batch, pos], each a tensor [n_heads]:

    ``self``: mean A[t, t]; ``previous``: mean A[t, t-1]; ``entropy``: mean −Σ_s A[t, s] ln A[t, s] (nats);
    ``positional agreement``: 1 − mean total-variation distance between A[t] and the pattern the
    position·position score term alone gives (``position_scores``), i.e. 1 when position alone decides
    where the head looks; ``uniform agreement``: the same agreement for uniform causal attention (1/(t+1) on
    every source), which knows nothing of positions: the baseline the positional agreement must beat to say
    anything (a head that spreads its attention agrees with any flat pattern); ``distance``: mean
    Σ_s A[t, s] (t − s), how many tokens back the head looks on average; ``recent``: mean attention on the
    last ``RECENT`` tokens (s > t − RECENT, the token itself included); ``uniform distance`` and ``uniform
    recent``: the same two for uniform causal attention (scalars). Means over the batch and destinations t ≥ 1
    (t = 0 can only attend to itself).
    """
    _, cache = model.run_with_cache(tokens)
    A = cache[f"blocks.{layer}.attn.hook_pattern"][..., 1:, :]  # [b, H, n-1 (dst >= 1), n]
    n = A.shape[-1]
    self_att = A.diagonal(offset=1, dim1=-2, dim2=-1)  # A[t, t], t >= 1 (row t - 1 of the slice)
    prev = A.diagonal(offset=0, dim1=-2, dim2=-1)  # A[t, t-1], t >= 1
    entropy = -(A * A.clamp_min(1e-30).log()).sum(-1)
    pos = causal_softmax(position_scores(model, layer, n))[:, 1:]  # [H, n-1, n]
    tv = 0.5 * (A - pos).abs().sum(-1)
    uniform = causal_softmax(torch.zeros(n, n))[1:]  # [n-1, n]
    tv_uniform = 0.5 * (A - uniform).abs().sum(-1)
    back = (torch.arange(n)[:, None] - torch.arange(n)).clamp_min(0)[1:].float()  # t − s, [n-1, n]
    near = (back < RECENT).float()  # s > t − RECENT (sources after t are masked out of A)
    mean = lambda x: x.mean(dim=(0, 2))
    return {"self": mean(self_att), "previous": mean(prev), "entropy": mean(entropy),
            "positional agreement": 1 - mean(tv), "uniform agreement": 1 - mean(tv_uniform),
            "distance": mean((A * back).sum(-1)), "recent": mean((A * near).sum(-1)),
            "uniform distance": (uniform * back).sum(-1).mean(), "uniform recent": (uniform * near).sum(-1).mean()}
