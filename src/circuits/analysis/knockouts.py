"""Knocking heads out, many ways at once (Olsson et al. 2022, "Argument 3"; the interventions themselves are
``analysis.ablation.ablate``'s: zero or mean ablation through the model's hook points).

``knockout_losses`` gives the per-position loss of the model with each of several sets of heads knocked out from
one pass of the intact model. It is exact, not an approximation: removing head h of layer l only takes
(z^h - m^h) W_O^h out of the residual stream, so everything up to the next softmax changes by a product with it
(for the last layer, the logits by (z^h - m^h) W_O^h W_U). ``tests/analysis/test_knockouts.py`` checks every case
against running the model under ``ablate``. The speed matters because the chapter runs eleven knock-outs on
1,024 windows of text while the book builds.
"""

from __future__ import annotations

import math

import torch
from einops import einsum

from circuits.metrics.heads import Head
from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer

BATCH = 32  # windows per forward pass


def _layer_inputs(model: AttnOnlyTransformer, tokens: torch.Tensor):
    """The residual stream before each layer, x_0 .. x_{L-1} [batch, pos, d_model], the positions p and, for
    every layer but the last, what each head computed there, z [batch, pos, head, d_head]."""
    x, pos = model.embed(tokens), model.pos_embed(tokens.shape[1])
    xs, zs = [x], []
    for layer, block in enumerate(model.blocks[:-1]):
        saved = {}
        with model.hooks([(f"blocks.{layer}.attn.hook_z", lambda z, name: saved.setdefault("z", z))]):
            x = block(x, pos)
        xs.append(x)
        zs.append(saved["z"])
    return xs, pos, zs


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """softmax*(q kᵀ / √d_head) v for the queries q [batch, head, len(idx), d_head] of the destinations ``idx``
    against every position's keys and values [batch, head, pos, d_head]: z [batch, len(idx), head, d_head]."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.arange(k.shape[-2], device=k.device) > idx[:, None], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


def _qkv(attn, x: torch.Tensor, pos: torch.Tensor, idx: torch.Tensor):
    """A layer's queries at the destinations ``idx`` and every position's keys and values [batch, head, ., d_head]
    from its input x [batch, pos, d_model]: the model's own ``queries_keys`` (positions enter queries and keys
    only), and the values it reads."""
    q, k = attn.queries_keys(x, pos)
    return q[:, :, idx], k, einsum(x, attn.W_V, "b s d, h d e -> b h s e")


def _last_layer(model: AttnOnlyTransformer, x: torch.Tensor, pos: torch.Tensor, idx: torch.Tensor):
    """The last layer for the destinations ``idx`` only: x_L there [batch, len(idx), d_model] and what each head
    computed there, z [batch, len(idx), head, d_head], from x_{L-1} [batch, pos, d_model]. The same maths as the
    model's layer (``model.transformer.Attention``)."""
    attn = model.blocks[-1].attn
    z = _attend(*_qkv(attn, x, pos, idx), idx)
    return x[:, idx] + einsum(z, attn.W_O, "b p h e, h e d -> b p d"), z


def _mean_z(model: AttnOnlyTransformer, tokens: torch.Tensor, heads) -> dict[Head, torch.Tensor]:
    """Each head's mean z over the batch and positions of ``tokens`` (what mean ablation writes instead,
    as ``analysis.ablation.ablate`` computes it)."""
    _, cache = model.run_with_cache(tokens)
    return {(l, h): cache[f"blocks.{l}.attn.hook_z"][:, :, h].mean(dim=(0, 1)) for l, h in heads}


@torch.no_grad()
def knockout_losses(model: AttnOnlyTransformer, windows: torch.Tensor, positions: list[int],
                    variants: list[tuple[str, str, list[Head]]], mean_tokens: torch.Tensor | None = None
                    ) -> dict[tuple[str, str], torch.Tensor]:
    """The next-token loss [window, len(positions)] of ``windows`` [n, n_ctx + 1] at ``positions`` for each
    (set, mode, heads) of ``variants``: the model with those heads (all of one layer; none: the intact model)
    knocked out as ``analysis.ablation.ablate`` does, zero or mean ablation.

    All from one pass of the intact model, exactly: a knocked-out head h of layer l only takes
    (z^h - m^h) W_O^h from the residual stream (m^h: zero, or its mean z), so until the next softmax everything
    downstream changes by a product with it. For a head of the last layer that is the logits, by
    (z^h - m^h) W_O^h W_U; for a head of the layer before, the last layer's queries, keys and values, by
    (z^h - m^h) W_O^h W_Q (W_K, W_V), and its attention is computed again. Earlier layers' knock-outs run the
    layers after them again. The last layer is computed at the destinations ``positions`` only."""
    heads_of = {(name, mode): heads for name, mode, heads in variants}
    layer_of = {}
    for key, heads in heads_of.items():
        layers = {l for l, _ in heads}
        if len(layers) > 1:
            raise ValueError("each knock-out must remove heads of one layer")
        layer_of[key] = layers.pop() if layers else None
    wanted = {h for (name, mode), heads in heads_of.items() if mode == "mean" for h in heads}
    means = _mean_z(model, mean_tokens, wanted) if wanted else {}
    last, idx, attn, W_U = model.cfg.n_layers - 1, torch.tensor(positions), model.blocks[-1].attn, model.unembed.W_U
    W_O = lambda l, h: model.blocks[l].attn.W_O[h]  # [d_head, d_model]
    into = {(l, h): [einsum(W_O(l, h), W, "e d, h d f -> h e f") for W in (attn.W_Q, attn.W_K, attn.W_V)]
            for key, heads in heads_of.items() if layer_of[key] == last - 1 for l, h in heads}
    out = {key: [] for key in heads_of}
    for batch in windows.split(BATCH):
        tokens, targets = batch[:, :-1], batch[:, 1:][:, idx]
        xs, pos, zs = _layer_inputs(model, tokens)
        x = xs[last]
        q, k, v = _qkv(attn, x, pos, idx)
        z = _attend(q, k, v, idx)  # [batch, p, head, d_head]
        logits = (x[:, idx] + einsum(z, attn.W_O, "b p h e, h e d -> b p d")) @ W_U
        loss = lambda lg: loss_fn(lg, targets, per_token=True)
        for key, heads in heads_of.items():
            layer = layer_of[key]
            taken = [(h, (z if layer == last else zs[layer])[:, :, h[1]]
                      - (means.get(h, 0.0) if key[1] == "mean" else 0.0)) for h in heads]  # (head, z^h - m^h)
            if layer is None:
                out[key].append(loss(logits))
            elif layer == last:
                out[key].append(loss(logits - sum(d @ (W_O(*h) @ W_U) for h, d in taken)))
            elif layer == last - 1:
                dq, dk, dv = (sum(einsum(d[:, idx] if i == 0 else d, into[h][i], "b s e, h e f -> b h s f")
                                  for h, d in taken) for i in range(3))
                z2 = _attend(q - dq, k - dk, v - dv, idx)
                x2 = x[:, idx] - sum(d[:, idx] @ W_O(*h) for h, d in taken)
                out[key].append(loss((x2 + einsum(z2, attn.W_O, "b p h e, h e d -> b p d")) @ W_U))
            else:
                x2 = xs[layer + 1] - sum(d @ W_O(*h) for h, d in taken)
                for block in model.blocks[layer + 1:-1]:
                    x2 = block(x2, pos)
                out[key].append(loss(model.unembed(_last_layer(model, x2, pos, idx)[0])))
    return {key: torch.cat(parts) for key, parts in out.items()}
