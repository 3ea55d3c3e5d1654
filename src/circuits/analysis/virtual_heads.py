"""Virtual attention heads (paper "Two-layer transformers", V-composition).

A head h1 of an earlier layer and a head h2 of a later one, composed through h2's values, act as
one head with

    pattern  A^{h2} A^{h1}     (position t reads position s through any intermediate position)
    OV       W_OV^{h2} W_OV^{h1}, whose full circuit is W_U W_OV^{h2} W_OV^{h1} W_E

This module ranks the pairs by their V-composition score (minus the random baseline) and by what
they do on real text (``analysis.term_importance.virtual_head_effects``), and summarises one pair.
"""

from __future__ import annotations

import torch

from circuits.analysis.scan.tables import topk_circuit_entries
from .circuits import eigen_positivity
from .composition import composition_baseline, composition_scores, virtual_ov_circuit
from circuits.model.transformer import AttnOnlyTransformer
from .term_importance import virtual_head_effects

Head = tuple[int, int]  # (layer, head)


def virtual_pattern(cache: dict[str, torch.Tensor], head1: Head, head2: Head) -> torch.Tensor:
    """Paper "Virtual attention heads": the combined pattern ``A^{h2} A^{h1}`` [batch, dst, src].

    Rows sum to 1 (a product of row-stochastic matrices) and stay causal.
    """
    (l1, h1), (l2, h2) = head1, head2
    if not l1 < l2:
        raise ValueError(f"a virtual head needs head1 in an earlier layer than head2, got {head1}, {head2}")
    return cache[f"blocks.{l2}.attn.hook_pattern"][:, h2] @ cache[f"blocks.{l1}.attn.hook_pattern"][:, h1]


@torch.no_grad()
def virtual_head_table(model: AttnOnlyTransformer, windows: torch.Tensor, cache: dict | None = None,
                       layer1: int = 0, layer2: int = 1, baseline: float | None = None) -> list[dict]:
    """Every pair (h1 in ``layer1``, h2 in ``layer2``) with its weight-based and measured strength.

    Keys: ``head1``, ``head2`` ((layer, head) each); ``v_score`` (V-composition,
    ``||W_OV^{h2} W_OV^{h1}||_F / (||W_OV^{h2}||_F ||W_OV^{h1}||_F)``); ``v_excess`` (minus the
    random baseline, ``composition_baseline`` unless given); ``norm`` (mean ||term|| over positions of
    ``windows``) and ``loss`` (loss increase when only this term is removed). Sorted by ``loss``,
    largest first.
    """
    if baseline is None:
        baseline = composition_baseline(model.cfg.d_model, model.cfg.d_head)
    v = composition_scores(model, "V", layer1, layer2)  # [h1, h2]
    eff = virtual_head_effects(model, windows, cache, layer1, layer2)
    rows = [{"head1": (layer1, h1), "head2": (layer2, h2), "v_score": float(v[h1, h2]),
             "v_excess": float(v[h1, h2]) - baseline, "norm": float(eff["norm"][h1, h2]),
             "loss": float(eff["loss"][h1, h2])}
            for h1 in range(model.cfg.n_heads) for h2 in range(model.cfg.n_heads)]
    return sorted(rows, key=lambda r: -r["loss"])


def strongest_virtual_heads(table: list[dict], key: str = "loss", top: int = 5) -> list[dict]:
    """The ``top`` rows of ``virtual_head_table`` by ``key`` (``loss``, ``norm``, ``v_excess``)."""
    return sorted(table, key=lambda r: -r[key])[:top]


@torch.no_grad()
def virtual_ov_summary(model: AttnOnlyTransformer, head1: Head, head2: Head, k: int = 10) -> dict:
    """The OV circuit ``W_U W_OV^{h2} W_OV^{h1} W_E`` of a virtual head [d_vocab(out), d_vocab(src)].

    Returns ``eigenvalues`` (complex numpy array, the nonzero spectrum), ``eigen_positivity``
    (sum λ / sum |λ|: +1 copying) and the ``k`` largest entries as ``top_values``, ``top_out``,
    ``top_src`` (numpy arrays; read "source token src raises output token out").
    """
    ov = virtual_ov_circuit(model, *head1, *head2)
    values, out, src = topk_circuit_entries(ov, k)
    return {"head1": head1, "head2": head2,
            "eigenvalues": ov.eigenvalues().numpy(), "eigen_positivity": float(eigen_positivity(ov)),
            "top_values": values.numpy(), "top_out": out.numpy(), "top_src": src.numpy()}

