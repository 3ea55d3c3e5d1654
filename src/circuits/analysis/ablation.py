"""Knocking heads out (Olsson et al.'s "Argument 3", and the paper's ablations), through the model's hook points.

An ablated head's output is replaced by zeros (``mode="zero"``, the same as zeroing its W_O) or by its mean output
over a batch of text (``"mean"``). Both act on what the head read, its slice of ``blocks.{l}.attn.hook_z``
[batch, pos, head, d_head]: the output z W_O is linear in it, so zeroing z zeroes the output and the mean z gives
the mean output, and the model keeps its fused attention. Later layers then read the changed residual stream,
so their patterns change too. ``ablate`` attaches the hooks
while a block of code runs, so any measurement of ``circuits.metrics`` (prefix matching, per-token loss, ICL
score) applies unchanged to the ablated model:

    with ablate(model, [(0, 7)]):
        scores = prefix_matching_scores(model, repeated)
"""

from __future__ import annotations

import contextlib

import torch

from circuits.metrics.heads import Head
from circuits.metrics.olsson import prefix_matching_scores
from circuits.model.transformer import AttnOnlyTransformer

MODES = ("zero", "mean")


def check_heads(model: AttnOnlyTransformer, heads) -> set[Head]:
    """``heads`` as a set of (layer, head), each checked to exist in ``model``."""
    heads = {(int(l), int(h)) for l, h in heads}
    for l, h in heads:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise ValueError(f"head ({l}, {h}) does not exist in a model of {model.cfg.n_layers} layers "
                             f"x {model.cfg.n_heads} heads")
    return heads


@torch.no_grad()
def ablation_hooks(model: AttnOnlyTransformer, heads, mode: str = "zero",
                   mean_tokens: torch.Tensor | None = None) -> list[tuple[str, object]]:
    """(hook name, function) pairs that replace the outputs of ``heads`` ({(layer, head), ...}): by zeros, or by
    each head's mean output over the batch and positions of ``mean_tokens`` [batch, pos] in the intact model."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    heads = check_heads(model, heads)
    if mode == "mean":
        if mean_tokens is None:
            raise ValueError("mode='mean' needs mean_tokens: the text whose mean head outputs replace the heads'")
        _, ref = model.run_with_cache(mean_tokens)
    hooks = []
    for layer in sorted({l for l, _ in heads}):
        mine = sorted(h for l, h in heads if l == layer)
        means = ({h: ref[f"blocks.{layer}.attn.hook_z"][:, :, h].mean(dim=(0, 1)) for h in mine}
                 if mode == "mean" else {})

        def replace(z: torch.Tensor, name: str, mine=mine, means=means) -> torch.Tensor:
            z = z.clone()
            for h in mine:
                z[:, :, h] = means.get(h, 0.0)  # [batch, pos, d_head] of head h
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", replace))
    return hooks


@contextlib.contextmanager
def ablate(model: AttnOnlyTransformer, heads, mode: str = "zero", mean_tokens: torch.Tensor | None = None):
    """While the block runs, ``model`` computes with ``heads`` knocked out (``ablation_hooks``)."""
    with model.hooks(ablation_hooks(model, heads, mode, mean_tokens)):
        yield model


@torch.no_grad()
def ablation_prefix_matching(model: AttnOnlyTransformer, repeated: torch.Tensor, layer: int = 0,
                             mode: str = "zero", mean_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Prefix-matching scores of every head with each head of ``layer`` ablated in turn (Olsson et al.),
    [n_heads (ablated), n_layers, n_heads]: an induction head's score collapses when its previous-token head
    is ablated."""
    out = []
    for h in range(model.cfg.n_heads):
        with ablate(model, [(layer, h)], mode, mean_tokens):
            out.append(prefix_matching_scores(model, repeated))
    return torch.stack(out)
