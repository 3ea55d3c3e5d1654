"""Measuring a skip-trigram by running the model on real text (paper "One-Layer Attention-Only Transformers",
"Interpretation as skip-trigrams" and "Skip-Trigram 'Bugs'").

The circuits say which skip-trigrams ``source … dest → out`` a head could implement; ``skip_trigram_effect`` asks
the model: put ``source`` into real contexts (``text_contexts``) and compare log P(out) at ``dest`` with control
words in its place. For a one-layer model the residual stream at the last position is split exactly into the
direct path and each head's output (``last_position_terms``, the path expansion of eq. (1) of ``skip_trigrams``
at one position), so the rise of the output's logit splits over the heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from einops import einsum

from circuits.model.transformer import AttnOnlyTransformer


def text_contexts(tokens: np.ndarray, n: int, prefix_len: int, gap_len: int, seed: int = 0,
                  avoid: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random stretches of real text: prefixes [n, prefix_len] and the gaps that follow them
    [n, gap_len]. Stretches containing a token of ``avoid`` (e.g. the source under test) are skipped."""
    stream = np.asarray(tokens)
    rng = np.random.default_rng(seed)
    length = prefix_len + gap_len
    avoid = np.asarray(list(avoid), dtype=np.int64)
    out = []
    while len(out) < n:
        start = int(rng.integers(0, len(stream) - length))
        piece = stream[start:start + length].astype(np.int64)
        if avoid.size == 0 or not np.isin(piece, avoid).any():
            out.append(piece)
    pieces = np.stack(out)
    return pieces[:, :prefix_len], pieces[:, prefix_len:]


@torch.no_grad()
def last_position_terms(model: AttnOnlyTransformer, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a one-layer model, the residual stream at the last position of each sequence [batch, pos], split
    into its terms: the direct path ``W_E[x_t]`` [batch, d_model] and each head's output ``h(x)_t``
    [batch, n_heads, d_model] (their sum is what ``W_U`` reads, as in the model's forward).

    Only the last query is formed. Keys depend on (token, position) and values on the token alone, so each
    distinct pair or token is projected once: sequences that differ in one token (a source and its
    controls in the same context) share the rest of the work.
    """
    if model.cfg.n_layers != 1:
        raise ValueError(f"last_position_terms needs a one-layer model, got {model.cfg.n_layers} layers")
    seqs = model.check_tokens(torch.as_tensor(sequences, dtype=torch.long))
    b, n = seqs.shape
    attn, W_E, W_pos = model.blocks[0].attn, model.embed.W_E, model.pos_embed.W_pos[:n]
    H, e = attn.W_K.shape[0], attn.W_K.shape[2]
    flat = lambda W: W.permute(1, 0, 2).reshape(W.shape[1], H * e)  # [head, d_model, d_head] -> [d_model, H e]
    pairs, at = torch.unique(seqs * n + torch.arange(n), return_inverse=True)  # distinct (token, position)
    k = ((W_E[pairs // n] + W_pos[pairs % n]) @ flat(attn.W_K))[at].view(b, n, H, e)
    toks, at_tok = torch.unique(seqs, return_inverse=True)
    v = (W_E[toks] @ flat(attn.W_V))[at_tok].view(b, n, H, e)  # values carry no position
    q = ((W_E[seqs[:, -1]] + W_pos[n - 1]) @ flat(attn.W_Q)).view(b, 1, H, e)  # the last query only
    pattern = ((q * k).sum(-1) / math.sqrt(e)).softmax(1)  # [b, src, H]: every source s <= t, no mask
    z = (pattern[..., None] * v).sum(1)  # [b, H, e]
    return W_E[seqs[:, -1]], torch.bmm(z.transpose(0, 1), attn.W_O).transpose(0, 1)  # [b, d], [b, H, d]


@torch.no_grad()
def next_token_logprobs(model: AttnOnlyTransformer, sequences: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """log P(next token | sequence) at the last position of each sequence [batch, pos] -> [batch, d_vocab].

    The model's own blocks run over every position (a one-layer model: ``last_position_terms``); only the
    last position is unembedded (the unembedding is most of a small model's work, and the other positions'
    logits are not needed).
    """
    sequences = torch.as_tensor(sequences, dtype=torch.long)
    out = []
    for i in range(0, len(sequences), batch_size):
        tokens = model.check_tokens(sequences[i:i + batch_size])
        if model.cfg.n_layers == 1:
            direct, heads = last_position_terms(model, tokens)
            out.append(model.unembed(direct + heads.sum(1)).float().log_softmax(-1))
            continue
        x, pos = model.embed(tokens), model.pos_embed(tokens.shape[1])  # [b, pos, d_model], [pos, d_model]
        for block in model.blocks:
            x = block(x, pos)  # x_{l+1} = x_l + Σ_h h(x_l), as in the model's forward
        out.append(model.unembed(x[:, -1]).float().log_softmax(-1))  # [b, d_vocab]
    return torch.cat(out)


@torch.no_grad()
def skip_trigram_effect(model: AttnOnlyTransformer, prefixes: np.ndarray, gaps: np.ndarray, source: int,
                        controls: Sequence[int], targets: Sequence[int], dest: int | None = None,
                        batch_size: int = 1024) -> pd.DataFrame:
    """Measured effect of a source token on later predictions, on real text.

    For each context (a real prefix and the real gap after it) the model reads
    ``prefix + [source] + gap (+ [dest])`` and, as controls, the same with ``source`` replaced by each
    token of ``controls``. At the last position (``dest``, or the gap's last token when ``dest`` is
    None) it compares log P(target). Returns one row per target: mean probability with the source
    and with the controls; the log-probability difference (nats; > 0: the source raises it) averaged
    over contexts (controls averaged within each context first), its standard error over contexts
    (a paired comparison: each context is its own control) and the share of contexts where it is
    positive. For a one-layer model also ``logit change``, the mean change of the target's logit, and
    ``head logit change``, that change split exactly over the heads (a list, one entry per head: the
    direct path reads the last token only, which the source does not change).
    """
    prefixes, gaps = np.asarray(prefixes, dtype=np.int64), np.asarray(gaps, dtype=np.int64)
    n = len(prefixes)
    tail = [] if dest is None else [dest]
    firsts = [source, *controls]
    seqs = torch.as_tensor(np.stack([np.concatenate([prefixes[i], [f], gaps[i], tail])
                                     for f in firsts for i in range(n)]))
    tgt = torch.as_tensor(list(targets))
    if model.cfg.n_layers == 1:
        parts = [last_position_terms(model, seqs[i:i + batch_size]) for i in range(0, len(seqs), batch_size)]
        direct, heads = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])  # [N, d], [N, H, d]
        lp = model.unembed(direct + heads.sum(1)).float().log_softmax(-1)[:, tgt]
        head_logits = einsum(heads, model.unembed.W_U[:, tgt], "N h d, d t -> N h t").view(len(firsts), n, -1,
                                                                                           len(tgt))
    else:
        lp = next_token_logprobs(model, seqs)[:, tgt]
        head_logits = None
    lp = lp.view(len(firsts), n, len(targets))  # [first, context, target]
    with_source, with_control = lp[0], lp[1:]
    diff = with_source - with_control.mean(0)  # [context, target]
    se = diff.std(0) / math.sqrt(n) if n > 1 else torch.full((len(targets),), float("nan"))
    frame = pd.DataFrame({"target": list(targets),
                          "P with source": with_source.exp().mean(0).numpy(),
                          "P with control": with_control.exp().mean((0, 1)).numpy(),
                          "log-prob change (nats)": diff.mean(0).numpy(),
                          "standard error": se.numpy(),
                          "contexts raised": (diff > 0).float().mean(0).numpy()})
    if head_logits is not None:
        by_head = (head_logits[0] - head_logits[1:].mean(0)).mean(0)  # [H, target]
        frame["logit change"] = by_head.sum(0).numpy()
        frame["head logit change"] = [by_head[:, j].tolist() for j in range(len(targets))]
    return frame
