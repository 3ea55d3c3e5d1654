"""Virtual attention heads (paper "Two-layer transformers", V-composition).

A head h1 of an earlier layer and a head h2 of a later one, composed through h2's values, act as
one head with

    pattern  A^{h2} A^{h1}     (position t reads position s through any intermediate position)
    OV       W_OV^{h2} W_OV^{h1}, whose full circuit is W_U W_OV^{h2} W_OV^{h1} W_E

The OV circuit is ``analysis.composition.virtual_ov_circuit``, each pair's V-composition score
``composition_scores(model, "V")`` and what it does on real text ``analysis.term_importance.virtual_head_effects``;
this module gives the pattern.
"""

from __future__ import annotations

import torch

from circuits.metrics.heads import Head


def virtual_pattern(cache: dict[str, torch.Tensor], head1: Head, head2: Head) -> torch.Tensor:
    """Paper "Virtual attention heads": the combined pattern ``A^{h2} A^{h1}`` [batch, dst, src].

    Rows sum to 1 (a product of row-stochastic matrices) and stay causal.
    """
    (l1, h1), (l2, h2) = head1, head2
    if not l1 < l2:
        raise ValueError(f"a virtual head needs head1 in an earlier layer than head2, got {head1}, {head2}")
    return cache[f"blocks.{l2}.attn.hook_pattern"][:, h2] @ cache[f"blocks.{l1}.attn.hook_pattern"][:, h1]
