"""The loss of each term of a one-layer model's path expansion (``analysis.path_expansion.head_term_losses``)
against the heads' outputs written out, on small sizes."""

import pytest
import torch

from circuits.analysis.path_expansion import head_term_losses
from circuits.metrics.losses import loss_fn
from tests.analysis.models import sharp_model


def test_head_term_losses_match_explicit_heads(tiny_cfg):
    model = sharp_model(tiny_cfg)
    g = torch.Generator().manual_seed(1)
    windows = torch.randint(0, tiny_cfg.d_vocab, (5, tiny_cfg.n_ctx + 1), generator=g)
    got = head_term_losses(model, windows, batch_size=2)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    logits, cache = model.run_with_cache(inputs)
    x = model.embed.W_E[inputs]
    A = cache["blocks.0.attn.hook_pattern"]  # [b, H, dst, src]
    attn = model.blocks[0].attn
    W_U = model.unembed.W_U
    assert got["direct"] == pytest.approx(float(loss_fn(x @ W_U, targets)), rel=1e-5)
    for h in range(tiny_cfg.n_heads):
        head = A[:, h] @ (x @ attn.W_V[h] @ attn.W_O[h])  # literal A^h x W_V W_O
        assert float(got["heads"][h]) == pytest.approx(float(loss_fn((x + head) @ W_U, targets)), rel=1e-5)
    assert got["all"] == pytest.approx(float(loss_fn(logits, targets)), rel=1e-5)
    assert got["model"] == pytest.approx(got["all"], rel=1e-6)
    with pytest.raises(ValueError, match="one-layer"):
        head_term_losses(sharp_model(tiny_cfg, 2), windows)
