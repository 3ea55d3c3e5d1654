"""One-layer transformers: skip-trigram tables (``skip_trigram_table``), how each head supports one named
skip-trigram (``skip_trigram_support``), copying across tokenisations (``split_words``) and the per-token
dump (paper "One-Layer Attention-Only Transformers"; the bugs are in ``skip_trigram_bugs``, the model run on
real text in ``skip_trigram_effect``, positional heads in ``positional``, the loss of each path in
``path_expansion.head_term_losses``). Functions return token ids; the book shows them with
``circuits.viz.tokens``.

A one-layer model's logits at destination t are exactly (paper eq., column vectors)

    T = Id ⊗ W_U W_E  +  Σ_h A^h ⊗ W_U W_OV^h W_E                                          (1)

so every head adds ``A^h[t, s] · OV^h[:, x_s]`` for each earlier source token x_s: a skip-trigram
``[source] … [destination] → [out]`` is a large QK entry ``QK^h[dst, src]`` (the head attends from
dst to src) together with a large OV entry ``OV^h[out, src]`` (attending to src raises out). The
circuits ``ov_circuit`` [heads, out, src] and ``qk_circuit`` [heads, dst, src] are low-rank
``FactoredMatrix`` objects; everything here reads them through row chunks or small blocks, never
as d_vocab² dense matrices.

Token subsets: circuits are restricted to tokens seen often in the training split
(``frequent_token_ids``), because the embedding rows of tokens the model never saw stay at their
random initialisation and would fill every top-k list with noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from circuits.analysis.scan.tables import topk_per_row
from .factored import FactoredMatrix

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
def attention_preference(qk: FactoredMatrix, weights: torch.Tensor, chunk_rows: int = 256,
                         rows: torch.Tensor | None = None) -> FactoredMatrix:
    """How much more a destination attends to a source than to a typical token of text, in log units:

        P[d, s] = S[d, s] - log Σ_s' w(s') exp(S[d, s'])

    with ``S = qk`` the scaled token·token scores [..., dst, src] and ``w`` a distribution over
    sources [src] (e.g. unigram frequencies; zero weight leaves a source out of the background).
    ``exp(P[d, s])`` is the attention weight d gives s divided by the mean weight it gives a context
    token drawn from ``w`` (for a long context of such tokens). Positions are ignored. The shift is one number per row,
    so P is a FactoredMatrix of inner dimension k + 1: ``[A, -c] @ [B; 1ᵀ]``.
    Unlike the raw scores, a destination with a long query vector does not top every source's list.

    ``rows`` (destination ids): compute the shift for these rows only; the others keep their raw scores
    (shift 0). At GPT-2's vocabulary the shift of every row costs d_vocab x n_sources exponentials per head,
    and the book reads only the frequent destinations.
    """
    w = torch.as_tensor(weights, dtype=qk.dtype)
    keep = (w > 0).nonzero().squeeze(1)
    logw = w[keep].log()
    sub = restrict(qk, cols=keep)
    ids = torch.arange(qk.shape[-2]) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    shift = torch.cat([torch.logsumexp(sub.rows(ids[i:i + chunk_rows]) + logw, dim=-1)
                       for i in range(0, len(ids), chunk_rows)], dim=-1)  # [..., len(ids)]
    c = shift if rows is None else torch.zeros(*shift.shape[:-1], qk.shape[-2], dtype=shift.dtype).index_copy_(
        -1, ids, shift)  # [..., m]
    ones = torch.ones(*qk.B.shape[:-2], 1, qk.shape[-1], dtype=qk.dtype)
    return FactoredMatrix(torch.cat([qk.A, -c[..., :, None]], -1), torch.cat([qk.B, ones], -2))


# ---- skip-trigram tables -----------------------------------------------------------------------

@torch.no_grad()
def column_maxima(fm: FactoredMatrix, chunk_rows: int = 256) -> torch.Tensor:
    """``max_i M[..., i, j]`` for every column j, [..., n] (chunked over columns)."""
    return topk_per_row(fm.T, 1, chunk_rows=chunk_rows)[0][..., 0]


@torch.no_grad()
def strongest_sources(ov: FactoredMatrix, allowed: torch.Tensor, n: int,
                      candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's ``n`` source tokens with the largest OV entry (the most any output is raised by
    attending to them), outputs among ``allowed``, sources among ``candidates`` (default ``allowed``).

    ov [n_heads, d_vocab(out), d_vocab(src)]. Returns ``(source ids [n_heads, n], max OV entry [n_heads, n])``.
    """
    candidates = allowed if candidates is None else torch.as_tensor(candidates, dtype=torch.long)
    best = column_maxima(restrict(ov, allowed, candidates))  # [H, n_candidates]
    vals, idx = best.topk(min(n, best.shape[-1]), dim=-1)
    return candidates[idx], vals


@torch.no_grad()
def column_top(fm: FactoredMatrix, col: int, allowed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of column ``col`` among rows ``allowed``: ``(row ids [..., k], values [..., k])``.

    For the OV circuit a source's top outputs; for the QK circuit a source's top destinations.
    """
    column = fm.block(allowed, col)  # [..., n_allowed]
    top = column.topk(min(k, column.shape[-1]), dim=-1)
    return allowed[top.indices], top.values


@torch.no_grad()
def skip_trigram_table(ov: FactoredMatrix, qk: FactoredMatrix, allowed: torch.Tensor, n_sources: int = 5,
                       k: int = 5, sources: tuple[torch.Tensor, torch.Tensor] | None = None) -> pd.DataFrame:
    """One row per (head, strong source): the source's top destinations (largest ``QK[dst, src]``) and
    top outputs (largest ``OV[out, src]``), all among ``allowed``: the head's skip-trigrams
    ``[source] … [destination] → [out]`` (paper "Interpretation as skip-trigrams": "searching for large
    entries in these matrices reveals lots of interesting behavior").

    ov [n_heads, out, src], qk [n_heads, dst, src]. ``sources``: ``strongest_sources(...)`` if already
    computed (e.g. among whole words only); its first ``n_sources`` per head are used. Returns token ids (the
    book formats them): columns ``head``, ``source``, ``max OV`` (the source's largest OV entry),
    ``destinations`` and ``outputs`` (lists of k ids, best first).
    """
    ids, best = strongest_sources(ov, allowed, n_sources) if sources is None else sources
    ids, best = ids[:, :n_sources], best[:, :n_sources]
    rows = []
    for h in range(ids.shape[0]):
        for s, v in zip(ids[h].tolist(), best[h].tolist()):
            rows.append({"head": h, "source": s, "max OV": v,
                         "destinations": column_top(qk[h], s, allowed, k)[0].tolist(),
                         "outputs": column_top(ov[h], s, allowed, k)[0].tolist()})
    return pd.DataFrame(rows)


@torch.no_grad()
def skip_trigram_support(ov: FactoredMatrix, qk: FactoredMatrix, source, dest, out,
                         allowed: torch.Tensor) -> dict[str, torch.Tensor]:
    """How strongly each head implements the skip-trigram ``source … dest → out`` (paper "Interpretation
    as skip-trigrams": the QK circuit picks (destination, source), the OV circuit (source, out)).

    ``source``, ``dest``, ``out``: token ids, or 1-D tensors of ids (one skip-trigram each, read in one pass).
    Per head, [n_heads] (or [n_heads, n]): ``ov rank``, the rank (1 = top) of ``out`` among the ``allowed``
    outputs of the source's OV column (ties count in its favour); ``ov logit``, that entry minus the column's
    mean over ``allowed`` (a constant per column changes no probability); ``qk rank``, the rank of ``dest``
    among the ``allowed`` destinations by ``qk[:, source]`` (pass the ``attention_preference``, so that
    destinations with long queries do not top every column); ``qk value``, ``qk[dest, source]``.
    """
    allowed = torch.as_tensor(allowed)
    single = isinstance(source, int)
    src, dst, o = (torch.as_tensor([x] if single else x, dtype=torch.long) for x in (source, dest, out))
    ov_cols, qk_cols = ov.block(allowed, src), qk.block(allowed, src)  # [H, n_allowed, n]
    ov_val, qk_val = _entry_in(ov, ov_cols, allowed, o, src), _entry_in(qk, qk_cols, allowed, dst, src)  # [H, n]
    got = {"ov rank": 1 + (ov_cols > ov_val[..., None, :]).sum(-2), "ov logit": ov_val - ov_cols.mean(-2),
           "qk rank": 1 + (qk_cols > qk_val[..., None, :]).sum(-2), "qk value": qk_val}
    return {k: v[..., 0] for k, v in got.items()} if single else got


def _entry_in(fm: FactoredMatrix, cols: torch.Tensor, allowed: torch.Tensor, rows: torch.Tensor,
              col_ids: torch.Tensor) -> torch.Tensor:
    """``fm[..., rows[i], col_ids[i]]`` [..., n], read from ``cols`` = ``fm.block(allowed, col_ids)`` where
    ``rows[i]`` is in ``allowed`` (the same floating-point value the ranks compare with), else computed."""
    match = allowed[:, None] == rows[None, :]  # [n_allowed, n]
    found = match.any(0)
    at = match.float().argmax(0)  # row of allowed holding rows[i] (0 where absent)
    from_cols = cols.gather(-2, at.expand(*cols.shape[:-2], 1, -1)).squeeze(-2)
    return torch.where(found, from_cols, fm.entries(rows, col_ids))


def split_words(ids: Sequence[int], decode: Decode, encode: Callable[[str], list[int]],
                min_len: int = 4) -> list[tuple[int, int, int]]:
    """The paper's copying across tokenisations (paper "Copying / Primitive In-Context Learning"):
    ``" Ralph" → [" Ralph"]`` is one token but ``"Ralph" → ["R", "alph"]`` is two, and heads attend from
    the fragment ``"R"`` back to ``" Ralph"`` and predict ``"alph"``: the skip-trigram
    ``[ Ralph] … [R] → [alph]``.

    For every token among ``ids`` that is a space and a capitalised alphabetic word of at least
    ``min_len`` letters, and whose word without the space ``encode``s to two or more tokens, returns
    ``(word token, first piece, second piece)``, in the order of ``ids``.
    """
    found = []
    for i in ids:
        text = decode(int(i))
        word = text[1:]
        if text.startswith(" ") and len(word) >= min_len and word.isalpha() and word[0].isupper():
            pieces = encode(word)
            if len(pieces) >= 2:
                found.append((int(i), int(pieces[0]), int(pieces[1])))
    return found


def whole_words(ids: Sequence[int], decode: Decode, tokens: np.ndarray, d_vocab: int, min_letters: int = 3,
                min_end: float = 0.8) -> torch.Tensor:
    """The tokens among ``ids`` that read as whole words: a space and at least ``min_letters`` letters, and
    followed in the stream ``tokens`` by a token that does not go on with letters (a space, punctuation, a
    newline) at least ``min_end`` of the times they occur (``·tw`` of ``·twelve`` is a space and letters
    too, but a word piece). Ids in the order of ``ids``.
    """
    stream = np.asarray(tokens, dtype=np.int64)
    goes_on = np.zeros(d_vocab)
    for t in np.unique(stream):
        text = decode(int(t))
        goes_on[t] = bool(text) and text[0].isalpha()
    seen = np.bincount(stream[:-1], minlength=d_vocab)
    ends = seen - np.bincount(stream[:-1], weights=goes_on[stream[1:]], minlength=d_vocab)
    out = []
    for i in ids:
        text = decode(int(i))
        if text.startswith(" ") and len(text) > min_letters and text[1:].isalpha() and seen[i] > 0 \
                and ends[i] >= min_end * seen[i]:
            out.append(int(i))
    return torch.as_tensor(out, dtype=torch.long)


@torch.no_grad()
def self_ranks(fm: FactoredMatrix, chunk_cols: int = 256) -> torch.Tensor:
    """For a square circuit [..., n(out), n(src)] (e.g. the OV circuit restricted to the same tokens on both
    sides): for each source s, how many outputs have a strictly larger entry than ``M[s, s]``, [..., n]
    (0: the token is its own top output). Dense, ``chunk_cols`` columns at a time (a block that stays in
    cache): for n up to a few thousand."""
    lead = fm.shape[:-2]
    A, B = fm.A.reshape(-1, *fm.A.shape[-2:]), fm.B.reshape(-1, *fm.B.shape[-2:])
    n = fm.shape[-1]
    out = torch.empty(A.shape[0], n, dtype=torch.long)
    for i in range(A.shape[0]):
        for j in range(0, n, chunk_cols):
            m = A[i] @ B[i][:, j:j + chunk_cols]  # [out, chunk of sources]
            out[i, j:j + chunk_cols] = (m > m[j:j + chunk_cols].diagonal()[None, :]).sum(0)
    return out.reshape(*lead, n)


@torch.no_grad()
def token_dump(ov: FactoredMatrix, qk: FactoredMatrix, candidates: torch.Tensor, k: int = 5,
               chunk_rows: int = 128, tokens: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """For every token of the vocabulary (or of ``tokens``) and every head: its top-k OV outputs (as a
    source), its top-k QK sources (as a destination) and its top-k QK destinations (as a source), chosen
    among ``candidates``. Chunked: at most ``chunk_rows`` dense rows per head at a time.

    ov [n_heads, out, src] and qk [n_heads, dst, src]: the circuits, or transformed versions of them
    (``centered``, ``attention_preference``). Returns ids and values, each [n_heads, n, k] with n = d_vocab
    (row t is token t) or len(tokens) (row i is ``tokens[i]``): ``ov_out``/``ov_out_value`` (largest
    ``ov[out, t]``), ``qk_src``/``qk_src_value`` (largest ``qk[t, src]``), ``qk_dst``/``qk_dst_value``
    (largest ``qk[dst, t]``).
    """
    candidates = torch.as_tensor(candidates, dtype=torch.long)
    t = None if tokens is None else torch.as_tensor(tokens, dtype=torch.long)
    out = {}
    for name, fm in (("ov_out", restrict(ov, rows=candidates, cols=t).T),  # rows: sources t, cols: outputs
                     ("qk_src", restrict(qk, rows=t, cols=candidates)),  # rows: destinations t, cols: sources
                     ("qk_dst", restrict(qk, rows=candidates, cols=t).T)):  # rows: sources t, cols: destinations
        vals, idx = topk_per_row(fm, k, chunk_rows=chunk_rows)
        out[name], out[f"{name}_value"] = candidates[idx], vals
    return out


def eigenvalue_radius(eigenvalues: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The paper's log-scaled radius for plotting eigenvalues: ``log(1 + |λ| / scale)``, scale the median |λ|."""
    mag = eigenvalues.abs()
    scale = float(mag.median()) if scale is None else scale
    return torch.log1p(mag / scale) if scale > 0 else mag
