"""Attention patterns and value norms as figure data, against the weights."""

import dataclasses

import numpy as np
import torch

from circuits.analysis.patterns import attention_data, value_norms
from circuits.model.transformer import AttnOnlyTransformer


def test_attention_data_from_a_model(tiny_cfg):
    model = AttnOnlyTransformer(dataclasses.replace(tiny_cfg, init_std=0.1)).requires_grad_(False)
    toks = torch.arange(10) % tiny_cfg.d_vocab
    pats, vals = attention_data(model, toks)
    assert pats.shape == (2, 4, 10, 10) and vals.shape == (2, 4, 10)
    _, cache = model.run_with_cache(toks[None])
    a1 = model.blocks[1].attn
    x = cache["blocks.1.hook_resid_pre"][0]
    for h in range(4):
        want = (x @ a1.W_V[h] @ a1.W_O[h]).norm(dim=-1)
        np.testing.assert_allclose(vals[1, h], want.numpy(), rtol=1e-5)
    assert value_norms(model, cache).shape == (2, 1, 4, 10)
    np.testing.assert_allclose(pats.sum(-1), 1.0, atol=1e-5)
