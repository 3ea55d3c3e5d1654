"""A later layer's attention scores expanded over what wrote its queries and keys (paper "Two-Layer
Attention-Only Transformers", the QK circuit of a layer-1 head; Q- and K-composition).

The residual stream a layer reads is a sum of pieces, one per writer: the token embedding and the output of
every head of the earlier layers (``x_l = W_E t + Σ_{h in layers < l} h``). With Shortformer positions the
queries and keys also read the positions p. So the score of destination t on source s is a double sum

    y_t = p_t + W_E t_t + Σ_{h'} h'_t            (column vectors, one piece per writer)
    score^h[t, s] = y_tᵀ W_QK^h y_s / √d_head = Σ_{i, j} (piece_i)_tᵀ W_QK^h (piece_j)_s / √d_head

and each term (query piece i, key piece j) is one path into the pattern. For a layer-1 head h2, grouping the
pieces gives the paper's four kinds of terms (``COMPOSITION_GROUPS``):

    direct        (p + W_E t)_tᵀ W_QK (p + W_E t)_s         the one-layer QK circuit W_Eᵀ W_QK W_E, plus positions
    Q-composition (h1)_tᵀ W_QK (p + W_E t)_s                a layer-0 head wrote the query
    K-composition (p + W_E t)_tᵀ W_QK (h1)_s                a layer-0 head wrote the key (induction heads)
    Q and K       (h1)_tᵀ W_QK (h1')_s                      both

where a layer-0 head's write is ``(h1)_s = Σ_{s'} A^{h1}[s, s'] W_OV^{h1} W_E t_{s'}``: the K-composition term of
h1 is the paper's ``(Id ⊗ A^{h1} ⊗ W_Eᵀ W_QK^{h2} W_OV^{h1} W_E)``. Below the causal diagonal all terms sum to
the model's ``hook_attn_scores`` exactly (no LayerNorm); tests check this and the grouping.
"""

from __future__ import annotations

import math

import torch

from circuits.model.transformer import AttnOnlyTransformer

POSITION, TOKEN = "position", "token"
COMPOSITION_GROUPS = ("direct", "Q-composition", "K-composition", "Q and K")


def residual_pieces(model: AttnOnlyTransformer, cache: dict[str, torch.Tensor], layer: int
                    ) -> tuple[torch.Tensor, list[str]]:
    """What the queries and keys of ``layer`` read, split by writer: [n_pieces, batch, pos, d_model] and their
    names, ``"position"``, ``"token"``, then ``"l.h"`` for every head of the earlier layers. Without the position
    the pieces sum to ``blocks.{layer}.hook_resid_pre``; with it, to what W_Q and W_K multiply."""
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} does not exist in a model with {model.cfg.n_layers} layers")
    embed = cache["hook_embed"]  # [batch, pos, d_model]
    pieces = [cache["hook_pos_embed"].expand_as(embed), embed]
    names = [POSITION, TOKEN]
    for l in range(layer):
        result = cache[f"blocks.{l}.attn.hook_result"]  # [batch, pos, head, d_model]
        pieces += list(result.unbind(2))
        names += [f"{l}.{h}" for h in range(model.cfg.n_heads)]
    return torch.stack(pieces), names


def piece_queries_keys(model: AttnOnlyTransformer, cache: dict[str, torch.Tensor], layer: int, head: int
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Each piece's query and key for head ``layer.head``: ``piece @ W_Q[head] / √d_head`` and
    ``piece @ W_K[head]``, [n_pieces, batch, pos, d_head] each, with the pieces' names (``residual_pieces``).
    Term (i, j) of the scores is ``q[i] @ k[j]ᵀ``."""
    pieces, names = residual_pieces(model, cache, layer)
    attn = model.blocks[layer].attn
    return pieces @ attn.W_Q[head] / math.sqrt(model.cfg.d_head), pieces @ attn.W_K[head], names


def qk_score_paths(model: AttnOnlyTransformer, cache: dict[str, torch.Tensor], layer: int, head: int
                   ) -> tuple[torch.Tensor, list[str]]:
    """Every term of head ``layer.head``'s attention scores, one per (query piece, key piece) of
    ``residual_pieces``: [n_pieces (query), n_pieces (key), batch, dst, src], scaled by 1/√d_head and unmasked,
    with the pieces' names. Below the diagonal (src <= dst) they sum to ``hook_attn_scores[:, head]``.
    (n_pieces² score matrices: ``term_rms`` measures them all without forming them.)"""
    q, k, names = piece_queries_keys(model, cache, layer, head)
    return torch.einsum("ibte,jbse->ijbts", q, k), names


def _direct_mask(names: list[str]) -> torch.Tensor:
    return torch.tensor([n in (POSITION, TOKEN) for n in names])


def composition_groups(terms: torch.Tensor, names: list[str]) -> torch.Tensor:
    """``qk_score_paths``'s terms summed into the four groups of ``COMPOSITION_GROUPS`` (direct, Q-composition,
    K-composition, Q and K): [4, batch, dst, src]. A piece is "direct" if it is the position or the token,
    else it was written by an earlier head."""
    direct = _direct_mask(names).to(terms.device)
    written = ~direct
    blocks = ((direct, direct), (written, direct), (direct, written), (written, written))
    return torch.stack([terms[qi][:, ki].sum((0, 1)) for qi, ki in blocks])


def row_centred_rms(scores: torch.Tensor) -> torch.Tensor:
    """How much a score term can change an attention pattern: the root mean square, over the causal entries
    (src <= dst), of the term minus its mean over each destination's row. A term that is constant along a row
    moves no attention (softmax ignores a constant), so only its spread counts.

    scores: [..., dst, src] (square, unmasked). Returns [...]. Rows with a single entry contribute 0."""
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
    count = causal.sum(-1)  # [dst]: entries in each row
    mean = (scores * causal).sum(-1, keepdim=True) / count[:, None]
    centred = (scores - mean) * causal
    return (centred.pow(2).sum((-1, -2)) / causal.sum()).sqrt()


def grouped_queries_keys(q: torch.Tensor, k: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pieces' queries and keys (``piece_queries_keys``) summed into two groups, the direct pieces (position,
    token) and those written by earlier heads: [2, ...] each. Group (a, b) of ``COMPOSITION_GROUPS``, in the
    order (0, 0), (1, 0), (0, 1), (1, 1), is ``qg[a] @ kg[b]ᵀ``."""
    direct = _direct_mask(names).to(q.device)
    return (torch.stack([v[direct].sum(0), v[~direct].sum(0)]) for v in (q, k))


def bilinear_row_centred_rms(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``row_centred_rms`` of every score term ``q[i] @ k[j]ᵀ`` without forming it: q [I, ..., n, e],
    k [J, ..., n, e] -> [I, J, ...].

    Centring row t over the sources s <= t gives ``q_t · (k_s - k̄_t)``, k̄_t the mean of k_0..k_t, so the row's
    sum of squares is ``q_tᵀ C_t q_t`` with ``C_t = Σ_{s<=t} k_s k_sᵀ - (t + 1) k̄_t k̄_tᵀ``: prefix sums of
    e x e matrices instead of n x n score matrices. The keys are first centred on their overall mean, which
    changes no row-centred term (it shifts each row by a constant) and keeps the subtraction well conditioned."""
    n = k.shape[-2]
    count = torch.arange(1, n + 1, dtype=k.dtype, device=k.device)[:, None]  # [n, 1]
    k = k - k.mean(-2, keepdim=True)
    second = torch.cumsum(k[..., :, None] * k[..., None, :], dim=-3)  # [J, ..., n, e, e]: Σ_{s<=t} k_s k_sᵀ
    mean = torch.cumsum(k, dim=-2) / count  # [J, ..., n, e]: k̄_t
    second -= count[..., None] * mean[..., :, None] * mean[..., None, :]  # C_t
    Cq = torch.einsum("j...tde,i...te->ij...td", second, q)  # [I, J, ..., n, e]: C_t q_t (one batched matmul)
    squares = (Cq * q[:, None]).sum((-1, -2))  # [I, J, ...]: Σ_t q_tᵀ C_t q_t
    return (squares.clamp(min=0) / (n * (n + 1) / 2)).sqrt()


def term_rms(model: AttnOnlyTransformer, cache: dict[str, torch.Tensor], layer: int, head: int
             ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``row_centred_rms`` of every term of ``qk_score_paths`` [n_pieces, n_pieces, batch] and of the four
    ``composition_groups`` [4, batch], computed from the pieces' queries and keys without forming the terms."""
    q, k, names = piece_queries_keys(model, cache, layer, head)
    return bilinear_row_centred_rms(q, k), group_rms(*grouped_queries_keys(q, k, names)), names


def group_rms(qg: torch.Tensor, kg: torch.Tensor) -> torch.Tensor:
    """``row_centred_rms`` of the four ``composition_groups`` [4, ...] from the grouped queries and keys
    (``grouped_queries_keys``), in the order of ``COMPOSITION_GROUPS``."""
    g = bilinear_row_centred_rms(qg, kg)  # [2 (query: direct, written), 2 (key), ...]
    return torch.stack([g[0, 0], g[1, 0], g[0, 1], g[1, 1]])
