"""Skip-trigram bugs (paper "One-Layer Attention-Only Transformers", "Skip-Trigram 'Bugs'").

Because a head's OV and QK circuits factor, a head that raises ``s … d1 → o1`` and ``s … d2 → o2``
also raises the crossed ``s … d1 → o2`` (the paper's ``keep … in bay``). ``find_skip_trigram_bugs``
looks for such pairs among each head's strongest skip-trigrams (``skip_trigrams``) using corpus
counts (``skip_trigram_counts``, ``BigramCounts``, ``crossed_pairs``); what the model actually does with
them is measured by running it on real text (``skip_trigram_effect``). ``phrase_counts`` counts a
skip-trigram whose parts may be several tokens each, for the paper's named examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .factored import FactoredMatrix
from .skip_trigrams import strongest_sources


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


def sequence_starts(tokens: np.ndarray, seq: Sequence[int]) -> np.ndarray:
    """Sorted positions i where ``tokens[i : i + len(seq)]`` equals ``seq`` (one pass for its first token,
    the rest checked at those positions only)."""
    stream = np.asarray(tokens)
    seq = [int(t) for t in seq]
    at = np.flatnonzero(stream[:len(stream) - len(seq) + 1] == seq[0]) if seq else np.zeros(0, dtype=np.int64)
    for j, t in enumerate(seq[1:], 1):
        at = at[stream[at + j] == t]
    return at


def phrase_counts(tokens: np.ndarray, source: Sequence[int], dest: Sequence[int], out: Sequence[int],
                  window: int, adjacent: bool = False) -> dict[str, int]:
    """Corpus counts of a skip-trigram ``source … dest → out`` whose parts are token sequences (a word this
    tokenizer splits is counted as its pieces): ``dest`` then ``out`` right after it, with ``source`` ending
    among the ``window`` tokens before ``dest`` starts (``adjacent``: right before it).

    Returns ``source … dest`` (occurrences of ``dest`` after ``source``), ``source … dest → out``, and, for
    comparison without the source, ``dest`` and ``dest → out``.
    """
    stream = np.asarray(tokens)
    d = sequence_starts(stream[:len(stream) - 1], dest)  # dest with a token after it
    follows = np.zeros(len(d), dtype=bool)
    ends = d + len(dest)
    room = ends + len(out) <= len(stream)
    follows[room] = np.all([stream[ends[room] + j] == t for j, t in enumerate(out)], axis=0) if len(out) else True
    s_end = sequence_starts(stream, source) + len(source) - 1  # where each occurrence of source ends, sorted
    lo = d - (1 if adjacent else window)
    i = np.searchsorted(s_end, lo)
    after = (i < len(s_end)) & (s_end[np.minimum(i, max(len(s_end) - 1, 0))] <= d - 1) if len(s_end) else \
        np.zeros(len(d), dtype=bool)
    return {"source … dest": int(after.sum()), "source … dest → out": int((after & follows).sum()),
            "dest": len(d), "dest → out": int(follows.sum())}


@torch.no_grad()
def find_skip_trigram_bugs(ov: FactoredMatrix, qk: FactoredMatrix, allowed: torch.Tensor, tokens: np.ndarray,
                           bigrams: BigramCounts, window: int = 32, n_sources: int = 20, n_dest: int = 40,
                           n_out: int = 10, sources: torch.Tensor | None = None, **pair_kwargs) -> pd.DataFrame:
    """Candidate skip-trigram bugs of every head, found automatically from the circuits and the corpus.

    For each head's ``n_sources`` strongest sources s (``strongest_sources``): its ``n_out`` top OV
    outputs and ``n_dest`` top destinations by ``qk`` (among ``allowed``); the corpus table
    P(o | s … d) over them (``skip_trigram_counts``, s within ``window`` tokens before d); and the best
    ``crossed_pairs`` candidate: in the corpus s raises ``s … d1 → o1`` and ``s … d2 → o2``, and the
    head, whose OV circuit raises o1 and o2 and whose QK circuit attends from d1 and d2 to s, does
    too, but then it also raises the crossed ``s … d1 → o2``, which the corpus says is rare.
    ``sources`` [n_heads, m]: the strongest sources if already known (their first ``n_sources`` are used).
    Returns one row per source with a candidate (ids and corpus probabilities), best score first.
    """
    sources = strongest_sources(ov, allowed, n_sources)[0] if sources is None else sources[:, :n_sources]
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
                             "n s…d1": int(n_dest_s[i1]), "n s…d1→o2": int(n_pair[i1, j2]),
                             "n s…d2": int(n_dest_s[i2]), "score": score})
    frame = pd.DataFrame(rows)
    return frame.sort_values("score", ascending=False, ignore_index=True) if len(frame) else frame
