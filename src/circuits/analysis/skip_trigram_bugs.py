"""Skip-trigram bugs (paper "One-Layer Attention-Only Transformers", "Skip-Trigram 'Bugs'").

Because a head's OV and QK circuits factor, a head that raises ``s … d1 → o1`` and ``s … d2 → o2``
also raises the crossed ``s … d1 → o2`` (the paper's ``keep … in bay``). ``find_skip_trigram_bugs``
looks for such pairs among each head's strongest skip-trigrams (``skip_trigrams``) using corpus
counts (``skip_trigram_counts``, ``BigramCounts``, ``crossed_pairs``), and ``skip_trigram_effect``
measures what the model actually does with them by running it on real text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .factored import FactoredMatrix
from circuits.model.transformer import AttnOnlyTransformer
from .skip_trigrams import strongest_sources


# ---- measuring skip-trigrams by running the model ---------------------------------------------------

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
def next_token_logprobs(model: AttnOnlyTransformer, sequences: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """log P(next token | sequence) at the last position of each sequence [batch, pos] -> [batch, d_vocab].

    The model's own blocks run over every position; only the last position is unembedded (the unembedding
    is most of a small model's work, and the other positions' logits are not needed).
    """
    sequences = torch.as_tensor(sequences, dtype=torch.long)
    out = []
    for i in range(0, len(sequences), batch_size):
        tokens = model.check_tokens(sequences[i:i + batch_size])
        x, pos = model.embed(tokens), model.pos_embed(tokens.shape[1])  # [b, pos, d_model], [pos, d_model]
        for block in model.blocks:
            x = block(x, pos)  # x_{l+1} = x_l + Σ_h h(x_l), as in the model's forward
        out.append(model.unembed(x[:, -1]).float().log_softmax(-1))  # [b, d_vocab]
    return torch.cat(out)


@torch.no_grad()
def skip_trigram_effect(model: AttnOnlyTransformer, prefixes: np.ndarray, gaps: np.ndarray, source: int,
                        controls: Sequence[int], targets: Sequence[int], dest: int | None = None) -> pd.DataFrame:
    """Measured effect of a source token on later predictions, on real text.

    For each context (a real prefix and the real gap after it) the model reads
    ``prefix + [source] + gap (+ [dest])`` and, as controls, the same with ``source`` replaced by each
    token of ``controls``. At the last position (``dest``, or the gap's last token when ``dest`` is
    None) it compares log P(target). Returns one row per target: mean probability with the source
    and with the controls, and the mean log-probability difference (nats; > 0: the source raises it),
    averaged over contexts (controls averaged within each context first).
    """
    prefixes, gaps = np.asarray(prefixes, dtype=np.int64), np.asarray(gaps, dtype=np.int64)
    n = len(prefixes)
    tail = [] if dest is None else [dest]
    firsts = [source, *controls]
    seqs = np.stack([np.concatenate([prefixes[i], [f], gaps[i], tail]) for f in firsts for i in range(n)])
    lp = next_token_logprobs(model, torch.as_tensor(seqs))  # [(1 + n_controls) * n, d_vocab]
    lp = lp[:, torch.as_tensor(list(targets))].view(len(firsts), n, len(targets))  # [first, context, target]
    with_source, with_control = lp[0], lp[1:]
    diff = with_source - with_control.mean(0)  # [context, target]
    return pd.DataFrame({"target": list(targets),
                         "P with source": with_source.exp().mean(0).numpy(),
                         "P with control": with_control.exp().mean((0, 1)).numpy(),
                         "log-prob change (nats)": diff.mean(0).numpy(),
                         "contexts raised": (diff > 0).float().mean(0).numpy()})


# ---- corpus statistics for skip-trigram bugs ------------------------------------------------------

class BigramCounts:
    """Sparse counts of (current, next) token pairs of a stream, for looking up P(next | current)."""

    def __init__(self, tokens: np.ndarray, d_vocab: int):
        stream = np.asarray(tokens, dtype=np.int64)
        self.d_vocab = d_vocab
        self.keys, self.pair_counts = np.unique(stream[:-1] * d_vocab + stream[1:], return_counts=True)
        self.unigram = np.bincount(stream[:-1], minlength=d_vocab)  # how often each token has a successor

    def count(self, current, nxt) -> np.ndarray:
        """Counts of the pairs (current, next) (broadcasting arrays of ids)."""
        key = np.asarray(current, dtype=np.int64) * self.d_vocab + np.asarray(nxt, dtype=np.int64)
        at = np.searchsorted(self.keys, key).clip(max=len(self.keys) - 1)
        return np.where(self.keys[at] == key, self.pair_counts[at], 0)

    def prob(self, current, nxt) -> np.ndarray:
        """P(next | current) estimated by counting (0 where current never occurs)."""
        c = self.count(current, nxt)
        total = self.unigram[np.asarray(current, dtype=np.int64)]
        return np.divide(c, total, out=np.zeros(np.shape(c)), where=total > 0)


def crossed_pairs(p: np.ndarray, counts: np.ndarray, base: np.ndarray | None = None, min_p: float = 0.02,
                  max_ratio: float = 0.1, min_count: int = 10,
                  min_lift: float = 2.0) -> list[tuple[int, int, int, int, float]]:
    """Skip-trigram-bug candidates from a table ``p[d, o]`` = P(o | source … d) over a source's
    destinations and outputs (``counts[d, o]`` the counts behind it; ``base[d, o]`` = P(o | d), the
    plain bigram probability).

    A candidate ``(d1, o1, d2, o2, score)`` (indices into the table) has two "intended" skip-trigrams
    ``p[d1, o1], p[d2, o2] >= min_p``, each seen at least ``min_count`` times and, with ``base``, at
    least ``min_lift`` times likelier than without the source (the source matters, not only the
    bigram); and both crossed ones rare relative to them: ``p[d1, o2] <= max_ratio p[d2, o2]`` and
    ``p[d2, o1] <= max_ratio p[d1, o1]``; d1 != d2, o1 != o2. Score ``min(p[d1, o1], p[d2, o2])``.
    Sorted by score, best first; each unordered pair of pairs appears once.
    """
    p = np.asarray(p, dtype=np.float64)
    ok = (p >= min_p) & (np.asarray(counts) >= min_count)  # [D, O] intended candidates
    if base is not None:
        ok &= p >= min_lift * np.asarray(base, dtype=np.float64)
    d_idx, o_idx = np.nonzero(ok)
    found = []
    for a in range(len(d_idx)):
        for b in range(a + 1, len(d_idx)):
            d1, o1, d2, o2 = d_idx[a], o_idx[a], d_idx[b], o_idx[b]
            if d1 == d2 or o1 == o2:
                continue
            if p[d1, o2] <= max_ratio * p[d2, o2] and p[d2, o1] <= max_ratio * p[d1, o1]:
                found.append((int(d1), int(o1), int(d2), int(o2), float(min(p[d1, o1], p[d2, o2]))))
    return sorted(found, key=lambda c: -c[4])


def positions_after(tokens: np.ndarray, source: int, window: int, sparse: bool | None = None) -> np.ndarray:
    """Sorted positions i < len - 1 (those with a successor) that have ``source`` among the ``window``
    tokens before them, ``tokens[i - window : i]``.

    Two equivalent methods: ``sparse`` enumerates the windows after each occurrence and sorts them (fast
    for rare sources); otherwise a mask over the stream marks the ``window`` positions after every
    occurrence, one shifted write per offset (no sort). ``None`` picks by the number of occurrences.
    """
    stream = np.asarray(tokens)
    N = len(stream)
    at = np.nonzero(stream == source)[0]
    if sparse is None:
        sparse = len(at) * window < N // 64
    if sparse:
        pos = (at[:, None] + np.arange(1, window + 1)).ravel()
        return np.unique(pos[pos < N - 1])
    covered = np.zeros(N, dtype=bool)
    for k in range(1, window + 1):
        covered[at[at + k < N - 1] + k] = True
    return np.nonzero(covered)[0]


def skip_trigram_counts(tokens: np.ndarray, source: int, dests: Sequence[int], outs: Sequence[int],
                        window: int, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corpus counts of skip-trigrams ``source … d → o``: ``source`` among the ``window`` tokens
    before d, and o the token right after d.

    Returns ``(n_dest [D], n_pair [D, O])``: how often each d of ``dests`` occurs (with a successor)
    within ``window`` tokens after ``source``, and how often it is then followed by each o of ``outs``.
    Each position counts once, however many copies of ``source`` precede it. ``positions``: the
    result of ``positions_after(tokens, source, window)``, if already computed.
    """
    stream = np.asarray(tokens)
    pos = positions_after(stream, source, window) if positions is None else positions
    size = int(max(stream.max(), max(dests), max(outs))) + 1
    d_index = np.full(size, -1, dtype=np.int64)
    d_index[np.asarray(dests, dtype=np.int64)] = np.arange(len(dests))
    o_index = np.full(size, -1, dtype=np.int64)
    o_index[np.asarray(outs, dtype=np.int64)] = np.arange(len(outs))
    di = d_index[stream[pos]]
    pos, di = pos[di >= 0], di[di >= 0]
    n_dest = np.bincount(di, minlength=len(dests))
    oi = o_index[stream[pos + 1]]
    keep = oi >= 0
    n_pair = np.bincount(di[keep] * len(outs) + oi[keep], minlength=len(dests) * len(outs))
    return n_dest, n_pair.reshape(len(dests), len(outs))


@torch.no_grad()
def find_skip_trigram_bugs(ov: FactoredMatrix, qk: FactoredMatrix, allowed: torch.Tensor, tokens: np.ndarray,
                           bigrams: BigramCounts, window: int = 32, n_sources: int = 20, n_dest: int = 40,
                           n_out: int = 10, **pair_kwargs) -> pd.DataFrame:
    """Candidate skip-trigram bugs of every head, found automatically from the circuits and the corpus.

    For each head's ``n_sources`` strongest sources s (``strongest_sources``): its ``n_out`` top OV
    outputs and ``n_dest`` top destinations by ``qk`` (among ``allowed``); the corpus table
    P(o | s … d) over them (``skip_trigram_counts``, s within ``window`` tokens before d); and the best
    ``crossed_pairs`` candidate: in the corpus s raises ``s … d1 → o1`` and ``s … d2 → o2``, and the
    head, whose OV circuit raises o1 and o2 and whose QK circuit attends from d1 and d2 to s, does
    too, but then it also raises the crossed ``s … d1 → o2``, which the corpus says is rare.
    Returns one row per source with a candidate (ids and corpus probabilities), best score first.
    """
    sources, _ = strongest_sources(ov, allowed, n_sources)
    rows, positions = [], {}
    for h in range(sources.shape[0]):
        # every source's column at once (one block per circuit): top outputs and top destinations, [k, n_sources]
        outs = allowed[ov[h].block(allowed, sources[h]).topk(min(n_out, len(allowed)), dim=0).indices]
        dests = allowed[qk[h].block(allowed, sources[h]).topk(min(n_dest, len(allowed)), dim=0).indices]
        for j, s in enumerate(sources[h].tolist()):
            o, d = outs[:, j].numpy(), dests[:, j].numpy()
            if s not in positions:  # a source strong in several heads is looked up once
                positions[s] = positions_after(tokens, s, window)
            n_dest_s, n_pair = skip_trigram_counts(tokens, s, d, o, window, positions[s])
            p = np.divide(n_pair, n_dest_s[:, None], out=np.zeros(n_pair.shape), where=n_dest_s[:, None] > 0)
            base = bigrams.prob(d[:, None], o[None, :])
            found = crossed_pairs(p, n_pair, base, **pair_kwargs)
            if found:
                i1, j1, i2, j2, score = found[0]
                rows.append({"head": h, "source": s, "d1": int(d[i1]), "o1": int(o[j1]), "d2": int(d[i2]),
                             "o2": int(o[j2]), "P(o1|s…d1)": p[i1, j1], "P(o2|s…d2)": p[i2, j2],
                             "P(o2|s…d1)": p[i1, j2], "P(o1|s…d2)": p[i2, j1], "P(o2|d1)": base[i1, j2],
                             "n s…d1": int(n_dest_s[i1]), "score": score})
    frame = pd.DataFrame(rows)
    return frame.sort_values("score", ascending=False, ignore_index=True) if len(frame) else frame
