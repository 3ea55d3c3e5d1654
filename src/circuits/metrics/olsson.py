"""Olsson et al.'s (2022) measurements of attention heads and of in-context learning.

Per-head scores are tensors [n_layers, n_heads]: the previous-token score and the prefix-matching score read
the attention patterns (``AttnOnlyTransformer.run_with_cache``), the copying score reads the weights. The
in-context-learning score compares the loss late and early in the context.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import einsum

from circuits.model.transformer import AttnOnlyTransformer


def stacked_patterns(cache: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """Attention patterns of every layer, [layer, batch, head, dst, src]."""
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(n_layers)])


@torch.no_grad()
def previous_token_scores(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Mean attention from each token to the one before it on real text:  mean_i A[i, i-1].

    tokens [batch, pos] of natural text; returns [n_layers, n_heads].
    """
    _, cache = model.run_with_cache(tokens)
    pats = stacked_patterns(cache, model.cfg.n_layers)
    prev = pats.diagonal(offset=-1, dim1=-2, dim2=-1)  # [layer, batch, head, pos-1]
    return prev.mean(dim=(1, 3))


def repeated_random_tokens(token_counts: np.ndarray, n_samples: int = 10, seq_len: int = 25,
                           repeats: int = 4, bos: int = 0, seed: int = 0, n_ctx: int | None = None) -> torch.Tensor:
    """Olsson et al.'s prefix-matching input: [bos] + r * repeats, r = seq_len random tokens.

    Tokens are drawn uniformly from those of middling frequency: the most common 1 % and the
    rarest tokens (seen fewer than 10 times, or in the least common half) are excluded. With
    ``n_ctx``, ``seq_len`` shrinks so that all repeats fit a model's context.
    Returns [n_samples, 1 + seq_len * repeats].
    """
    if n_ctx is not None:
        seq_len = min(seq_len, (n_ctx - 1) // repeats)
    order = np.argsort(-token_counts, kind="stable")
    seen = order[token_counts[order] >= 10]
    lo, hi = max(1, len(seen) // 100), max(2, len(seen) // 2)
    pool = seen[lo:hi]
    pool = pool[pool != bos]
    if len(pool) < seq_len:
        raise ValueError(f"only {len(pool)} tokens of middling frequency; need at least {seq_len}")
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([[bos], np.tile(rng.choice(pool, seq_len, replace=False), repeats)])
            for _ in range(n_samples)]
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """Mask [batch, dst, src]: src follows an earlier occurrence of the token at dst.

    M[b, i, j] = 1 iff j >= 1, j <= i and tokens[b, j-1] == tokens[b, i] (with j-1 < i).
    """
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, i, k]: token k equals token i
    n = tokens.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)  # k < i
    prev_match = same & earlier
    mask = torch.zeros_like(prev_match)
    mask[:, :, 1:] = prev_match[:, :, :-1]  # src j = k + 1
    return mask


@torch.no_grad()
def prefix_matching_scores(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Olsson et al.'s prefix-matching score on repeated random tokens, [n_layers, n_heads].

    score = mean over destinations with an earlier occurrence of  sum_{src in targets} A[dst, src]
    """
    _, cache = model.run_with_cache(tokens)
    pats = stacked_patterns(cache, model.cfg.n_layers)  # [L, b, h, i, j]
    mask = induction_targets(tokens).to(pats.dtype)  # [b, i, j]
    mass = (pats * mask[None, :, None]).sum(-1)  # [L, b, h, i]
    has_target = mask.sum(-1) > 0  # [b, i]
    weights = has_target.to(pats.dtype)[None, :, None]
    return (mass * weights).sum(dim=(1, 3)) / weights.sum(dim=(1, 3))


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """Olsson et al.'s positions (token 50 and token 500), scaled down for short contexts."""
    late = min(500, n_ctx - 1)
    return max(1, late // 10), late


ICL_BAND = 5  # positions either side of each ICL position that are averaged (single positions are noisy)
# validation windows for a stable ICL score: at 256 tokens its standard error is ~0.05 nats with 1,024
# windows, as large as the whole effect with 128
ICL_WINDOWS = 1024


@torch.no_grad()
def in_context_learning_score(per_token_loss: torch.Tensor) -> float:
    """Mean loss around the late position minus mean loss around the early one (negative = the
    model predicts better with more context). Olsson et al. use tokens 500 and 50 of 8192-token
    contexts; we scale to the context (``icl_positions``) and average a band of +-ICL_BAND positions.

    per_token_loss [batch, pos] from ``losses.per_token_loss`` on natural text.
    """
    n = per_token_loss.shape[1]
    early, late = icl_positions(n + 1)
    late = min(late, n - 1 - ICL_BAND)
    band = lambda c: per_token_loss[:, max(0, c - ICL_BAND): c + ICL_BAND + 1].mean()
    return float(band(late) - band(early))


@torch.no_grad()
def copying_scores(model: AttnOnlyTransformer, samples: torch.Tensor) -> torch.Tensor:
    """Olsson et al.'s copying score of every head, [n_layers, n_heads], averaged over ``samples``
    [n_samples, n_tokens] of distinct random tokens (their evaluator: 10 samples of 25 tokens of middling
    frequency, ``random_token_samples``).

    For a head h and a sample S, the head attending to a token t of S writes W_E[t] W_V^h W_O^h into the
    residual stream; mapped through the unembedding alone (the direct path) that raises or lowers the logit
    of every token. Over the logits of the sample's tokens v in S (our reading of "all the tokens in this
    sample"):

        ℓ_t[v] = W_E[t] W_V^h W_O^h W_U[:, v]              the head's effect on v's logit, attending to t
        b_t[v] = ReLU(ℓ_t[v] - mean_{v' in S} ℓ_t[v'])      only the raised logits count
        r_t    = b_t[t] / Σ_{v in S} b_t[v]                 the share of the raise that goes to t itself
        score  = 2 · mean_{t in S, samples} r_t - 1         r in [0, 1] mapped to [-1, 1]

    +1: the head raises only the token it attends to; -1: never that token. A head whose write is unrelated to
    the token it attends to gives that token, on average, 1 / |S| of the raise (the shares sum to 1 over S and
    none is favoured): it scores 2 / |S| - 1, -0.92 with 25 tokens. Olsson et al. state the
    ratio's range as [0, 0.5], which does not follow from this description; we keep r in [0, 1] and map it
    linearly. (Normalising over the whole vocabulary instead sends every head to about -1.)
    """
    samples = torch.as_tensor(samples, dtype=torch.long)
    W_E, W_U = model.embed.W_E, model.unembed.W_U
    out = torch.empty(model.cfg.n_layers, model.cfg.n_heads)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        ratios = []
        for sample in samples:
            written = einsum(W_E[sample], attn.W_V, attn.W_O,
                             "src d_model, head d_model d_head, head d_head d_out -> head src d_out")
            logits = written @ W_U[:, sample]  # [head, src t, sample token v]
            raised = (logits - logits.mean(-1, keepdim=True)).relu()
            own = raised.diagonal(dim1=-2, dim2=-1)  # b_t[t]
            ratios.append(own / raised.sum(-1).clamp_min(torch.finfo(raised.dtype).tiny))  # [head, src]
        out[layer] = 2 * torch.stack(ratios).mean(dim=(0, 2)) - 1
    return out


def random_token_samples(token_counts: np.ndarray, n_samples: int = 10, n_tokens: int = 25, seed: int = 0
                         ) -> torch.Tensor:
    """Olsson et al.'s random samples: ``n_samples`` rows of ``n_tokens`` distinct tokens of middling frequency
    (the pool of ``repeated_random_tokens``: no start token, no repeats), [n_samples, n_tokens]."""
    return repeated_random_tokens(token_counts, n_samples, n_tokens, repeats=1, bos=-1, seed=seed)[:, 1:]
