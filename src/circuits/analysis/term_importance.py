"""How much each order of terms matters: the paper's frozen-pattern iteration ("Two-layer", term importance).

With the attention patterns A^h frozen (recorded once from the real forward pass), every head is a
linear map of its input, ``head(y) = A^h y W_V^h W_O^h`` (row vectors), and the model is a sum of
paths of every order: the direct path (order 0), single heads (order 1), virtual heads (order 2), ...
(``analysis.path_expansion``). The paper measures the orders by iterating the frozen model:

    pass 0:  every head is fed zeros                         ->  x_final = W_E x  (direct path only)
    pass k:  every head of layer l is fed the residual        ->  x_final = all terms of order <= k
             stream that layer l received in pass k - 1

(pass 0 records ``W_E x`` at every layer; in pass k the input of layer l holds every term of order
< k, so each head adds terms of order <= k.) After n_layers passes the result is the model itself.
The loss after pass k minus the loss after pass k - 1 is the marginal effect of the order-k terms.
Losses are next-token cross-entropies in nats on windows [batch, pos + 1] (inputs ``w[:, :-1]``,
targets ``w[:, 1:]``), as ``circuits.metrics.losses.per_token_loss``; ln d_vocab (uniform) is the reference.

Per-term effects (``single_head_effects``, ``virtual_head_effects``) remove ONE term from the model's
logits, exactly: loss(logits - W_U term) - loss(logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer

Cache = dict[str, torch.Tensor]


def _split(model: AttnOnlyTransformer, windows: torch.Tensor, cache: Cache | None):
    """Inputs [batch, pos], targets [batch, pos] and the cache of the real forward pass on the inputs."""
    windows = torch.as_tensor(windows)
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [batch, pos + 1] with pos >= 1, got shape {tuple(windows.shape)}")
    inputs, targets = model.check_tokens(windows[:, :-1]), model.check_tokens(windows[:, 1:])
    if cache is None:
        _, cache = model.run_with_cache(inputs)
    return inputs, targets, cache


def _patterns(model: AttnOnlyTransformer, cache: Cache) -> list[torch.Tensor]:
    return [cache[f"blocks.{l}.attn.hook_pattern"] for l in range(model.cfg.n_layers)]


@torch.no_grad()
def frozen_pattern_passes(model: AttnOnlyTransformer, tokens: torch.Tensor,
                          cache: Cache | None = None) -> torch.Tensor:
    """Paper "Two-layer transformers", term importance: the final residual stream after each pass.

    pass 0: ``x^0 = W_E x``;  pass k: ``x^k = W_E x + sum_l sum_h A^{l,h} r^{k-1}_l W_V^{l,h} W_O^{l,h}``,
    where ``r^{k-1}_l`` is the residual stream entering layer l in pass k - 1 (``r^0_l = W_E x``).
    tokens: the model's inputs [batch, pos]; patterns from ``cache`` (the real forward pass on them).
    Each pass is the model itself with two hooks per layer: ``hook_pattern`` returns the recorded pattern and
    ``hook_v_input`` feeds the values what that layer received in the pass before.
    Returns [n_layers + 1, batch, pos, d_model]; entry k holds every path of order <= k, and entry
    n_layers equals the model's ``hook_resid_final``.
    """
    tokens = model.check_tokens(tokens)
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    patterns = _patterns(model, cache)
    fed = [torch.zeros_like(cache["hook_embed"])] * model.cfg.n_layers  # what each layer's values read
    finals = []
    for _ in range(model.cfg.n_layers + 1):
        seen: dict[str, torch.Tensor] = {}

        def keep(value: torch.Tensor, name: str) -> None:
            seen[name] = value

        hooks = [("hook_resid_final", keep)]
        for layer in range(model.cfg.n_layers):
            hooks += [(f"blocks.{layer}.attn.hook_pattern", lambda _, __, a=patterns[layer]: a),
                      (f"blocks.{layer}.hook_v_input", lambda _, __, x=fed[layer]: x),
                      (f"blocks.{layer}.hook_resid_pre", keep)]
        model.run_with_hooks(tokens, hooks)
        finals.append(seen["hook_resid_final"])
        fed = [seen[f"blocks.{layer}.hook_resid_pre"] for layer in range(model.cfg.n_layers)]
    return torch.stack(finals)


@dataclass
class TermImportance:
    """Losses (nats) of the frozen-pattern passes. ``losses[k]``: all terms of order <= k."""

    uniform: float  # ln d_vocab: the loss of predicting nothing
    losses: list[float]  # [n_layers + 1]
    model_loss: float  # the model's own loss (equals losses[-1])

    @property
    def marginal(self) -> list[float]:
        """Loss reduction by each order: ``[uniform - losses[0], losses[0] - losses[1], ...]``."""
        prev = [self.uniform] + self.losses[:-1]
        return [a - b for a, b in zip(prev, self.losses)]

    @property
    def gap(self) -> float:
        """The uniform-to-model gap ``uniform - model_loss`` (nats): everything the model learned."""
        return self.uniform - self.model_loss

    @property
    def gap_shares(self) -> list[float]:
        """Each order's marginal effect as a share of the uniform-to-model gap, ``marginal[k] / gap``; they sum
        to 1. Unlike nats, shares compare across vocabularies (ln d_vocab differs: 8.3 nats at 4,096 tokens,
        10.8 at GPT-2's 50,257)."""
        return [m / self.gap for m in self.marginal]


@torch.no_grad()
def term_importance(model: AttnOnlyTransformer, windows: torch.Tensor, cache: Cache | None = None) -> TermImportance:
    """Paper "Two-layer transformers", term importance: loss of ``W_U x^k`` after each pass k.

    windows: [batch, pos + 1]. ``marginal[k]`` is the paper's marginal effect of the order-k terms
    (direct path, single heads, virtual heads). ``cache``: the real forward pass on ``windows[:, :-1]``.
    """
    inputs, targets, cache = _split(model, windows, cache)
    finals = frozen_pattern_passes(model, inputs, cache)
    losses = [float(loss_fn(f @ model.unembed.W_U, targets)) for f in finals]
    model_loss = float(loss_fn(cache["hook_resid_final"] @ model.unembed.W_U, targets))
    return TermImportance(uniform=math.log(model.cfg.d_vocab), losses=losses, model_loss=model_loss)


def _removal_effect(logits: torch.Tensor, term_logits: torch.Tensor, targets: torch.Tensor, base: float) -> float:
    return float(loss_fn(logits - term_logits, targets)) - base


@torch.no_grad()
def single_head_terms(model: AttnOnlyTransformer, tokens: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
    """Order-1 terms: head (l, h) fed the token embeddings only, ``A^{l,h} W_E x W_V^{l,h} W_O^{l,h}``.

    tokens [batch, pos] (inputs). Returns [n_layers, batch, pos, n_heads, d_model].
    """
    tokens = model.check_tokens(tokens)
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    x0 = model.embed.W_E[tokens]
    return torch.stack([block.attn.head_outputs(x0, p) for block, p in zip(model.blocks, _patterns(model, cache))])


@torch.no_grad()
def single_head_effects(model: AttnOnlyTransformer, windows: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
    """Increase of the model's loss when only head (l, h)'s order-1 term is removed, [n_layers, n_heads].

    ``loss(logits - W_U A^{l,h} W_E x W_OV^{l,h}) - loss(logits)`` with the patterns frozen; the
    head's higher-order terms (virtual heads through it) stay in.
    """
    inputs, targets, cache = _split(model, windows, cache)
    logits = cache["hook_resid_final"] @ model.unembed.W_U
    base = float(loss_fn(logits, targets))
    terms = single_head_terms(model, inputs, cache)  # [L, b, p, H, d]
    out = torch.empty(model.cfg.n_layers, model.cfg.n_heads)
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            out[l, h] = _removal_effect(logits, terms[l, :, :, h] @ model.unembed.W_U, targets, base)
    return out


@torch.no_grad()
def virtual_head_terms(model: AttnOnlyTransformer, tokens: torch.Tensor, cache: Cache,
                       layer1: int = 0, layer2: int = 1, head1: int | None = None) -> torch.Tensor:
    """Paper "Virtual attention heads": the order-2 terms through (layer1, h1) then (layer2, h2),

        A^{h2} A^{h1} W_E x W_V^{h1} W_O^{h1} W_V^{h2} W_O^{h2}      (row vectors, patterns frozen)

    tokens [batch, pos] (inputs). Returns [n_heads(h1), n_heads(h2), batch, pos, d_model], or
    [n_heads(h2), batch, pos, d_model] for a single ``head1``.
    """
    if not 0 <= layer1 < layer2 < model.cfg.n_layers:
        raise ValueError(f"need 0 <= layer1 < layer2 < {model.cfg.n_layers}, got {layer1}, {layer2}")
    tokens = model.check_tokens(tokens)
    x0 = model.embed.W_E[tokens]
    p1, p2 = cache[f"blocks.{layer1}.attn.hook_pattern"], cache[f"blocks.{layer2}.attn.hook_pattern"]
    first = model.blocks[layer1].attn.head_outputs(x0, p1)  # [b, p, H, d]
    heads1 = range(model.cfg.n_heads) if head1 is None else [head1]
    out = torch.stack([model.blocks[layer2].attn.head_outputs(first[:, :, h1], p2).permute(2, 0, 1, 3)
                       for h1 in heads1])  # [h1, h2, b, p, d]
    return out if head1 is None else out[0]


@torch.no_grad()
def virtual_head_effects(model: AttnOnlyTransformer, windows: torch.Tensor, cache: Cache | None = None,
                         layer1: int = 0, layer2: int = 1) -> dict[str, torch.Tensor]:
    """Each virtual head (h1 in ``layer1``, h2 in ``layer2``) measured on text, [n_heads(h1), n_heads(h2)]:

    ``loss``: increase of the model's loss when only that term is removed (exact, patterns frozen),
    ``loss(logits - W_U term) - loss(logits)``; ``norm``: mean over positions of ||term|| (d_model).
    """
    inputs, targets, cache = _split(model, windows, cache)
    logits = cache["hook_resid_final"] @ model.unembed.W_U
    base = float(loss_fn(logits, targets))
    H = model.cfg.n_heads
    loss, norm = torch.empty(H, H), torch.empty(H, H)
    for h1 in range(H):
        terms = virtual_head_terms(model, inputs, cache, layer1, layer2, head1=h1)  # [h2, b, p, d]
        norm[h1] = terms.norm(dim=-1).mean(dim=(1, 2))
        for h2 in range(H):
            loss[h1, h2] = _removal_effect(logits, terms[h2] @ model.unembed.W_U, targets, base)
    return {"loss": loss, "norm": norm}


def constant_share(term: torch.Tensor) -> torch.Tensor:
    """How much of a term [batch, pos, ..., d_model] is one constant vector over batch and positions:
    ``||mean||² / mean ||term||²``, in [0, 1], one value per index of ``...`` (e.g. per head of
    ``single_head_terms``). A head that writes nearly the same vector everywhere acts as a bias, which our models
    (they have none) can only learn this way."""
    mean = term.mean(dim=(0, 1))
    return mean.pow(2).sum(-1) / term.pow(2).sum(-1).mean(dim=(0, 1)).clamp_min(1e-30)


@torch.no_grad()
def term_effect(model: AttnOnlyTransformer, windows: torch.Tensor, term: torch.Tensor, cache: Cache | None = None,
                keep_mean: bool = False) -> float:
    """Increase of the model's loss (nats) when ``term`` [batch, pos, d_model] (one head's term, a virtual head's,
    ...) is removed from the final residual stream, patterns frozen: ``loss(logits - W_U term) - loss(logits)``.
    With ``keep_mean`` only its variation is removed: its mean over batch and positions stays in, as a bias
    would."""
    _, targets, cache = _split(model, windows, cache)
    logits = cache["hook_resid_final"] @ model.unembed.W_U
    removed = term - term.mean(dim=(0, 1)) if keep_mean else term
    return _removal_effect(logits, removed @ model.unembed.W_U, targets, float(loss_fn(logits, targets)))
