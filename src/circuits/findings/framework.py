"""The framework chapter's results (``book/01_framework``): the identities the paper's framework rests on, each
measured on our trained models as a largest absolute difference next to the size of the quantity compared.

- the residual stream has no privileged basis: rotating it leaves the logits unchanged (``analysis.basis``),
  while a per-coordinate ReLU before the unembedding would not be invariant;
- attention heads are independent and additive: concatenating the heads and applying one W_O is the sum of the
  heads each applying its own block of W_O, and x_{l+1} = x_l + Σ_h h(x_l);
- virtual weights: what a layer-1 head's values read is the token embedding's part plus, for every layer-0
  head, its result times the virtual weight W_O^{h1} W_V^{h2};
- the path expansions of the logits (one and two layers) and of the layer-1 attention scores are exact
  (``analysis.path_expansion``, ``analysis.qk_paths``): our models have no LayerNorm.
"""

from __future__ import annotations

import torch

from circuits.analysis.basis import random_orthogonal, rotate_residual
from circuits.analysis.path_expansion import path_expansion_logits
from circuits.analysis.qk_paths import (bilinear_row_centred_rms, group_rms, grouped_queries_keys,
                                       piece_queries_keys)
from circuits.metrics.heads import induction_heads, previous_token_heads
from circuits.metrics.olsson import prefix_matching_scores, previous_token_scores

N_WINDOWS = 2  # validation windows every check runs on
EXACT = 1e-4  # the verdict's rule: an identity holds when max |difference| / max |value| is below this
ROTATION_SEED = 0


def tokens_of(book) -> torch.Tensor:
    """The validation tokens the chapter measures on, [N_WINDOWS, n_ctx]."""
    return book.windows(N_WINDOWS)[:, :-1]


def _max(x: torch.Tensor) -> float:
    return float(x.abs().max())


def rotation_checks(model, tokens: torch.Tensor, seed: int = ROTATION_SEED) -> dict:
    """Logits of ``model`` and of its rotated copy (``rotate_residual`` with a random orthogonal R), plain and
    with a ReLU applied to every coordinate of the final residual stream."""
    rotated = rotate_residual(model, random_orthogonal(model.cfg.d_model, seed))
    logits, cache = model.run_with_cache(tokens)
    logits_r, cache_r = rotated.run_with_cache(tokens)
    relu = [("hook_resid_final", lambda x, name: torch.relu(x))]
    return {"logit_diff": _max(logits_r - logits), "logit_scale": _max(logits),
            "stream_diff": _max(cache_r["hook_resid_final"] - cache["hook_resid_final"]),
            "stream_scale": _max(cache["hook_resid_final"]),
            "relu_diff": _max(rotated.run_with_hooks(tokens, relu) - model.run_with_hooks(tokens, relu))}


def additivity_checks(model, tokens: torch.Tensor) -> dict:
    """Per layer: concatenated heads times W_O against the sum of per-head writes; that sum against the layer's
    ``hook_attn_out``; x_l + Σ_h h(x_l) against x_{l+1}. And the fused forward pass against the explicit one."""
    logits, cache = model.run_with_cache(tokens)
    out = {"concat_vs_sum": 0.0, "sum_vs_layer": 0.0, "residual": 0.0, "scale": 0.0,
           "fused_vs_explicit": _max(model(tokens) - logits), "logit_scale": _max(logits)}
    for l, block in enumerate(model.blocks):
        x, A = cache[f"blocks.{l}.hook_resid_pre"], cache[f"blocks.{l}.attn.hook_pattern"]
        z = A @ (x[:, None] @ block.attn.W_V)  # [batch, head, pos, d_head]
        concat = z.transpose(1, 2).flatten(2) @ block.attn.W_O.flatten(0, 1)  # [batch, pos, d_model]
        summed = (z @ block.attn.W_O).sum(1)  # [batch, pos, d_model]
        out["concat_vs_sum"] = max(out["concat_vs_sum"], _max(concat - summed))
        out["sum_vs_layer"] = max(out["sum_vs_layer"], _max(summed - cache[f"blocks.{l}.hook_attn_out"]))
        out["residual"] = max(out["residual"], _max(x + summed - cache[f"blocks.{l}.hook_resid_post"]))
        out["scale"] = max(out["scale"], _max(summed))
    return out


def virtual_weight_checks(model, tokens: torch.Tensor) -> dict:
    """For every layer-1 head h2: its value input x_1 W_V^{h2} against the token embedding's part x_0 W_V^{h2}
    plus Σ_{h1} z^{h1} (W_O^{h1} W_V^{h2}), z^{h1} = A^{h1} x_0 W_V^{h1} (row vectors); and the ratio of the RMS
    of the layer-0 heads' part to the embedding's part, per h2."""
    _, cache = model.run_with_cache(tokens)
    L0, L1 = model.blocks[0].attn, model.blocks[1].attn
    x0 = cache["blocks.0.hook_resid_pre"]  # [batch, pos, d_model]
    z0 = cache["blocks.0.attn.hook_pattern"] @ (x0[:, None] @ L0.W_V)  # [batch, h1, pos, d_head]
    diff, scale, ratio = 0.0, 0.0, []
    for h2 in range(model.cfg.n_heads):
        virtual = L0.W_O @ L1.W_V[h2]  # [h1, d_head, d_head]: W_O^{h1} W_V^{h2}
        from_embedding, from_heads = x0 @ L1.W_V[h2], (z0 @ virtual).sum(1)  # [batch, pos, d_head] each
        measured = cache["blocks.1.hook_resid_pre"] @ L1.W_V[h2]
        diff = max(diff, _max(from_embedding + from_heads - measured))
        scale = max(scale, _max(measured))
        ratio.append(float(from_heads.pow(2).mean().sqrt() / from_embedding.pow(2).mean().sqrt()))
    return {"diff": diff, "scale": scale, "head_to_embedding_rms": ratio}


def path_checks(model1, model2, tokens: torch.Tensor) -> dict:
    """The one- and two-layer expansions (summed by order: direct path, single heads, virtual heads) against the
    logits, and the row-centred RMS of each order's logits in the two-layer model."""
    terms1, _ = path_expansion_logits(model1, tokens, by_order=True)
    logits1 = model1(tokens)
    orders, _ = path_expansion_logits(model2, tokens, by_order=True)
    logits2 = model2(tokens)
    centred = orders - orders.mean(-1, keepdim=True)
    return {"one_diff": _max(terms1.sum(0) - logits1), "one_scale": _max(logits1),
            "two_diff": _max(orders.sum(0) - logits2), "two_scale": _max(logits2),
            "order_rms": [float(o.pow(2).mean().sqrt()) for o in centred]}


def qk_checks(model, tokens: torch.Tensor, layer: int = 1) -> dict:
    """Every layer-``layer`` head's scores expanded over what wrote its queries and keys (``analysis.qk_paths``):
    the largest difference between the sum of the four composition groups and ``hook_attn_scores`` below the
    diagonal, the row-centred RMS of each group [n_heads, 4] and of each single (query piece, key piece) term
    [n_heads, n_pieces, n_pieces]."""
    _, cache = model.run_with_cache(tokens)
    diff, scale, groups, terms_rms = 0.0, 0.0, [], []
    for h in range(model.cfg.n_heads):
        q, k, names = piece_queries_keys(model, cache, layer, h)
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][:, h]
        causal = scores.isfinite()
        qg, kg = grouped_queries_keys(q, k, names)  # [2 (direct, written), batch, pos, d_head] each
        total = sum(qg[a] @ kg[b].mT for a in range(2) for b in range(2))  # the four groups of COMPOSITION_GROUPS
        diff = max(diff, _max((total - scores)[causal]))
        scale = max(scale, _max(scores[causal]))
        groups.append(group_rms(qg, kg).mean(-1))  # [4]: mean over the batch
        terms_rms.append(bilinear_row_centred_rms(q, k).mean(-1))  # [n_pieces, n_pieces]: mean over the batch
    return {"diff": diff, "scale": scale, "group_rms": torch.stack(groups).numpy(),
            "term_rms": torch.stack(terms_rms).numpy(), "pieces": names}


def _compute(book) -> dict:
    model1, model2 = book.model(1), book.model(2)
    tokens = tokens_of(book)
    prefix = prefix_matching_scores(model2, book.repeated())  # [n_layers, n_heads]
    return {"rotation": rotation_checks(model2, tokens), "additivity": additivity_checks(model2, tokens),
            "virtual": virtual_weight_checks(model2, tokens), "paths": path_checks(model1, model2, tokens),
            **{f"qk_{k}": v for k, v in qk_checks(model2, tokens).items()},
            "induction_heads": [h for l, h in induction_heads(prefix) if l == 1],
            "previous_token_heads": [h for _, h in previous_token_heads(previous_token_scores(model2, tokens))],
            "n_tokens": int(tokens.numel())}


def results(book) -> dict:
    """Every check of the chapter on ``N_WINDOWS`` validation windows, with the two-layer model's previous-token
    heads (on those windows) and induction heads (on Olsson et al.'s repeated random tokens) by the rules of
    ``metrics.heads``; computed once per build."""
    return book.cache("framework-identities", (1, 2), lambda: _compute(book))


def exact(diff: float, scale: float) -> bool:
    """The verdict's rule: an identity holds up to float32 rounding when ``diff / scale <= EXACT``."""
    return diff <= EXACT * max(scale, 1e-30)


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


def findings_rows(book) -> list[dict]:
    r = results(book)
    rot, add, virt, paths = r["rotation"], r["additivity"], r["virtual"], r["paths"]
    ratio = lambda d, s: f"{d:.1e} (values up to {s:.1f})"  # noqa: E731
    return [
        {"claim": "The residual stream has no privileged basis: rotating it changes nothing the model computes",
         "paper": "an attention-only residual stream has no privileged basis (section The Residual Stream)",
         "ours": (f"random rotation: largest logit change {ratio(rot['logit_diff'], rot['logit_scale'])}; "
                  f"with a per-coordinate ReLU before W_U it would change by {rot['relu_diff']:.2f}"),
         "verdict": _verdict(exact(rot["logit_diff"], rot["logit_scale"])
                             and not exact(rot["relu_diff"], rot["logit_scale"])),
         "section": "01_framework#framework-residual-stream"},
        {"claim": "Attention heads are independent and additive: x_{l+1} = x_l + Σ_h h(x_l)",
         "paper": "exact, by splitting W_O into per-head blocks (section Attention Heads are Independent and Additive)",
         "ours": (f"concatenated vs summed heads {ratio(add['concat_vs_sum'], add['scale'])}; "
                  f"x_l + Σ_h h(x_l) vs x_(l+1) {add['residual']:.1e}"),
         "verdict": _verdict(exact(max(add["concat_vs_sum"], add["sum_vs_layer"], add["residual"]), add["scale"])),
         "section": "01_framework#framework-heads"},
        {"claim": "Layer 1 reads layer 0 through virtual weights W_V^{h2} W_O^{h1}",
         "paper": "exact (section Virtual Weights and the Residual Stream as a Communication Channel)",
         "ours": ("value inputs of all layer-1 heads rebuilt from virtual weights: "
                  + ratio(virt["diff"], virt["scale"])),
         "verdict": _verdict(exact(virt["diff"], virt["scale"])),
         "section": "01_framework#framework-virtual-weights"},
        {"claim": "The path expansion of the logits is exact (direct path, heads, virtual heads)",
         "paper": "exact with patterns frozen; the paper's models fold LayerNorm in, ours have none",
         "ours": (f"one layer {ratio(paths['one_diff'], paths['one_scale'])}; "
                  f"two layers {ratio(paths['two_diff'], paths['two_scale'])}"),
         "verdict": _verdict(exact(paths["one_diff"], paths["one_scale"])
                             and exact(paths["two_diff"], paths["two_scale"])),
         "section": "01_framework#framework-path-expansion"},
        {"claim": "A layer-1 attention score expands into direct, Q-, K- and Q-and-K-composition terms",
         "paper": "exact (section Two-Layer Attention-Only Transformers, the QK circuit)",
         "ours": ("all layer-1 heads' scores rebuilt from the four groups of terms: "
                  + ratio(r["qk_diff"], r["qk_scale"])),
         "verdict": _verdict(exact(r["qk_diff"], r["qk_scale"])),
         "section": "01_framework#framework-qk-expansion"},
    ]
