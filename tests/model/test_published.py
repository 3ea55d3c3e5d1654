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

from circuits.data.batches import iter_eval_batches
from circuits.config import get_preset
from circuits.model.published import published_dir

CPU = get_preset("cpu")
PUBLISHED = {n: published_dir(CPU, n) for n in (0, 1, 2)}
pytestmark = pytest.mark.skipif(not all((d / "model.safetensors").exists() for d in PUBLISHED.values()),
                                reason="the cpu checkpoints are not published in this checkout")


def independent_forward(w: dict, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """x0 = W_E[t]; x += sum_h softmax_causal((x+p)W_Q (x+p)W_K^T / sqrt(d_head)) x W_V W_O; logits x W_U.
    Returns the logits and every layer's attention pattern [batch, head, dst, src]."""
    x, p = w["embed.W_E"][tokens], w["pos_embed.W_pos"][: tokens.shape[1]]
    n = tokens.shape[1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    patterns, layer = [], 0
    while f"blocks.{layer}.attn.W_Q" in w:
        q = torch.einsum("bnd,hde->bhne", x + p, w[f"blocks.{layer}.attn.W_Q"])
        k = torch.einsum("bnd,hde->bhne", x + p, w[f"blocks.{layer}.attn.W_K"])
        v = torch.einsum("bnd,hde->bhne", x, w[f"blocks.{layer}.attn.W_V"])
        a = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(mask, -torch.inf).softmax(-1)
        patterns.append(a)
        x = x + torch.einsum("bhne,hed->bnd", a @ v, w[f"blocks.{layer}.attn.W_O"])
        layer += 1
    return x @ w["unembed.W_U"], patterns


@pytest.fixture(scope="module")
def validation():
    from circuits.data.tokens import preset_tokens

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
            logits, _ = independent_forward(weights, batch[:, :-1])
            losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()))
    assert float(torch.stack(losses).mean()) == pytest.approx(last["val_loss"], abs=2e-3)


def test_more_layers_lower_held_out_loss(validation):
    windows = torch.from_numpy(validation[: 64 * 256 + 1].astype(np.int64))
    inputs, targets = windows[:-1].view(64, 256), windows[1:].view(64, 256)
    loss = {}
    for n, folder in PUBLISHED.items():
        weights = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        with torch.no_grad():
            logits, _ = independent_forward(weights, inputs)
        loss[n] = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    assert loss[2] < loss[1] < loss[0] < math.log(CPU.d_vocab)


def olsson_repeated_tokens(validation: np.ndarray, seed: int = 123) -> torch.Tensor:
    """40 sequences of [0] + 4 repeats of 25 distinct random tokens of middling frequency
    (neither the top 1 % nor seen fewer than 10 times), counted on the validation split."""
    counts = np.bincount(validation.astype(np.int64), minlength=CPU.d_vocab)
    seen = np.argsort(-counts, kind="stable")
    seen = seen[counts[seen] >= 10]
    pool = seen[len(seen) // 100:]
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([[0], np.tile(rng.choice(pool, 25, replace=False), 4)]) for _ in range(40)]
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


def induction_scores(folder: Path, validation: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(best previous-token score of layer 0, prefix-matching score of every last-layer head)."""
    w = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    text = torch.from_numpy(validation[: 16 * 256].astype(np.int64)).view(16, 256)
    rep = olsson_repeated_tokens(validation)
    with torch.no_grad():
        prev = independent_forward(w, text)[1][0].diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))
        last = independent_forward(w, rep)[1][-1]  # [b, h, dst, src]
    # a token at dst in repeat j >= 1 should attend to the tokens after its earlier copies: dst - 24 - 25 m
    mass = []
    for dst in range(26, rep.shape[1]):
        srcs = torch.arange(dst - 24, 0, -25)
        mass.append(last[:, :, dst, srcs].sum(-1))  # [b, h]
    return prev.max(), torch.stack(mass).mean(dim=(0, 1))


def test_two_layer_model_has_previous_token_and_induction_heads(validation):
    prev, prefix = induction_scores(PUBLISHED[2], validation)
    assert prev >= 0.5, f"best layer-0 previous-token score {prev:.3f}"
    assert prefix.max() >= 0.4, f"best layer-1 prefix-matching score {prefix.max():.3f}"


def test_one_layer_model_has_no_induction_head(validation):
    _, prefix = induction_scores(PUBLISHED[1], validation)
    assert prefix.max() < 0.2, f"best prefix-matching score {prefix.max():.3f}"
