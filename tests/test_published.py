"""The published cpu checkpoints: intact, and an independent forward pass reproduces their logs.

The forward pass here is written from the paper's equations directly on the safetensors tensors
(no circuits.model code), so it checks the model and the log against each other.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from circuits.batches import iter_eval_batches
from circuits.config import get_preset
from circuits.runs import published_dir

CPU = get_preset("cpu")
PUBLISHED = {n: published_dir(CPU, n) for n in (0, 1, 2)}
pytestmark = pytest.mark.skipif(not all((d / "model.safetensors").exists() for d in PUBLISHED.values()),
                                reason="the cpu checkpoints are not published in this checkout")


def independent_logits(w: dict, tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """x0 = W_E[t]; x += sum_h softmax_causal((x+p)W_Q (x+p)W_K^T / sqrt(d_head)) x W_V W_O; W_U."""
    x = w["embed.W_E"][tokens]
    p = w["pos_embed.W_pos"][: tokens.shape[1]]
    n = tokens.shape[1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    layer = 0
    while f"blocks.{layer}.attn.W_Q" in w:
        q = torch.einsum("bnd,hde->bhne", x + p, w[f"blocks.{layer}.attn.W_Q"])
        k = torch.einsum("bnd,hde->bhne", x + p, w[f"blocks.{layer}.attn.W_K"])
        v = torch.einsum("bnd,hde->bhne", x, w[f"blocks.{layer}.attn.W_V"])
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(mask, -torch.inf)
        x = x + torch.einsum("bhne,hed->bnd", scores.softmax(-1) @ v, w[f"blocks.{layer}.attn.W_O"])
        layer += 1
    return x @ w["unembed.W_U"]


@pytest.fixture(scope="module")
def validation():
    from circuits.runs import preset_tokens

    return np.asarray(preset_tokens(CPU)["validation"])


@pytest.mark.parametrize("n_layers", [0, 1, 2])
def test_independent_forward_reproduces_logged_val_loss(n_layers, validation):
    weights = {k: v.float() for k, v in load_file(str(PUBLISHED[n_layers] / "model.safetensors")).items()}
    rows = [json.loads(l) for l in (PUBLISHED[n_layers] / "log.jsonl").read_text().splitlines()]
    last = [r for r in rows if "val_loss" in r][-1]
    cfg = CPU.train_config(n_layers)
    losses = []
    with torch.no_grad():
        for batch in iter_eval_batches(validation, cfg.batch_size, CPU.n_ctx, cfg.eval_batches):
            logits = independent_logits(weights, batch[:, :-1], CPU.n_heads)
            losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()))
    assert float(torch.stack(losses).mean()) == pytest.approx(last["val_loss"], abs=2e-3)


def test_more_layers_lower_held_out_loss(validation):
    windows = torch.from_numpy(validation[: 64 * 256 + 1].astype(np.int64))
    inputs, targets = windows[:-1].view(64, 256), windows[1:].view(64, 256)
    loss = {}
    for n, folder in PUBLISHED.items():
        weights = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        with torch.no_grad():
            logits = independent_logits(weights, inputs, CPU.n_heads)
        loss[n] = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    assert loss[2] < loss[1] < loss[0] < math.log(CPU.d_vocab)
