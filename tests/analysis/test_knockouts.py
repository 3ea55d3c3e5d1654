"""Knock-outs from one intact pass (``analysis.knockouts``) against the model run under ``ablate``."""

import pytest
import torch

from circuits.analysis.ablation import ablate
from circuits.analysis.knockouts import knockout_losses
from circuits.metrics.losses import per_token_loss

from .models import make_model


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_knockout_losses_are_the_ablated_model(tiny_cfg, n_layers):
    """Every knock-out, zero or mean, in any layer, computed from one intact pass, is the model that
    ``analysis.ablation.ablate`` knocks out, at the positions read."""
    model = make_model(tiny_cfg, n_layers=n_layers, init_std=0.3)
    windows = torch.randint(0, tiny_cfg.d_vocab, (40, tiny_cfg.n_ctx + 1), generator=torch.Generator().manual_seed(1))
    mean_tokens = windows[:8, :-1]
    positions = [0, 3, 7, 12, tiny_cfg.n_ctx - 1]
    variants = [("none", "none", [])] + [(f"{l}", mode, [(l, 1), (l, 2)]) for l in range(n_layers)
                                         for mode in ("zero", "mean")]
    got = knockout_losses(model, windows, positions, variants, mean_tokens)
    for name, mode, heads in variants:
        if heads:
            with ablate(model, heads, mode, mean_tokens):
                expected = per_token_loss(model, windows, positions)
        else:
            expected = per_token_loss(model, windows, positions)
        assert torch.allclose(got[(name, mode)], expected, atol=1e-4), (name, mode)
    with pytest.raises(ValueError, match="one layer"):
        knockout_losses(model, windows, positions, [("x", "zero", [(0, 1), (n_layers - 1, 0)])]
                                  if n_layers > 1 else [("x", "zero", [(0, 1), (1, 0)])])
