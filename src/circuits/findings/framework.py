"""The framework chapter's results (``book/01_framework``): the identities the paper's framework rests on, each
measured on our trained models as a largest absolute difference next to the size of the quantity compared.

- the residual stream has no privileged basis: rotating it leaves the logits unchanged (``analysis.basis``),
  while a per-coordinate ReLU before the unembedding would not be invariant;
- attention heads are independent and additive: concatenating the heads and applying one W_O is the sum of the
  heads each applying its own block of W_O, and x_{l+1} = x_l + Σ_h h(x_l);
- virtual weights: what a layer-1 head's values read is the token embedding's part plus, for every layer-0
  head, its result times the virtual weight W_O^{h1} W_V^{h2};
- the path expansions of the logits (one and two layers) and of the layer-1 attention scores are exact
  (``analysis.path_expansion``, ``analysis.qk_paths``): our models have no LayerNorm;
- a worked example of K-composition: where a phrase of held-out text repeats, the term of a layer-1 head's score
  in which the present token's query meets the key written by a layer-0 head (``k_composition_example``).

Every number is the largest absolute difference between the two sides next to the largest absolute value
compared; an identity holds when their ratio is below ``EXACT`` (float32 rounding over these sums).
"""

from __future__ import annotations

import torch

from circuits.analysis.basis import random_orthogonal, rotate_residual
from circuits.analysis.path_expansion import path_expansion_logits
from circuits.analysis.qk_paths import (COMPOSITION_GROUPS, TOKEN, bilinear_row_centred_rms, group_rms,
                                       grouped_queries_keys, piece_queries_keys)
from circuits.metrics.heads import induction_heads, previous_token_heads
from circuits.metrics.olsson import prefix_matching_scores, previous_token_scores

from .verdicts import verdict

N_WINDOWS = 2  # validation windows every check runs on
EXACT = 1e-4  # the verdict's rule: an identity holds when max |difference| / max |value| is below this
ROTATION_SEED = 0
# the worked example of K-composition: the first place in held-out text where a phrase of EXAMPLE_LENGTH tokens
# (two before the present token, the present token made of letters, the next) repeats one at least EXAMPLE_GAP
# tokens earlier; EXAMPLE_SOURCES sources are listed
EXAMPLE_LENGTH, EXAMPLE_GAP, EXAMPLE_SOURCES = 4, 10, 5
EXAMPLE_SEARCH = (N_WINDOWS, 64, 256)  # validation windows searched in turn (the chapter's own first)


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
    """Largest over the layers: concatenated heads times W_O against the sum of per-head writes; that sum against
    the layer's ``hook_attn_out``; x_l + Σ_h h(x_l) against x_{l+1}; and the largest per-head write summed."""
    _, cache = model.run_with_cache(tokens)
    out = {"concat_vs_sum": 0.0, "sum_vs_layer": 0.0, "residual": 0.0, "scale": 0.0}
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
    """The one-layer expansion (direct path and one term per head) and the two-layer one (summed by order: direct
    path, single heads, virtual heads) against the logits, and the row-centred RMS of each order's logits in the
    two-layer model."""
    terms1, _ = path_expansion_logits(model1, tokens)
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
    [n_heads, n_pieces, n_pieces]; and per head, the largest difference and the largest score."""
    _, cache = model.run_with_cache(tokens)
    head_diff, head_scale, groups, terms_rms = [], [], [], []
    for h in range(model.cfg.n_heads):
        q, k, names = piece_queries_keys(model, cache, layer, h)
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][:, h]
        causal = scores.isfinite()
        qg, kg = grouped_queries_keys(q, k, names)  # [2 (direct, written), batch, pos, d_head] each
        total = sum(qg[a] @ kg[b].mT for a in range(2) for b in range(2))  # the four groups of COMPOSITION_GROUPS
        head_diff.append(_max((total - scores)[causal]))
        head_scale.append(_max(scores[causal]))
        groups.append(group_rms(qg, kg).mean(-1))  # [4]: mean over the batch
        terms_rms.append(bilinear_row_centred_rms(q, k).mean(-1))  # [n_pieces, n_pieces]: mean over the batch
    return {"diff": max(head_diff), "scale": max(head_scale), "head_diff": head_diff, "head_scale": head_scale,
            "group_rms": torch.stack(groups).numpy(), "term_rms": torch.stack(terms_rms).numpy(), "pieces": names}


def k_composition_head(group_rms) -> int:
    """The layer-1 head whose K-composition group has the largest share of its four groups' sizes."""
    share = torch.as_tensor(group_rms) / torch.as_tensor(group_rms).sum(1, keepdim=True)
    return int(share[:, COMPOSITION_GROUPS.index("K-composition")].argmax())


def k_composition_writer(term_rms, pieces: list[str], head: int) -> int:
    """The layer-0 head h1 whose K-composition term (query piece "token", key piece "0.h1") is the largest of
    layer-1 head ``head``'s: the head whose writes its keys read most."""
    row = torch.as_tensor(term_rms)[head, pieces.index(TOKEN)]
    written = [i for i, name in enumerate(pieces) if name.startswith("0.")]
    return int(pieces[written[int(row[written].argmax())]].split(".")[1])


def find_repeat(tokens, is_word, length: int = EXAMPLE_LENGTH, gap: int = EXAMPLE_GAP) -> tuple[int, int, int] | None:
    """The first (window b, position i, earlier position k), in reading order, where the ``length`` tokens
    ``tokens[b, i - length + 2 : i + 2]`` (those before i, i itself and the next) already occurred ending at
    k + 1, with i - k >= ``gap``, ``is_word(tokens[b, i])`` true; k is the latest such earlier position.
    None if there is none."""
    before = length - 2
    for b, row in enumerate(torch.as_tensor(tokens).tolist()):
        last: dict[tuple, int] = {}
        for i in range(before, len(row) - 1):
            key = tuple(row[i - before:i + 2])
            k = last.get(key)
            if k is not None and i - k >= gap and is_word(row[i]):
                return b, i, k
            last[key] = i
    return None


def k_composition_example(book) -> dict:
    """Where to watch K-composition at work: ``find_repeat`` in the chapter's validation windows, then in more
    (``EXAMPLE_SEARCH``), else in Olsson et al.'s repeated random tokens (whose second half repeats the first).
    Returns the window's tokens, the destination i, the earlier copy k (its next token, at k + 1, is what the
    repeat predicts) and which text it came from."""
    words: dict[int, bool] = {}

    def is_word(t: int) -> bool:
        if t not in words:
            words[t] = book.decode(t).strip().isalpha()
        return words[t]

    for n in EXAMPLE_SEARCH:
        windows = book.windows(n)[:, :-1]
        found = find_repeat(windows, is_word)
        if found:
            b, i, k = found
            return {"tokens": windows[b].tolist(), "dst": i, "earlier": k, "text": "held-out text"}
    seq = book.repeated()[0]
    found = find_repeat(seq[None], lambda t: True)
    b, i, k = found if found else (0, len(seq) - 2, (len(seq) - 2) // 2)
    return {"tokens": seq.tolist(), "dst": i, "earlier": k, "text": "repeated random tokens"}


def _compute(book) -> dict:
    model1, model2 = book.model(1), book.model(2)
    tokens = tokens_of(book)
    prefix = prefix_matching_scores(model2, book.repeated())  # [n_layers, n_heads]
    qk = qk_checks(model2, tokens)
    head = k_composition_head(qk["group_rms"])
    return {"rotation": rotation_checks(model2, tokens), "additivity": additivity_checks(model2, tokens),
            "virtual": virtual_weight_checks(model2, tokens), "paths": path_checks(model1, model2, tokens),
            **{f"qk_{k}": v for k, v in qk.items()},
            "k_head": head, "k_writer": k_composition_writer(qk["term_rms"], qk["pieces"], head),
            "example": k_composition_example(book),
            "induction_heads": [h for l, h in induction_heads(prefix) if l == 1],
            "previous_token_heads": [h for _, h in previous_token_heads(previous_token_scores(model2, tokens))],
            "n_tokens": int(tokens.numel())}


def results(book) -> dict:
    """Every check of the chapter on ``N_WINDOWS`` validation windows, with the two-layer model's previous-token
    heads (on those windows) and induction heads (on Olsson et al.'s repeated random tokens) by the rules of
    ``metrics.heads``, the layer-1 head that leans most on K-composition (``k_head``), the layer-0 head whose
    writes its keys read most (``k_writer``) and the worked example's place (``example``); computed once per
    build."""
    return book.cache("framework-checks", (1, 2), lambda: _compute(book))


def exact(diff: float, scale: float) -> bool:
    """The verdict's rule: an identity holds up to float32 rounding when ``diff / scale <= EXACT``."""
    return diff <= EXACT * max(scale, 1e-30)


def qk_exact(r: dict) -> bool:
    """The score expansion holds for every layer-1 head, each measured against its own largest score (heads'
    scores differ in size by more than an order of magnitude)."""
    return all(exact(d, s) for d, s in zip(r["qk_head_diff"], r["qk_head_scale"]))


def findings_rows(book) -> list[dict]:
    r = results(book)
    rot, add, virt, paths = r["rotation"], r["additivity"], r["virtual"], r["paths"]
    ratio = lambda d, s: f"{d:.1e} (values up to {s:.1f})"  # noqa: E731
    within = f"agree to within {EXACT:.0e} of the largest value compared (float32 rounding)"
    worst = max(range(len(r["qk_head_diff"])), key=lambda h: r["qk_head_diff"][h] / max(r["qk_head_scale"][h], 1e-30))
    worst_abs = max(range(len(r["qk_head_diff"])), key=lambda h: r["qk_head_diff"][h])  # the identity table's row
    return [
        {"claim": "The residual stream has no privileged basis: rotating it changes nothing the model computes",
         "paper": "an attention-only residual stream has no privileged basis (section The Residual Stream)",
         "ours": (f"random rotation: largest logit change {ratio(rot['logit_diff'], rot['logit_scale'])}; "
                  f"with a ReLU on every coordinate before the unembedding the same rotation changes the logits by "
                  f"{rot['relu_diff']:.2f}"),
         "verdict": verdict(exact(rot["logit_diff"], rot["logit_scale"])
                             and not exact(rot["relu_diff"], rot["logit_scale"])),
         "rule": (f"reproduced if a random rotation changes the logits by less than {EXACT:.0e} of their size while, "
                  "with a per-coordinate ReLU inserted, it changes them by more; otherwise not reproduced"),
         "section": "01_framework#framework-residual-stream"},
        {"claim": "Attention heads are independent and additive: each layer adds the sum of its heads' outputs to "
                  "the residual stream",
         "paper": "exact, by splitting W_O into per-head blocks (section Attention Heads are Independent and Additive)",
         "ours": (f"concatenated heads times one output matrix against the sum of per-head writes "
                  f"{ratio(add['concat_vs_sum'], add['scale'])}; stream before plus that sum against the stream "
                  f"after {add['residual']:.1e}"),
         "verdict": verdict(exact(max(add["concat_vs_sum"], add["sum_vs_layer"], add["residual"]), add["scale"])),
         "rule": f"reproduced if, in both layers, both forms and the residual update {within}; otherwise not "
                 "reproduced",
         "section": "01_framework#framework-heads"},
        {"claim": "A layer-1 head reads each layer-0 head through a virtual weight, the product of its own input "
                  "matrix and that head's output matrix",
         "paper": "exact (section Virtual Weights and the Residual Stream as a Communication Channel)",
         "ours": ("value inputs of all layer-1 heads rebuilt from the embedding and the virtual weights: "
                  + ratio(virt["diff"], virt["scale"])),
         "verdict": verdict(exact(virt["diff"], virt["scale"])),
         "rule": f"reproduced if the rebuilt and the model's value inputs {within}; otherwise not reproduced",
         "section": "01_framework#framework-virtual-weights"},
        {"claim": "The path expansion of the logits is exact: direct path, one term per head, virtual heads",
         "paper": "exact with the patterns held fixed; the paper's models fold LayerNorm in, ours have none",
         "ours": (f"one layer {ratio(paths['one_diff'], paths['one_scale'])}; "
                  f"two layers {ratio(paths['two_diff'], paths['two_scale'])}"),
         "verdict": verdict(exact(paths["one_diff"], paths["one_scale"])
                             and exact(paths["two_diff"], paths["two_scale"])),
         "rule": f"reproduced if both expansions and the model's logits {within}; otherwise not reproduced",
         "section": "01_framework#framework-path-expansion"},
        {"claim": "A layer-1 attention score splits into direct, Q-, K- and Q-and-K-composition terms",
         "paper": "exact (section Two-Layer Attention-Only Transformers, the QK circuit)",
         "ours": (f"all layer-1 heads' scores rebuilt from the four groups of terms: relative to each head's largest "
                  f"score at worst (head 1.{worst}) " + ratio(r["qk_head_diff"][worst], r["qk_head_scale"][worst])
                  + f"; in absolute terms at worst (head 1.{worst_abs}) "
                  + ratio(r["qk_head_diff"][worst_abs], r["qk_head_scale"][worst_abs])),
         "verdict": verdict(qk_exact(r)),
         "rule": (f"reproduced if, for every layer-1 head, the sum of the four groups and the head's scores agree to "
                  f"within {EXACT:.0e} of that head's largest score; otherwise not reproduced"),
         "section": "01_framework#framework-qk-expansion"},
    ]
