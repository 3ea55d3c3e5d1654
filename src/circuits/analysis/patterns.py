"""Attention patterns as data for figures: every head's pattern on one sequence, and the size of what each
source position would make a head write (for value-weighted attention, Kobayashi et al. 2020)."""

from __future__ import annotations

import numpy as np
import torch

from circuits.model.transformer import AttnOnlyTransformer


def value_norms(model: AttnOnlyTransformer, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """``||x_s W_V^h W_O^h||`` of every source position: [layer, batch, head, src]."""
    out = []
    for l, block in enumerate(model.blocks):
        x = cache[f"blocks.{l}.hook_resid_pre"]
        v = torch.einsum("bpd,hde->bhpe", x, block.attn.W_V)
        out.append(torch.einsum("bhpe,hed->bhpd", v, block.attn.W_O).norm(dim=-1))
    return torch.stack(out)


@torch.no_grad()
def attention_data(model: AttnOnlyTransformer, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Patterns [layer, head, dst, src] and value norms [layer, head, src] of one sequence ``tokens`` [pos]."""
    _, cache = model.run_with_cache(torch.as_tensor(tokens)[None])
    pats = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(model.cfg.n_layers)])
    return pats.numpy(), value_norms(model, cache)[:, 0].numpy()
