"""What heads do to the logits on Olsson et al.'s (2022) inputs, read plainly: beside their copying score, how
often the token a head attends to is the one it raises most, and on a repeated random sequence where the correct
token stands in the model's prediction and what the induction heads' write does to it (direct path through W_U).
"""

from __future__ import annotations

import numpy as np
import torch
from einops import einsum

from circuits.metrics.heads import Head
from circuits.model.transformer import AttnOnlyTransformer


def copying_random_level(n_tokens: int) -> float:
    """Olsson et al.'s copying score of a head whose write is unrelated to the token it attends to: the shares of
    the raise over the ``n_tokens`` tokens of a sample sum to 1 and none is favoured, so the attended token gets
    1 / n_tokens on average, a score of 2 / n_tokens - 1 (-0.92 with 25 tokens)."""
    return 2 / n_tokens - 1


@torch.no_grad()
def copying_detail(model: AttnOnlyTransformer, samples: torch.Tensor) -> dict[str, np.ndarray]:
    """Two plainer readings of what Olsson et al.'s copying score averages, per head [layer, head], over the
    tokens t of ``samples`` [n_samples, n_tokens]: ``own_top``, the share of t whose own logit is the one the head
    raises most among the sample's tokens when it attends to t (direct path: W_E[t] W_V W_O W_U), and
    ``own_rank``, the median rank of t's own logit among every token of the vocabulary (0: the top)."""
    W_E, W_U = model.embed.W_E, model.unembed.W_U
    top = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    rank = np.zeros_like(top)
    n = samples.shape[1]
    for layer, block in enumerate(model.blocks):
        attn, tops, ranks = block.attn, [], []
        for sample in samples:
            written = einsum(W_E[sample], attn.W_V, attn.W_O, "t d, h d e, h e f -> h t f")
            logits = written @ W_U  # [head, t, vocab]: the head's direct effect on every logit, attending to t
            own = logits[:, torch.arange(n), sample]  # [head, t]
            tops.append(logits[:, :, sample].argmax(-1) == torch.arange(n))
            ranks.append((logits > own[..., None]).sum(-1))
        top[layer] = torch.cat(tops, 1).float().mean(1).numpy()
        rank[layer] = torch.cat(ranks, 1).float().median(1).values.numpy()
    return {"own_top": top, "own_rank": rank}


@torch.no_grad()
def repeat_detail(model: AttnOnlyTransformer, repeats: torch.Tensor, heads: list[Head]) -> dict[str, float]:
    """On ``repeat_sequences``: where the correct next token stands in the model's prediction on the first copy
    and on the repeat (its median rank, 0 the top; its median probability; the share of predictions with it in
    the top 10), and on the repeat what ``heads`` (of the last layer) do to it through the direct path: the share
    of predictions where it is the token their output raises most, by how much they raise its logit above the
    mean logit (median, nats), and how far below the model's top logit it would stand without them (median)."""
    n = (repeats.shape[1] - 1) // 2
    logits, cache = model.run_with_cache(repeats[:, :-1])  # [sample, position, vocab]
    target = repeats[:, 1:, None]
    own = logits.log_softmax(-1).gather(-1, target)[..., 0]  # log-probability of the correct token
    rank = (logits > logits.gather(-1, target)).sum(-1).float()
    first, repeat = slice(0, n), slice(n + 1, 2 * n)
    last = model.cfg.n_layers - 1
    write = cache[f"blocks.{last}.attn.hook_result"][:, :, [h for _, h in heads]].sum(2) @ model.unembed.W_U
    raised = write.gather(-1, target)[..., 0] - write.mean(-1)
    without = logits - write
    gap = without.max(-1).values - without.gather(-1, target)[..., 0]
    med = lambda x: float(x.median())
    return {"rank_first": med(rank[:, first]), "rank_repeat": med(rank[:, repeat]),
            "prob_first": med(own[:, first].exp()), "prob_repeat": med(own[:, repeat].exp()),
            "top10_repeat": float((rank[:, repeat] < 10).float().mean()),
            "heads_top": float((write.argmax(-1) == target[..., 0])[:, repeat].float().mean()),
            "heads_raise": med(raised[:, repeat]), "gap_without": med(gap[:, repeat])}
