"""Shared fixtures: tiny configs and synthetic token streams with learnable structure."""

import os

# Hub clients stay offline for the whole suite, notebook kernels included (they inherit the environment)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from circuits.config import ModelConfig, TrainConfig


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """``open_book`` switches autograd off for a notebook's whole kernel; inside the suite that would leak
    into every later test (a backward would fail far from its cause), so each test starts and ends with
    autograd on."""
    torch.set_grad_enabled(True)
    yield
    torch.set_grad_enabled(True)


def _loss_and_gradients(model, tokens: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The training loss of ``model`` on ``tokens`` [batch, n_ctx + 1] (bf16 autocast or not) and every
    parameter's gradient, as a training step computes them."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def loss_and_gradients():
    return _loss_and_gradients


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=24, d_vocab=61)


def markov_tokens(n: int, d_vocab: int, seed: int) -> np.ndarray:
    """A first-order Markov chain with a sparse transition table: a bigram model can learn it."""
    nxt = np.random.default_rng(1234).integers(0, d_vocab, size=(d_vocab, 3))  # one chain for all splits
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint16)
    out[0] = 0
    choice = rng.integers(0, 3, size=n)
    for i in range(1, n):
        out[i] = nxt[out[i - 1], choice[i]]
    return out


@pytest.fixture
def markov_splits(tiny_cfg) -> dict:
    return {"train": markov_tokens(20_000, tiny_cfg.d_vocab, 0),
            "validation": markov_tokens(4_000, tiny_cfg.d_vocab, 1)}


@pytest.fixture
def tiny_train_cfg() -> TrainConfig:
    return TrainConfig(batch_size=8, total_tokens=8 * 24 * 30, lr=3e-2, warmup_steps=3,
                       eval_every=10, eval_batches=2, checkpoint_every=5, n_snapshots=3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
