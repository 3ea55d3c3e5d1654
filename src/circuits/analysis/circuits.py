"""Per-head circuits in the paper's column-vector convention, as ``FactoredMatrix`` objects.

The one place where our row-vector weights (TransformerLens shapes, see ``circuits/__init__.py``)
become the paper's matrices. With ``x`` a column vector the paper writes

    W_OV^h = W_O^h W_V^h     [d_model(out), d_model(in)]   paper W_O = W_O[h]ᵀ, paper W_V = W_V[h]ᵀ
    W_QK^h = W_Q^hᵀ W_K^h    [d_model(dst), d_model(src)]  score = x_dstᵀ W_QK x_src
    W_E  [d_model, d_vocab] = our W_Eᵀ,    W_U [d_vocab, d_model] = our W_Uᵀ

so ``W_V[h] @ W_O[h]`` (TransformerLens's ``OV``) is the TRANSPOSE of the paper's W_OV, while
``W_Q[h] @ W_K[h]ᵀ`` (TransformerLens's ``QK``) IS the paper's W_QK (a bilinear form read
dst-by-src in both conventions). Every function here returns the paper's orientation: rows are
what is written or read at the destination, columns the source.

Scaling: ``qk_circuit`` and ``w_qk`` are the paper's matrices, WITHOUT the 1/sqrt(d_head) the
model applies to its scores (``scaled=True`` includes it). ``bilinear_scores`` and
``score_terms`` reproduce the model's scores exactly, so they include it.
"""

from __future__ import annotations

import math

import torch

from .factored import FactoredMatrix
from circuits.model.transformer import AttnOnlyTransformer

SCORE_TERMS = ("token·token", "token·position", "position·token", "position·position")  # (dst)·(src)


def _attn(model: AttnOnlyTransformer, layer: int):
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} does not exist in a model with {model.cfg.n_layers} layers")
    return model.blocks[layer].attn


def w_ov(model: AttnOnlyTransformer, layer: int) -> FactoredMatrix:
    """Paper "Attention heads as information movement": ``W_OV^h = W_O^h W_V^h``.

    Returns [n_heads, d_model(out), d_model(in)], factors ``W_O[h]ᵀ`` [d_model, d_head] and
    ``W_V[h]ᵀ`` [d_head, d_model]. A head writes ``W_OV^h x_src`` (column vectors).
    """
    attn = _attn(model, layer)
    return FactoredMatrix(attn.W_O.mT, attn.W_V.mT)


def w_qk(model: AttnOnlyTransformer, layer: int, scaled: bool = False) -> FactoredMatrix:
    """Paper "Attention heads as information movement": ``W_QK^h = W_Q^hᵀ W_K^h``.

    Returns [n_heads, d_model(dst), d_model(src)], factors ``W_Q[h]`` [d_model, d_head] and
    ``W_K[h]ᵀ`` [d_head, d_model]; the score is ``y_dstᵀ W_QK y_src`` (times 1/sqrt(d_head) if
    ``scaled``), with ``y = x + p`` the residual plus position.
    """
    attn = _attn(model, layer)
    qk = FactoredMatrix(attn.W_Q, attn.W_K.mT)
    return qk * (1 / math.sqrt(model.cfg.d_head)) if scaled else qk


def _shared_left(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``W @ X`` for one matrix W [m, d] and per-head X [..., d, k] -> [..., m, k], as a single 2-D matmul
    (a broadcast batched matmul repeats W per head: 0.5 s instead of 0.2 for GPT-2's W_E and 12 heads)."""
    d, k = X.shape[-2:]
    out = W @ X.movedim(-2, 0).reshape(d, -1)  # [m, (...) k]
    return out.reshape(W.shape[0], *X.shape[:-2], k).movedim(0, -2)


def _shared_right(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``X @ W`` for per-head X [..., k, d] and one matrix W [d, n] -> [..., k, n], as a single 2-D matmul."""
    return (X.reshape(-1, X.shape[-1]) @ W).reshape(*X.shape[:-1], W.shape[-1])


def direct_path(model: AttnOnlyTransformer) -> FactoredMatrix:
    """Paper "Zero-layer transformers": the bigram table ``W_U W_E``.

    Returns [d_vocab(out), d_vocab(in)]: entry [out, t] is the direct-path logit of ``out`` after
    token t (factors ``W_Uᵀ`` [d_vocab, d_model], ``W_Eᵀ`` [d_model, d_vocab]).
    """
    return FactoredMatrix(model.unembed.W_U.T, model.embed.W_E.T)


def ov_circuit(model: AttnOnlyTransformer, layer: int) -> FactoredMatrix:
    """Paper "One-layer transformers", OV circuit: ``W_U W_OV^h W_E``.

    Returns [n_heads, d_vocab(out), d_vocab(src)]: entry [out, src] is the change in the logit of
    ``out`` when head h attends fully to a source token ``src``. Factors ``W_Uᵀ W_O[h]ᵀ``
    [d_vocab, d_head] and ``W_V[h]ᵀ W_Eᵀ`` [d_head, d_vocab]. (TransformerLens's
    ``W_E @ OV @ W_U`` is its transpose, [src, out].)
    """
    ov = w_ov(model, layer)
    return FactoredMatrix(_shared_left(model.unembed.W_U.T, ov.A), _shared_right(ov.B, model.embed.W_E.T))


def qk_circuit(model: AttnOnlyTransformer, layer: int, scaled: bool = False) -> FactoredMatrix:
    """Paper "One-layer transformers", QK circuit: ``W_Eᵀ W_QK^h W_E``.

    Returns [n_heads, d_vocab(dst), d_vocab(src)]: the token·token part of the score of a
    destination token attending to a source token, without 1/sqrt(d_head) unless ``scaled``.
    Factors ``W_E W_Q[h]`` [d_vocab, d_head] and ``(W_E W_K[h])ᵀ`` [d_head, d_vocab].
    """
    qk = w_qk(model, layer, scaled)
    W_E = model.embed.W_E
    return FactoredMatrix(_shared_left(W_E, qk.A), _shared_right(qk.B, W_E.T))


def eigen_positivity(fm: FactoredMatrix) -> torch.Tensor:
    """Paper "Copying / primarily positive eigenvalues": ``sum(λ) / sum(|λ|)`` in [-1, 1], per matrix [...].

    The sum of the eigenvalues is the trace, hence real. +1: every eigenvalue positive (copying);
    -1: all negative. Eigenvalues come from the small cyclic product (``FactoredMatrix.eigenvalues``).
    """
    lam = fm.eigenvalues()
    return (lam.sum(-1).real / lam.abs().sum(-1)).to(fm.dtype)


def bilinear_scores(model: AttnOnlyTransformer, layer: int, dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Scaled attention scores ``dstᵀ W_QK^h src / sqrt(d_head)`` for any two streams, unmasked.

    dst: [..., n_dst, d_model], src: [..., n_src, d_model] (row vectors) -> [..., n_heads, n_dst, n_src].
    """
    qk = w_qk(model, layer, scaled=True)
    left = torch.einsum("...pd,hde->...hpe", dst, qk.A)  # dst W_Q
    right = torch.einsum("hed,...sd->...hes", qk.B, src)  # (src W_K)ᵀ
    return left @ right


def score_terms(model: AttnOnlyTransformer, layer: int, resid: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Shortformer score split (paper "One layer", positions only in Q and K):

        (x_dst + p_dst)ᵀ W_QK (x_src + p_src) / sqrt(d_head)
          = x_dstᵀ W_QK x_src + x_dstᵀ W_QK p_src + p_dstᵀ W_QK x_src + p_dstᵀ W_QK p_src   (each / sqrt(d_head))

    resid: the layer's input x [batch, n, d_model]; pos: p [n, d_model]. Returns [4, batch, n_heads,
    dst, src] in the order of ``SCORE_TERMS``. Unmasked: the model sets src > dst to -inf; below the
    diagonal the four terms sum to ``Attention.scores``.
    """
    p = pos.expand_as(resid)
    return torch.stack([bilinear_scores(model, layer, a, b) for a, b in
                        ((resid, resid), (resid, p), (p, resid), (p, p))])


def position_scores(model: AttnOnlyTransformer, layer: int, n_pos: int | None = None) -> torch.Tensor:
    """The position·position term alone [n_heads, n_pos, n_pos] (unmasked): what a head attends to
    whatever the tokens. Its causal softmax reveals previous-token and present-token heads."""
    W_pos = model.pos_embed.W_pos[: n_pos or model.cfg.n_ctx]
    return bilinear_scores(model, layer, W_pos, W_pos)
