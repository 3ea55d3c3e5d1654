"""The two circuits of an induction head, read from the weights (paper "Two-layer transformers").

An induction head of the last layer K-composes with a layer-0 previous-token head: its QK circuit through that
head, ``W_Eᵀ W_QK^{h2} W_OV^{h_prev} W_E``, has mostly positive eigenvalues (a destination token attends to the
position after an earlier copy of itself); and it copies: its OV circuit ``W_U W_OV^{h2} W_E`` has mostly
positive eigenvalues. No head index is ever hard-coded: the previous-token head is the layer-0 head with the
highest previous-token score.

The paper's erratum adds a second layer-0 partner: in the corrected composition figure two of the induction heads
also compose with "a layer-0 head that attends over the last several tokens". ``offset_profile`` measures where
each head attends by distance on real text, and ``several_token_heads`` picks such heads by a stated rule.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.metrics.heads import Head
from circuits.model.transformer import AttnOnlyTransformer

from .circuits import eigen_positivity, ov_circuit
from .composition import k_composition_circuit


RECENT_TOKENS = 8  # "the last several tokens" of the erratum: the sources 1 to 8 positions before the destination
SPREAD_SHARE = 0.5  # a head "attends over the last several tokens" when at least this share of its attention
# falls on those sources and no single one of them takes more than this share of that part


@torch.no_grad()
def offset_profile(model: AttnOnlyTransformer, tokens: torch.Tensor, layer: int = 0,
                   max_offset: int = RECENT_TOKENS, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Where each head of ``layer`` attends, by distance, on text ``tokens`` [batch, pos]: [n_heads, max_offset + 2].

    Column d (0 <= d <= max_offset) is the mean attention ``A[t, t - d]`` (d = 0: the present token, 1: the
    previous one); the last column is the rest, ``sum_{d > max_offset} A[t, t - d]``. Means over the batch
    and the destinations t >= max_offset (where every offset exists), so each row sums to 1. ``cache``: the
    forward pass on ``tokens`` if one was already run.
    """
    n = tokens.shape[-1]
    if not 0 <= max_offset < n:
        raise ValueError(f"max_offset must be in [0, {n - 1}] for sequences of {n} tokens, got {max_offset}")
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    A = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, dst, src]
    near = torch.stack([A.diagonal(offset=-d, dim1=-2, dim2=-1)[..., max_offset - d:].mean(dim=(0, 2))
                        for d in range(max_offset + 1)], dim=-1)  # [head, max_offset + 1]
    return torch.cat([near, (1 - near.sum(-1, keepdim=True)).clamp_min(0)], dim=-1)


def recent_mass(profile: torch.Tensor, k: int = RECENT_TOKENS) -> torch.Tensor:
    """Attention on the ``k`` tokens before the destination (offsets 1..k) from ``offset_profile``, [n_heads]."""
    return profile[..., 1:k + 1].sum(-1)


def attends_over_several_tokens(profile: torch.Tensor, k: int = RECENT_TOKENS) -> torch.Tensor:
    """The erratum's "attends over the last several tokens", for each row of ``offset_profile`` [n_heads, ...]:
    at least ``SPREAD_SHARE`` of the head's attention on the ``k`` tokens before the destination, and no single
    one of them holding more than ``SPREAD_SHARE`` of that part (so the attention is spread, not a
    previous-token head). A rule we state; the paper describes the head in words only. Returns bool [n_heads]."""
    mass = recent_mass(profile, k)
    return (mass >= SPREAD_SHARE) & (profile[..., 1:k + 1].amax(-1) <= SPREAD_SHARE * mass)


def several_token_heads(profile: torch.Tensor, k: int = RECENT_TOKENS) -> list[int]:
    """The heads of one layer that attend over the last several tokens (``attends_over_several_tokens``), from
    ``offset_profile`` [n_heads, ...], the most attention on those tokens first."""
    mass = recent_mass(profile, k)
    found = [h for h in range(profile.shape[0]) if bool(attends_over_several_tokens(profile[h], k))]
    return sorted(found, key=lambda h: -float(mass[h]))


def last_layer(model: AttnOnlyTransformer, layer: int | None) -> int:
    layer = model.cfg.n_layers - 1 if layer is None else layer
    if not 1 <= layer < model.cfg.n_layers:
        raise ValueError(f"induction needs a layer after layer 0; got {layer} in a {model.cfg.n_layers}-layer model")
    return layer


@torch.no_grad()
def induction_positivity(model: AttnOnlyTransformer, prev_head: Head, layer: int | None = None) -> dict[str, torch.Tensor]:
    """Paper "Induction heads": eigen-positivity ``sum λ / sum |λ|`` of both circuits of every head
    of ``layer`` (default: the last), [n_heads] each:

        ``qk``: the K-composition circuit through ``prev_head``, ``W_Eᵀ W_QK^{h} W_OV^{h_prev} W_E``
        ``ov``: the full OV circuit ``W_U W_OV^{h} W_E``
    Induction heads sit near (+1, +1).
    """
    layer = last_layer(model, layer)
    qk = torch.stack([eigen_positivity(k_composition_circuit(model, *prev_head, layer, h))
                      for h in range(model.cfg.n_heads)])
    return {"qk": qk, "ov": eigen_positivity(ov_circuit(model, layer))}


@torch.no_grad()
def induction_eigenvalues(model: AttnOnlyTransformer, prev_head: Head, layer: int | None = None) -> dict[str, np.ndarray]:
    """Eigenvalues for complex-plane plots (paper "Induction heads"), complex numpy [n_heads, d_head]:

    ``ov``: of each head's OV circuit ``W_U W_OV^{h} W_E``; ``qk``: of its K-composition circuit
    ``W_Eᵀ W_QK^{h} W_OV^{h_prev} W_E`` through the previous-token head. Nonzero spectra only
    (from the d_head x d_head cyclic products); unscaled QK (no 1/sqrt(d_head)).
    """
    layer = last_layer(model, layer)
    qk = torch.stack([k_composition_circuit(model, *prev_head, layer, h).eigenvalues()
                      for h in range(model.cfg.n_heads)])
    return {"ov": ov_circuit(model, layer).eigenvalues().numpy(), "qk": qk.numpy()}


@torch.no_grad()
def source_preference(pattern: torch.Tensor, tokens: torch.Tensor, d_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which source tokens one head favours on text: for each token id, the mean over its occurrences of the
    attention it receives divided by what a uniform causal pattern would give that position
    (``sum_{t >= s} 1 / (t + 1)``); 1 is no preference. pattern [batch, dst, src] (one head), tokens [batch, pos]
    (the sources). Returns (ratio [d_vocab], occurrences [d_vocab]); ids that never occur have ratio 0."""
    n = tokens.shape[-1]
    received = pattern.sum(-2)  # [batch, src]: attention each source receives from all destinations
    uniform = (1.0 / torch.arange(1, n + 1, dtype=pattern.dtype)).flip(0).cumsum(0).flip(0)  # [src]
    ratio = (received / uniform).flatten()
    ids = tokens.flatten()
    total = torch.zeros(d_vocab, dtype=pattern.dtype).index_add_(0, ids, ratio)
    count = torch.zeros(d_vocab, dtype=pattern.dtype).index_add_(0, ids, torch.ones_like(ratio))
    return total / count.clamp_min(1), count
