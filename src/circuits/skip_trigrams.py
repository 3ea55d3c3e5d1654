"""One-layer transformers: skip-trigrams, their bugs, copying and positional heads (paper "One-Layer
Attention-Only Transformers").

A one-layer model's logits at destination t are exactly (paper eq., column vectors)

    T = Id ⊗ W_U W_E  +  Σ_h A^h ⊗ W_U W_OV^h W_E                                          (1)

so every head adds ``A^h[t, s] · OV^h[:, x_s]`` for each earlier source token x_s: a skip-trigram
``[source] … [destination] → [out]`` is a large QK entry ``QK^h[dst, src]`` (the head attends from
dst to src) together with a large OV entry ``OV^h[out, src]`` (attending to src raises out). The
circuits ``ov_circuit`` [heads, out, src] and ``qk_circuit`` [heads, dst, src] are low-rank
``FactoredMatrix`` objects; everything here reads them through row chunks or small blocks, never
as d_vocab² dense matrices.

Because the two circuits factor, a head that raises ``s … d1 → o1`` and ``s … d2 → o2`` also raises
the crossed ``s … d1 → o2`` (the paper's "skip-trigram bugs", ``keep … in bay``):
``crossed_pairs`` finds such pairs from corpus bigram statistics and ``skip_trigram_effect`` measures
them by running the model on real text.

Token subsets: circuits are restricted to tokens seen often in the training split
(``frequent_token_ids``), because the embedding rows of tokens the model never saw stay at their
random initialisation and would fill every top-k list with noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .circuit_tables import topk_per_row
from .circuits import position_scores
from .factored import FactoredMatrix
from .model import AttnOnlyTransformer, loss_fn
from .path_expansion import path_expansion_residual

Decode = Callable[[int], str]


# ---- token subsets -------------------------------------------------------------------------------

def frequent_token_ids(counts: np.ndarray, min_count: int) -> torch.Tensor:
    """Ids of the tokens seen at least ``min_count`` times (``counts`` [d_vocab]), ascending, [n]."""
    return torch.as_tensor(np.nonzero(np.asarray(counts) >= min_count)[0], dtype=torch.long)


def restrict(fm: FactoredMatrix, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> FactoredMatrix:
    """The sub-circuit ``M[..., rows, :][..., :, cols]`` as a FactoredMatrix (the factors are indexed)."""
    A = fm.A if rows is None else fm.A[..., torch.as_tensor(rows), :]
    B = fm.B if cols is None else fm.B[..., :, torch.as_tensor(cols)]
    return FactoredMatrix(A, B)


def centered(fm: FactoredMatrix, dim: int, over: torch.Tensor | None = None) -> FactoredMatrix:
    """``M`` minus the mean of each row (``dim=-1``) or of each column (``dim=-2``), the mean taken over
    the indices ``over`` of that dimension (default all). Still a FactoredMatrix of the same rank:

        rows:     M - (M 1_over / n) 1ᵀ  =  A (B - B̄),   B̄ = mean of B's columns in ``over``
        columns:  M - 1 (1_overᵀ M / n)  =  (A - Ā) B,   Ā = mean of A's rows in ``over``

    A softmax ignores such constants: the QK circuit's scores of one destination (a row) can be
    centred, and the OV circuit's logits of one source (a column), without changing what the head does.
    """
    if dim in (-1, fm.ndim - 1):
        B = fm.B if over is None else fm.B[..., :, torch.as_tensor(over)]
        return FactoredMatrix(fm.A, fm.B - B.mean(-1, keepdim=True))
    if dim in (-2, fm.ndim - 2):
        A = fm.A if over is None else fm.A[..., torch.as_tensor(over), :]
        return FactoredMatrix(fm.A - A.mean(-2, keepdim=True), fm.B)
    raise ValueError(f"dim must be -1 (rows) or -2 (columns), got {dim}")


@torch.no_grad()
def attention_preference(qk: FactoredMatrix, weights: torch.Tensor, chunk_rows: int = 256) -> FactoredMatrix:
    """How much more a destination attends to a source than to a typical token of text, in log units:

        P[d, s] = S[d, s] - log Σ_s' w(s') exp(S[d, s'])

    with ``S = qk`` the scaled token·token scores [..., dst, src] and ``w`` a distribution over
    sources [src] (e.g. unigram frequencies; zero weight leaves a source out of the background).
    ``exp(P[d, s])`` is the attention weight d gives s divided by the mean weight it gives a context
    token drawn from ``w`` (for a long context of such tokens). Positions are ignored. The shift is one number per row,
    so P is a FactoredMatrix of inner dimension k + 1: ``[A, -c] @ [B; 1ᵀ]``.
    Unlike the raw scores, a destination with a long query vector does not top every source's list.
    """
    w = torch.as_tensor(weights, dtype=qk.dtype)
    keep = (w > 0).nonzero().squeeze(1)
    logw = w[keep].log()
    sub = restrict(qk, cols=keep)
    c = torch.cat([torch.logsumexp(sub.rows(slice(i, i + chunk_rows)) + logw, dim=-1)
                   for i in range(0, qk.shape[-2], chunk_rows)], dim=-1)  # [..., m]
    ones = torch.ones(*qk.B.shape[:-2], 1, qk.shape[-1], dtype=qk.dtype)
    return FactoredMatrix(torch.cat([qk.A, -c[..., :, None]], -1), torch.cat([qk.B, ones], -2))


def token_label(decode: Decode, i: int) -> str:
    """A token as the book prints it: its Python repr, so spaces and newlines are visible."""
    return repr(decode(int(i)))


# ---- the path expansion: how much each term matters ------------------------------------------

@torch.no_grad()
def head_term_losses(model: AttnOnlyTransformer, windows: torch.Tensor, batch_size: int = 4) -> dict:
    """Loss (nats) of the direct path alone, of the direct path plus each head alone, and of all terms of eq. (1).

    windows [batch, pos + 1] (inputs ``w[:, :-1]``, targets ``w[:, 1:]``); patterns frozen from the real
    forward pass (``path_expansion_residual``). Returns ``{"direct": float, "heads": tensor [n_heads]
    (direct + head h), "all": float, "model": float}``; "all" equals "model" up to rounding.
    """
    if model.cfg.n_layers != 1:
        raise ValueError(f"head_term_losses is for one-layer models, got {model.cfg.n_layers} layers")
    windows = torch.as_tensor(windows)
    H = model.cfg.n_heads
    sums = torch.zeros(H + 3, dtype=torch.float64)  # direct, heads..., all, model
    count = 0
    W_U = model.unembed.W_U
    for start in range(0, len(windows), batch_size):
        w = windows[start:start + batch_size]
        inputs, targets = w[:, :-1], w[:, 1:]
        logits, cache = model.run_with_cache(inputs)
        terms, paths = path_expansion_residual(model, inputs, cache)  # [1 + H, b, p, d_model]
        assert paths[0] == () and len(paths) == H + 1
        combos = [terms[0]] + [terms[0] + terms[1 + h] for h in range(H)] + [terms.sum(0)]
        for i, resid in enumerate(combos):
            sums[i] += float(loss_fn(resid @ W_U, targets, per_token=True).double().sum())
        sums[-1] += float(loss_fn(logits, targets, per_token=True).double().sum())
        count += targets.numel()
    means = sums / count
    return {"direct": float(means[0]), "heads": means[1:H + 1].float(), "all": float(means[H + 1]),
            "model": float(means[H + 2])}


# ---- skip-trigram tables -----------------------------------------------------------------------

@torch.no_grad()
def column_maxima(fm: FactoredMatrix, chunk_rows: int = 256) -> torch.Tensor:
    """``max_i M[..., i, j]`` for every column j, [..., n] (chunked over columns)."""
    return topk_per_row(fm.T, 1, chunk_rows=chunk_rows)[0][..., 0]


@torch.no_grad()
def strongest_sources(ov: FactoredMatrix, allowed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's ``n`` source tokens with the largest OV entry (the most any output is raised by
    attending to them), outputs and sources both among ``allowed``.

    ov [n_heads, d_vocab(out), d_vocab(src)]. Returns ``(source ids [n_heads, n], max OV entry [n_heads, n])``.
    """
    best = column_maxima(restrict(ov, allowed, allowed))  # [H, n_allowed]
    vals, idx = best.topk(min(n, best.shape[-1]), dim=-1)
    return allowed[idx], vals


@torch.no_grad()
def column_top(fm: FactoredMatrix, col: int, allowed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of column ``col`` among rows ``allowed``: ``(row ids [..., k], values [..., k])``.

    For the OV circuit a source's top outputs; for the QK circuit a source's top destinations.
    """
    column = fm.block(allowed, col)  # [..., n_allowed]
    top = column.topk(min(k, column.shape[-1]), dim=-1)
    return allowed[top.indices], top.values


@torch.no_grad()
def rank_in_column(fm: FactoredMatrix, col: int, row: int, allowed: torch.Tensor) -> torch.Tensor:
    """Rank (1 = largest) of entry ``M[..., row, col]`` among ``M[..., allowed, col]``, [...].

    ``row`` must be in ``allowed``. Ties count in the entry's favour.
    """
    allowed = torch.as_tensor(allowed)
    if not bool((allowed == row).any()):
        raise ValueError(f"row {row} is not among the allowed rows")
    column = fm.block(allowed, col)  # [..., n]
    value = fm.block(row, col)  # [...]
    return 1 + (column > value[..., None]).sum(-1)


@torch.no_grad()
def skip_trigram_table(ov: FactoredMatrix, qk: FactoredMatrix, allowed: torch.Tensor, decode: Decode,
                       n_sources: int = 5, k: int = 5) -> pd.DataFrame:
    """One row per (head, strong source): the source's top destinations (largest ``QK[dst, src]``) and
    top outputs (largest ``OV[out, src]``), all among ``allowed``: the head's skip-trigrams
    ``[source] … [destination] → [out]``.

    ov [n_heads, out, src], qk [n_heads, dst, src] (unscaled).
    """
    sources, best = strongest_sources(ov, allowed, n_sources)
    rows = []
    for h in range(sources.shape[0]):
        for s, v in zip(sources[h].tolist(), best[h].tolist()):
            dst, dval = column_top(qk[h], s, allowed, k)
            out, oval = column_top(ov[h], s, allowed, k)
            rows.append({"head": h, "source": token_label(decode, s), "max OV": v,
                         "top destinations (QK)": ", ".join(token_label(decode, i) for i in dst.tolist()),
                         "top outputs (OV)": ", ".join(token_label(decode, i) for i in out.tolist()),
                         "source id": s})
    return pd.DataFrame(rows)


# ---- tokenisation variants ----------------------------------------------------------------------------

def token_variants(ids: Sequence[int], decode: Decode, min_len: int = 3) -> dict[int, list[int]]:
    """Tokens of the same word written differently: ``" Elizabeth"``/``"Elizabeth"``/``" elizabeth"``.

    Tokens among ``ids`` whose text, without surrounding whitespace and lower-cased, is the same
    alphabetic word of at least ``min_len`` letters form a group; returns token -> the other members
    of its group (tokens alone in their group are left out).
    """
    groups: dict[str, list[int]] = {}
    for i in ids:
        word = decode(int(i)).strip().lower()
        if len(word) >= min_len and word.isalpha():
            groups.setdefault(word, []).append(int(i))
    return {i: [j for j in g if j != i] for g in groups.values() if len(g) > 1 for i in g}


@torch.no_grad()
def variant_ranks(ov: FactoredMatrix, variants: dict[int, list[int]], allowed: torch.Tensor) -> pd.DataFrame:
    """For every source with variants: the OV rank (among ``allowed`` outputs, 1 = top) of the source
    itself and of its best-ranked variant, per head. ov [n_heads, out, src].

    Returns a frame with columns ``source``, ``head``, ``self rank``, ``best variant``, ``variant rank``.
    """
    allowed = torch.as_tensor(allowed)
    sources = torch.tensor(sorted(variants), dtype=torch.long)
    rows = []
    for start in range(0, len(sources), 256):
        src = sources[start:start + 256]
        cols = restrict(ov, allowed, src).dense()  # [H, n_allowed, chunk]
        position = {int(t): i for i, t in enumerate(allowed.tolist())}
        for j, s in enumerate(src.tolist()):
            col = cols[..., j]  # [H, n_allowed]
            self_rank = 1 + (col > col[:, position[s]][:, None]).sum(-1)
            var_idx = torch.tensor([position[v] for v in variants[s]])
            var_vals = col[:, var_idx]  # [H, n_var]
            best_val, best_at = var_vals.max(-1)
            var_rank = 1 + (col > best_val[:, None]).sum(-1)
            for h in range(col.shape[0]):
                rows.append({"source": s, "head": h, "self rank": int(self_rank[h]),
                             "best variant": variants[s][int(best_at[h])], "variant rank": int(var_rank[h])})
    return pd.DataFrame(rows)


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
def next_token_logprobs(model: AttnOnlyTransformer, sequences: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """log P(next token | sequence) at the last position of each sequence [batch, pos] -> [batch, d_vocab]."""
    sequences = torch.as_tensor(sequences, dtype=torch.long)
    out = [model(sequences[i:i + batch_size])[:, -1].float().log_softmax(-1)
           for i in range(0, len(sequences), batch_size)]
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

    Two equivalent methods: ``sparse`` enumerates the windows after each occurrence (fast for rare
    sources); otherwise a difference array marks the covered positions in one pass over the stream
    (fast for frequent ones). ``None`` picks by the number of occurrences.
    """
    stream = np.asarray(tokens)
    N = len(stream)
    at = np.nonzero(stream == source)[0]
    if sparse is None:
        sparse = len(at) * window < N // 8
    if sparse:
        pos = (at[:, None] + np.arange(1, window + 1)).ravel()
        return np.unique(pos[pos < N - 1])
    delta = np.bincount(at + 1, minlength=N + window + 1) - np.bincount(at + window + 1, minlength=N + window + 1)
    covered = np.cumsum(delta[:N - 1]) > 0
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
        for s in sources[h].tolist():
            o = column_top(ov[h], s, allowed, n_out)[0].numpy()
            d = column_top(qk[h], s, allowed, n_dest)[0].numpy()
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


# ---- positional heads ---------------------------------------------------------------------------

def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension with sources after the destination masked, [..., dst, src]."""
    n = scores.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


@torch.no_grad()
def attention_summary(model: AttnOnlyTransformer, tokens: torch.Tensor, layer: int = 0) -> dict[str, torch.Tensor]:
    """Per-head attention statistics on text ``tokens`` [batch, pos], each a tensor [n_heads]:

    ``self``: mean A[t, t]; ``previous``: mean A[t, t-1]; ``entropy``: mean −Σ_s A[t, s] ln A[t, s] (nats);
    ``positional agreement``: 1 − mean total-variation distance between A[t] and the pattern the
    position·position score term alone gives (``position_scores``), i.e. 1 when position alone decides
    where the head looks. Means over the batch and destinations t ≥ 1 (t = 0 can only attend to itself).
    """
    _, cache = model.run_with_cache(tokens)
    A = cache[f"blocks.{layer}.attn.pattern"][..., 1:, :]  # [b, H, n-1 (dst >= 1), n]
    n = A.shape[-1]
    self_att = A.diagonal(offset=1, dim1=-2, dim2=-1)  # A[t, t], t >= 1 (row t - 1 of the slice)
    prev = A.diagonal(offset=0, dim1=-2, dim2=-1)  # A[t, t-1], t >= 1
    entropy = -(A * A.clamp_min(1e-30).log()).sum(-1)
    pos = causal_softmax(position_scores(model, layer, n))[:, 1:]  # [H, n-1, n]
    tv = 0.5 * (A - pos).abs().sum(-1)
    mean = lambda x: x.mean(dim=(0, 2))
    return {"self": mean(self_att), "previous": mean(prev), "entropy": mean(entropy),
            "positional agreement": 1 - mean(tv)}


# ---- the per-token dump ---------------------------------------------------------------------------

@torch.no_grad()
def token_dump(ov: FactoredMatrix, qk: FactoredMatrix, candidates: torch.Tensor, k: int = 5,
               chunk_rows: int = 128) -> dict[str, torch.Tensor]:
    """For EVERY token of the vocabulary and every head: its top-k OV outputs (as a source), its top-k
    QK sources (as a destination) and its top-k QK destinations (as a source), chosen among
    ``candidates``. Chunked: at most ``chunk_rows`` dense rows per head at a time.

    ov [n_heads, out, src] and qk [n_heads, dst, src]: the circuits, or transformed versions of them
    (``centered``, ``attention_preference``). Returns ids and values, each [n_heads, d_vocab, k]:
    ``ov_out``/``ov_out_value`` (largest ``ov[out, t]``), ``qk_src``/``qk_src_value`` (largest
    ``qk[t, src]``), ``qk_dst``/``qk_dst_value`` (largest ``qk[dst, t]``).
    """
    candidates = torch.as_tensor(candidates, dtype=torch.long)
    out = {}
    for name, fm in (("ov_out", restrict(ov, rows=candidates).T),  # rows: sources t, cols: outputs
                     ("qk_src", restrict(qk, cols=candidates)),  # rows: destinations t, cols: sources
                     ("qk_dst", restrict(qk, rows=candidates).T)):  # rows: sources t, cols: destinations
        vals, idx = topk_per_row(fm, k, chunk_rows=chunk_rows)
        out[name], out[f"{name}_value"] = candidates[idx], vals
    return out


def dump_frame(dump: dict[str, torch.Tensor], decode: Decode, counts: np.ndarray) -> pd.DataFrame:
    """``token_dump`` as a long table: one row per (token, head), tokens as Python reprs."""
    H, V, k = dump["ov_out"].shape
    labels = np.array([token_label(decode, i) for i in range(V)], dtype=object)
    frame = {"token_id": np.tile(np.arange(V), H), "token": np.tile(labels, H),
             "train_count": np.tile(np.asarray(counts)[:V], H), "head": np.repeat(np.arange(H), V)}
    for name in ("ov_out", "qk_src", "qk_dst"):
        ids = dump[name].reshape(H * V, k).numpy()
        vals = dump[f"{name}_value"].reshape(H * V, k).numpy()
        for j in range(k):
            frame[f"{name}_{j + 1}"] = labels[ids[:, j]]
        for j in range(k):
            frame[f"{name}_value_{j + 1}"] = np.round(vals[:, j], 4)
    return pd.DataFrame(frame)


def eigenvalue_radius(eigenvalues: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The paper's log-scaled radius for plotting eigenvalues: ``log(1 + |λ| / scale)``, scale the median |λ|."""
    mag = eigenvalues.abs()
    scale = float(mag.median()) if scale is None else scale
    return torch.log1p(mag / scale) if scale > 0 else mag
