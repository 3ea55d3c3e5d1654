"""Path expansion of the logits (paper "One-layer" and "Two-layer" path expansion).

Without LayerNorm and with the attention patterns A^h held fixed, the model is linear in the
token embeddings, so its logits are exactly a sum over paths, each path visiting at most one
head per layer in increasing layer order. For one layer (column vectors, destination t):

    logits_t = W_U W_E x_t  +  sum_h sum_s A^h[t, s] W_U W_OV^h W_E x_s

and for two layers the paths are the direct path, every single head (layer 0 or 1), and every
virtual head (h1 in layer 0, h2 in layer 1) with pattern ``A^{h2} A^{h1}`` and OV ``W_OV^{h2} W_OV^{h1}``.
The patterns are frozen from ``run_with_cache``; the sum of all terms equals the model's logits
(``tests/analysis/test_circuits.py``).

A path is named by a tuple of (layer, head) pairs: ``()`` the direct path, ``((0, 3),)`` head 0.3,
``((0, 7), (1, 4))`` the virtual head 0.7 -> 1.4.
"""

from __future__ import annotations

import torch

from .circuits import w_ov
from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer

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
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, dst, src]
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


@torch.no_grad()
def head_term_losses(model: AttnOnlyTransformer, windows: torch.Tensor, batch_size: int = 4) -> dict:
    """Loss (nats) of the direct path alone, of the direct path plus each head alone, and of all terms of the
    one-layer expansion (module docstring).

    windows [batch, pos + 1] (inputs ``w[:, :-1]``, targets ``w[:, 1:]``); patterns frozen from the real
    forward pass (``path_expansion_residual``). Returns ``{"direct": float, "heads": tensor [n_heads]
    (direct + head h), "all": float, "model": float}``; "all" equals "model" up to rounding.
    """
    if model.cfg.n_layers != 1:
        raise ValueError(f"head_term_losses is for one-layer models, got {model.cfg.n_layers} layers")
    windows = torch.as_tensor(windows)
    H = model.cfg.n_heads
    sums = torch.zeros(H + 3, dtype=torch.float64)  # direct, heads..., all, model
    count = 0
    W_U = model.unembed.W_U
    for start in range(0, len(windows), batch_size):
        w = windows[start:start + batch_size]
        inputs, targets = w[:, :-1], w[:, 1:]
        logits, cache = model.run_with_cache(inputs)
        terms, paths = path_expansion_residual(model, inputs, cache)  # [1 + H, b, p, d_model]
        assert paths[0] == () and len(paths) == H + 1
        combos = [terms[0]] + [terms[0] + terms[1 + h] for h in range(H)] + [terms.sum(0)]
        for i, resid in enumerate(combos):
            sums[i] += float(loss_fn(resid @ W_U, targets, per_token=True).double().sum())
        sums[-1] += float(loss_fn(logits, targets, per_token=True).double().sum())
        count += targets.numel()
    means = sums / count
    return {"direct": float(means[0]), "heads": means[1:H + 1].float(), "all": float(means[H + 1]),
            "model": float(means[H + 2])}
