"""The two circuits of an induction head, read from the weights (paper "Two-layer transformers").

An induction head of the last layer K-composes with a layer-0 previous-token head: its QK circuit through that
head, ``W_Eᵀ W_QK^{h2} W_OV^{h_prev} W_E``, has mostly positive eigenvalues (a destination token attends to the
position after an earlier copy of itself); and it copies: its OV circuit ``W_U W_OV^{h2} W_E`` has mostly
positive eigenvalues. No head index is ever hard-coded: the previous-token head is the layer-0 head with the
highest previous-token score.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.metrics.heads import Head
from circuits.metrics.olsson import previous_token_scores
from circuits.model.transformer import AttnOnlyTransformer

from .circuits import eigen_positivity, ov_circuit
from .composition import k_composition_circuit


def previous_token_head(model: AttnOnlyTransformer, text: torch.Tensor) -> Head:
    """The layer-0 head with the highest previous-token score ``mean_i A[i, i-1]`` on ``text`` [batch, pos]."""
    return 0, int(previous_token_scores(model, text)[0].argmax())


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
