"""What we call each kind of head: one rule per kind, used by the training log, every chapter and the findings.

- previous-token head: a layer-0 head whose previous-token score, mean A[i, i-1] on real text, is at least
  ``PREVIOUS_TOKEN_THRESHOLD``;
- induction head: a head of layer 1 or later whose prefix-matching score is at least ``INDUCTION_THRESHOLD``;
- copying head: a head whose OV circuit's eigenvalues are mostly positive, Σλ/Σ|λ| above
  ``COPYING_THRESHOLD`` (``analysis.circuits.eigen_positivity``);
- positional head: a head that on real text puts at least ``POSITIONAL_LOCAL`` of its attention on the
  present or previous token, a pattern the position·position score term alone reproduces with an agreement
  of at least ``POSITIONAL_AGREEMENT`` (``analysis.positional.attention_summary``).
"""

from __future__ import annotations

import torch

PREVIOUS_TOKEN_THRESHOLD = 0.5
INDUCTION_THRESHOLD = 0.4
COPYING_THRESHOLD = 0.5
POSITIONAL_LOCAL = 0.5
POSITIONAL_AGREEMENT = 0.5

Head = tuple[int, int]  # (layer, head), written "layer.head" as in the paper


def head_name(head: Head) -> str:
    """``(1, 4)`` -> ``"1.4"``."""
    return f"{head[0]}.{head[1]}"


def previous_token_heads(prev_scores: torch.Tensor) -> list[Head]:
    """Layer-0 heads that are previous-token heads, from previous-token scores [n_layers, n_heads]."""
    return [(0, h) for h in range(prev_scores.shape[1]) if float(prev_scores[0, h]) >= PREVIOUS_TOKEN_THRESHOLD]


def induction_heads(prefix_scores: torch.Tensor) -> list[Head]:
    """Heads of layer 1 and later that are induction heads, from prefix-matching scores [n_layers, n_heads]."""
    return [(l, h) for l in range(1, prefix_scores.shape[0]) for h in range(prefix_scores.shape[1])
            if float(prefix_scores[l, h]) >= INDUCTION_THRESHOLD]


def copying_heads(positivity: torch.Tensor) -> list[int]:
    """Heads of one layer whose OV eigen-positivity [n_heads] is above ``COPYING_THRESHOLD``."""
    return [h for h in range(len(positivity)) if float(positivity[h]) > COPYING_THRESHOLD]


def positional_heads(summary: dict[str, torch.Tensor]) -> list[int]:
    """Heads of one layer that are positional, from ``analysis.positional.attention_summary``."""
    local = summary["self"] + summary["previous"]
    return [h for h in range(len(local)) if float(local[h]) >= POSITIONAL_LOCAL
            and float(summary["positional agreement"][h]) >= POSITIONAL_AGREEMENT]


def has_induction(prev_token: list[list[float]], prefix_matching: list[list[float]]) -> bool:
    """Whether a model has both halves of the induction circuit: a previous-token head in layer 0 and an
    induction head in its last layer (scores as the training log stores them, [layer][head])."""
    return (len(prefix_matching) >= 2 and max(prev_token[0]) >= PREVIOUS_TOKEN_THRESHOLD
            and max(prefix_matching[-1]) >= INDUCTION_THRESHOLD)
