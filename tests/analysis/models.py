"""Small random models and token batches shared by the analysis tests."""

import dataclasses

import torch

from circuits.model.transformer import AttnOnlyTransformer


def make_model(cfg, n_layers=2, init_std=0.15, seed=0):
    model = AttnOnlyTransformer(dataclasses.replace(cfg, n_layers=n_layers, init_std=init_std))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.requires_grad_(False)


def sharp_model(cfg, n_layers=1, init_std=0.3, seed=0):
    """Large init so that attention patterns and circuits are far from uniform (one layer unless asked)."""
    return make_model(cfg, n_layers, init_std, seed).eval()


def tokens_for(cfg, batch=3, n=None, seed=0):
    return torch.randint(0, cfg.d_vocab, (batch, n or cfg.n_ctx), generator=torch.Generator().manual_seed(seed))


def dense_positivity(M):
    lam = torch.linalg.eigvals(M.double())
    return float(lam.sum().real / lam.abs().sum())
