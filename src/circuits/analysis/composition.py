"""Composition between heads of different layers (paper "Two-layer transformers").

Column-vector matrices throughout (``analysis.circuits``): W_OV^{h1} of an earlier head h1,
W_QK^{h2} and W_OV^{h2} of a later head h2, all d_model x d_model. In the order of the paper's
errata:

    Q: ||W_QK^{h2 ᵀ} W_OV^{h1}||_F / (||W_QK^{h2}||_F ||W_OV^{h1}||_F)   h1 writes what h2's query reads
    K: ||W_QK^{h2}   W_OV^{h1}||_F / (||W_QK^{h2}||_F ||W_OV^{h1}||_F)   h1 writes what h2's key reads
    V: ||W_OV^{h2}   W_OV^{h1}||_F / (||W_OV^{h2}||_F ||W_OV^{h1}||_F)   h1 writes what h2's value reads

(score = x_dstᵀ W_QK x_src, so with x_src = W_OV^{h1} y the key side reads W_QK W_OV^{h1}; with
x_dst = W_OV^{h1} y the query side reads W_OV^{h1 ᵀ} W_QK, whose norm is that of W_QKᵀ W_OV^{h1}.)
TransformerLens's ``all_composition_scores`` forms the transposed products of its row-vector
matrices (``OV @ QK``, ``OV @ QK.T``, ``OV_h1 @ OV_h2``); transposes keep Frobenius norms, so the
numbers agree (``tests/model/test_interop.py``). The paper subtracts the mean score of random matrices
of the same shapes: ``composition_baseline``.
"""

from __future__ import annotations

import torch

from .circuits import w_ov, w_qk
from .factored import FactoredMatrix
from circuits.model.transformer import AttnOnlyTransformer

KINDS = ("Q", "K", "V")


def composition_score(W_A: FactoredMatrix, W_B: FactoredMatrix) -> torch.Tensor:
    """``||W_A W_B||_F / (||W_A||_F ||W_B||_F)`` [...], batch dimensions broadcast; in [0, 1]."""
    return (W_A @ W_B).norm() / (W_A.norm() * W_B.norm())


def composition_scores(model: AttnOnlyTransformer, kind: str, layer1: int = 0, layer2: int = 1) -> torch.Tensor:
    """Q-, K- or V-composition of every head h1 of ``layer1`` into every head h2 of ``layer2``.

    Returns [n_heads(h1), n_heads(h2)], without the random baseline (formulas in the module doc).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not layer1 < layer2:
        raise ValueError(f"composition needs layer1 < layer2, got {layer1} and {layer2}")
    ov1 = w_ov(model, layer1).unsqueeze(1)  # [h1, 1, d, d]
    if kind == "Q":
        left = w_qk(model, layer2).T
    elif kind == "K":
        left = w_qk(model, layer2)
    else:
        left = w_ov(model, layer2)
    return composition_score(left.unsqueeze(0), ov1)  # [1, h2, d, d] @ [h1, 1, d, d] -> [h1, h2]


def composition_baseline(d_model: int, d_head: int, n_samples: int = 200, seed: int = 0) -> float:
    """Mean composition score of random matrices shaped like the model's (paper "Two layers").

    Each of W_A and W_B is a product of two independent standard Gaussian matrices,
    [d_model, d_head] @ [d_head, d_model], as W_O W_V and W_Qᵀ W_K are. Q, K and V scores share this
    baseline: transposing a Gaussian factor leaves its distribution unchanged, and the score does
    not depend on the scale.
    """
    gen = torch.Generator().manual_seed(seed)

    def sample() -> FactoredMatrix:
        return FactoredMatrix(torch.randn(n_samples, d_model, d_head, generator=gen, dtype=torch.float64),
                              torch.randn(n_samples, d_head, d_model, generator=gen, dtype=torch.float64))

    return float(composition_score(sample(), sample()).mean())


COMPOSES = 2.0  # a pair "composes" when its score is at least this multiple of the random baseline


def composes(score: float, baseline: float) -> bool:
    """Whether a composition score marks real composition: at least ``COMPOSES`` times the random baseline
    (``composition_baseline``). The paper reads its figure by eye; this is our stated rule for the same reading."""
    return float(score) >= COMPOSES * baseline


def k_composition_circuit(model: AttnOnlyTransformer, layer1: int, head1: int, layer2: int, head2: int) -> FactoredMatrix:
    """Paper "Induction heads", QK side: ``W_Eᵀ W_QK^{h2} W_OV^{h1} W_E`` [d_vocab(dst), d_vocab(src)].

    How strongly a destination token attends to a source position whose previous token (read
    through h1, e.g. a previous-token head) was ``src``. Its ``eigen_positivity`` is positive for
    an induction head. Unscaled, as ``qk_circuit``.
    """
    W_E = model.embed.W_E
    qk, ov = w_qk(model, layer2)[head2], w_ov(model, layer1)[head1]
    return FactoredMatrix(W_E @ qk.A, ((qk.B @ ov.A) @ ov.B) @ W_E.T)


def virtual_ov_circuit(model: AttnOnlyTransformer, layer1: int, head1: int, layer2: int, head2: int) -> FactoredMatrix:
    """Paper "Virtual attention heads": ``W_U W_OV^{h2} W_OV^{h1} W_E`` [d_vocab(out), d_vocab(src)]."""
    ov1, ov2 = w_ov(model, layer1)[head1], w_ov(model, layer2)[head2]
    return FactoredMatrix(model.unembed.W_U.T @ ov2.A, ((ov2.B @ ov1.A) @ ov1.B) @ model.embed.W_E.T)


SIDES = ("q", "k")


@torch.no_grad()
def patterns_without_writer(model: AttnOnlyTransformer, cache: dict[str, torch.Tensor], writer: tuple[int, int],
                            layer: int, side: str = "q", replacement: torch.Tensor | None = None) -> torch.Tensor:
    """Q- or K-composition on text: the patterns of every head of ``layer`` [batch, head, dst, src] when one side
    of their scores reads the residual stream without what head ``writer`` = (layer1, head1) wrote there.

    ``side="q"``: the queries read ``x_layer - out^{writer} (+ replacement)`` and the keys the real ``x_layer``;
    ``side="k"`` the other way round. ``replacement`` [d_model] (e.g. the writer's mean output) is added back in
    its place; None leaves zeros. ``cache``: the real forward pass (``run_with_cache``), from which the writer's
    output ``A^{h1} x W_OV^{h1}`` is recomputed. With ``replacement`` equal to the writer's output itself the
    real patterns come back (tested).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    l1, h1 = writer
    if not 0 <= l1 < layer < model.cfg.n_layers:
        raise ValueError(f"the writer's layer must come before layer {layer}, got {writer}")
    out = model.blocks[l1].attn.head_outputs(cache[f"blocks.{l1}.hook_resid_pre"],
                                             cache[f"blocks.{l1}.attn.hook_pattern"])[:, :, h1]  # [b, p, d]
    x = cache[f"blocks.{layer}.hook_resid_pre"]  # [batch, pos, d_model]
    changed = x - out + (0 if replacement is None else replacement)
    attn, pos = model.blocks[layer].attn, cache["hook_pos_embed"]
    q_in, k_in = (changed, x) if side == "q" else (x, changed)
    q, _ = attn.queries_keys(q_in, pos)  # [batch, head, pos, d_head]
    _, k = attn.queries_keys(k_in, pos)
    scores = q @ k.transpose(-1, -2) / attn.cfg.d_head ** 0.5  # as Attention.scores
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
    return scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
