"""Path expansion of the logits (paper "One-layer" and "Two-layer" path expansion).

Without LayerNorm and with the attention patterns A^h held fixed, the model is linear in the
token embeddings, so its logits are exactly a sum over paths, each path visiting at most one
head per layer in increasing layer order. For one layer (column vectors, destination t):

    logits_t = W_U W_E x_t  +  sum_h sum_s A^h[t, s] W_U W_OV^h W_E x_s

and for two layers the paths are the direct path, every single head (layer 0 or 1), and every
virtual head (h1 in layer 0, h2 in layer 1) with pattern ``A^{h2} A^{h1}`` and OV ``W_OV^{h2} W_OV^{h1}``.
The patterns are frozen from ``run_with_cache``; the sum of all terms equals the model's logits
(``tests/test_circuits.py``).

A path is named by a tuple of (layer, head) pairs: ``()`` the direct path, ``((0, 3),)`` head 0.3,
``((0, 7), (1, 4))`` the virtual head 0.7 -> 1.4.
"""

from __future__ import annotations

import torch

from .circuits import w_ov
from .model import AttnOnlyTransformer

Path = tuple[tuple[int, int], ...]


def path_expansion_residual(model: AttnOnlyTransformer, tokens: torch.Tensor,
                            cache: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, list[Path]]:
    """Each path's contribution to the final residual stream, patterns frozen from ``cache``.

    A path's term at destination t is ``A^{hn} ... A^{h1}`` applied over positions to
    ``W_OV^{hn} ... W_OV^{h1} W_E x_s`` (column vectors; we apply ``x @ W_OVᵀ`` to row vectors).
    tokens: [batch, pos]. Returns ``(terms [n_paths, batch, pos, d_model], paths)``, paths ordered
    by length (direct, single heads, virtual heads, ...), then by layer and head.
    The number of paths is (n_heads + 1) ** n_layers.
    """
    tokens = model.check_tokens(tokens)
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    terms: dict[Path, torch.Tensor] = {(): model.embed.W_E[tokens]}  # [batch, pos, d_model]
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.pattern"]  # [batch, head, dst, src]
        ovT = w_ov(model, layer).T  # [head, d_model(in), d_model(out)] for row vectors
        new: dict[Path, torch.Tensor] = {}
        for path, x in terms.items():
            moved = (x[:, None] @ ovT).dense()  # [batch, head, src, d_model] = x W_OVᵀ
            written = pattern @ moved  # [batch, head, dst, d_model]: sum_s A[t, s] (.)
            for h in range(model.cfg.n_heads):
                new[path + ((layer, h),)] = written[:, h]
        terms.update(new)
    paths = sorted(terms, key=lambda p: (len(p), p))
    return torch.stack([terms[p] for p in paths]), paths


def path_expansion_logits(model: AttnOnlyTransformer, tokens: torch.Tensor,
                          cache: dict[str, torch.Tensor] | None = None,
                          by_order: bool = False) -> tuple[torch.Tensor, list]:
    """Per-path logits ``W_U (term)`` [n_terms, batch, pos, d_vocab]; their sum is the model's logits.

    ``by_order=True`` sums the paths of each length first (direct, single heads, virtual heads, ...)
    and returns ``(logits [n_layers + 1, batch, pos, d_vocab], orders [0, 1, ..., n_layers])``:
    memory then stays small for two layers at GPT-2's vocabulary.
    """
    terms, paths = path_expansion_residual(model, tokens, cache)
    if by_order:
        orders = list(range(model.cfg.n_layers + 1))
        lengths = torch.tensor([len(p) for p in paths])
        terms = torch.stack([terms[lengths == o].sum(0) for o in orders])
        return terms @ model.unembed.W_U, orders
    return terms @ model.unembed.W_U, paths
