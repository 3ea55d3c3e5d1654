"""Tables read from a d_vocab x d_vocab circuit without ever building it.

Skip-trigram tables ("One layer": large QK entries pick (destination, source), large OV entries
pick (source, out)) and copying rates need the largest entries of ``M = A @ B``, a
``FactoredMatrix`` of rank d_head. ``M`` is evaluated in row chunks (``chunk_rows x n`` at a time),
so memory stays at one chunk however large the vocabulary. The default 128 rows keep a bf16 chunk
of GPT-2's vocabulary (13 MB) in L3 cache, so reducing it costs less than reading it back from
memory (3x faster than 2048 rows on the 2-core development machine).

Speed without giving up exactness: each chunk is first multiplied in bfloat16 (about 5x faster
than fp32 on CPUs with AVX512-BF16) and every bf16 value ``v~`` carries a rigorous error bound

    |v~[i, j] - M[i, j]|  <=  2^-6 ||A[i, :]|| max_j ||B[:, j]||  =: margin[i]

(bf16 rounds each factor with relative error u = 2^-8, the product and fp32 accumulation add at
most 3u of sum_r |A[i,r] B[r,j]| <= ||A[i]|| ||B[:, j]||, the rounding of the output u more).
An entry can only matter when ``v~ + margin`` clears a threshold, and every entry that can is
recomputed exactly (fp32 dot product of the fp32 factors), so the results equal a dense fp32
computation. ``filter_dtype=None`` skips the filter and scans in fp32 throughout; the default
``"auto"`` filters in bf16 only where bf16 matmuls are fast (``precision.bf16_is_fast``): on an
AVX2-only CPU they are ~100x slower than fp32, and the fp32 scan is the fast one.
Tests compare everything with dense ``torch.topk`` (``tests/test_circuit_tables.py``).
"""

from __future__ import annotations

import math

import torch

from .factored import FactoredMatrix
from .precision import bf16_is_fast

MARGIN_FACTOR = 2.0 ** -6  # >= the worst-case bf16 error relative to ||A[i]|| max_j ||B[:, j]||
GROUP = 16  # columns per group maximum (groups are strided: columns j, j + n/GROUP, ...)


class _Chunks:
    """Row chunks of a 2-D FactoredMatrix: approximate values with per-row error bounds, exact entries."""

    def __init__(self, fm: FactoredMatrix, chunk_rows: int, filter_dtype: torch.dtype | None):
        if fm.ndim != 2:
            raise ValueError(f"expected one matrix (2-D), got shape {tuple(fm.shape)}")
        exact_dtype = torch.promote_types(fm.dtype, torch.float32)
        self.A, self.B = fm.A.to(exact_dtype).contiguous(), fm.B.to(exact_dtype).contiguous()
        self.Bt = self.B.T.contiguous()  # [n, k]: columns of B as rows, for gathers
        self.m, self.n = fm.shape
        self.chunk_rows = max(1, int(chunk_rows))
        if filter_dtype == "auto":
            filter_dtype = torch.bfloat16 if bf16_is_fast(self.A.device.type) else None
        self.filter_dtype = filter_dtype
        # error bound of a chunk value, relative to ||A[i]|| max_j ||B[:, j]||: bf16 rounding, or in
        # exact mode the rounding of an fp32 matmul (summation order differs from ``exact``)
        if filter_dtype is None:
            factor = (fm.inner_dim + 2) * torch.finfo(exact_dtype).eps
        else:
            factor = MARGIN_FACTOR
            self.A_lo, self.B_lo = self.A.to(filter_dtype), self.B.to(filter_dtype).contiguous()
        self.margin = factor * self.A.norm(dim=1) * self.B.norm(dim=0).max()  # [m], exact dtype

    def __iter__(self):
        """Yields ``(rows [r], approx [r, n], margin [r])`` for consecutive row ranges."""
        A, B = (self.A, self.B) if self.filter_dtype is None else (self.A_lo, self.B_lo)
        # one output buffer for every chunk (consumers never keep a chunk): fresh 25 MB chunks cost
        # page faults, and on glibc they fragmented the heap to 5 GB over 24 paper-size circuits
        buf = torch.empty(min(self.chunk_rows, self.m), self.n, dtype=A.dtype, device=A.device)
        for start in range(0, self.m, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.m)
            approx = torch.mm(A[start:stop], B, out=buf[: stop - start])
            yield torch.arange(start, stop), approx, self.margin[start:stop]

    def exact(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Exact ``M[rows[i], cols[i]]`` [len(rows)]."""
        return (self.A[rows] * self.Bt[cols]).sum(-1)


def _group_max(approx: torch.Tensor) -> torch.Tensor:
    """Maxima of disjoint column groups [r, g] in one pass over the chunk.

    Columns j, j + w, j + 2w, ... (w = n // GROUP) form group j, plus one group of the leftover
    columns; strided groups make the reduction run over contiguous rows (fast on CPU).
    """
    r, n = approx.shape
    w = n // GROUP
    parts = [approx[:, : w * GROUP].view(r, GROUP, w).amax(1)] if w else []
    if w * GROUP < n:
        parts.append(approx[:, w * GROUP:].amax(-1, keepdim=True))
    return torch.cat(parts, dim=1).to(torch.promote_types(approx.dtype, torch.float32))


class _TopK:
    """Running exact top-k of a whole matrix (largest entries)."""

    def __init__(self, k: int):
        self.k = k
        self.values = torch.empty(0)
        self.rows = torch.empty(0, dtype=torch.long)
        self.cols = torch.empty(0, dtype=torch.long)

    def threshold(self) -> float:
        """The k-th best exact value so far: a lower bound on the final k-th largest entry."""
        return float(self.values[-1]) if len(self.values) >= self.k else -math.inf

    def update(self, chunks: _Chunks, rows, approx, margin, row_max) -> None:
        thr = self.threshold()
        if thr == -math.inf:  # bootstrap: real entries (each row's approximate best) give a threshold
            c = min(approx.shape[1], math.ceil(self.k / len(rows)))
            cols = approx.topk(c, dim=-1).indices.flatten()
            vals = chunks.exact(rows.repeat_interleave(c), cols)
            if len(vals) >= self.k:
                thr = float(vals.topk(self.k).values[-1])
        maybe = (row_max + margin >= thr).nonzero().squeeze(1)  # rows that may hold an entry >= thr
        if len(maybe) == 0:
            return
        ri, ci = (approx[maybe].to(margin.dtype) + margin[maybe, None] >= thr).nonzero().unbind(1)
        r, c = rows[maybe[ri]], ci
        v = chunks.exact(r, c)
        values = torch.cat([self.values.to(v.dtype), v])
        order = values.topk(min(self.k, len(values))).indices
        self.values = values[order]
        self.rows = torch.cat([self.rows, r])[order]
        self.cols = torch.cat([self.cols, c])[order]


class _Copying:
    """For each row i of a square matrix: is the diagonal entry among the row's top K? (K in ks)"""

    def __init__(self, ks: tuple[int, ...]):
        self.ks = tuple(ks)
        self.k_max = max(self.ks)
        self.beaten = []  # per row: number of off-diagonal entries strictly above the diagonal, capped at k_max

    def update(self, chunks: _Chunks, rows, approx, margin, group_max) -> None:
        d = chunks.exact(rows, rows)  # [r] exact diagonal
        # a group whose max clears d + margin holds an entry truly > d (never the diagonal itself)
        sure = (group_max > (d + margin)[:, None]).sum(-1).clamp(max=self.k_max)
        beaten = sure.clone()
        open_rows = (sure < self.k_max).nonzero().squeeze(1)
        if len(open_rows):  # few rows: count exactly among entries that could exceed d
            cand = approx[open_rows].to(margin.dtype) >= (d - margin)[open_rows, None]
            ri, ci = cand.nonzero().unbind(1)
            r = rows[open_rows[ri]]
            keep = r != ci
            ri, r, ci = ri[keep], r[keep], ci[keep]
            above = chunks.exact(r, ci) > d[open_rows[ri]]
            counts = torch.zeros(len(open_rows), dtype=torch.long).index_add_(0, ri, above.long())
            beaten[open_rows] = counts.clamp(max=self.k_max)
        self.beaten.append(beaten)

    def rates(self) -> tuple[torch.Tensor, ...]:
        beaten = torch.cat(self.beaten)
        return tuple((beaten < k).float().mean() for k in self.ks)


def _scan(fm: FactoredMatrix, consumers, chunk_rows: int, filter_dtype) -> None:
    chunks = _Chunks(fm, chunk_rows, filter_dtype)
    for rows, approx, margin in chunks:
        group_max = _group_max(approx)
        row_max = group_max.amax(-1)
        for consumer in consumers:
            extra = group_max if isinstance(consumer, _Copying) else row_max
            consumer.update(chunks, rows, approx, margin, extra)


def _per_matrix(fm: FactoredMatrix, fn):
    """Apply ``fn`` to each matrix of a batched FactoredMatrix; stack results over the batch shape."""
    if fm.ndim == 2:
        return fn(fm)
    batch = fm.batch_shape
    A, B = fm.A.reshape(-1, *fm.A.shape[-2:]), fm.B.reshape(-1, *fm.B.shape[-2:])
    outs = [fn(FactoredMatrix(a, b)) for a, b in zip(A, B)]
    return tuple(torch.stack(parts).reshape(*batch, *parts[0].shape) for parts in zip(*outs))


@torch.no_grad()
def topk_circuit_entries(fm: FactoredMatrix, k: int, largest: bool = True, chunk_rows: int = 128,
                         filter_dtype: torch.dtype | None | str = "auto"):
    """The k largest (or smallest) entries of ``M = A @ B`` and where they are, never building M.

    fm: [..., m, n]. Returns ``(values, rows, cols)``, each [..., k], values sorted from the most
    extreme. For the OV circuit [out, src], (rows, cols) = (out, src); for QK [dst, src], (dst, src).
    """
    k = min(k, fm.shape[-1] * fm.shape[-2])

    def one(m: FactoredMatrix):
        top = _TopK(k)
        _scan(m if largest else -m, [top], chunk_rows, filter_dtype)
        return (top.values if largest else -top.values), top.rows, top.cols

    return _per_matrix(fm, one)


@torch.no_grad()
def copying_rates(ov: FactoredMatrix, ks: tuple[int, ...] = (1, 5), chunk_rows: int = 128,
                  filter_dtype: torch.dtype | None | str = "auto") -> tuple[torch.Tensor, ...]:
    """Fraction of source tokens whose top-K OV outputs include themselves, one rate per K in ks.

    ov: the OV circuit [..., d_vocab(out), d_vocab(src)] ("One layer", copying). Source s's
    outputs are column s; s counts for K when fewer than K other tokens have a strictly larger
    entry than ``ov[s, s]`` (ties count in s's favour). Returns tensors of shape [...] per K.
    """
    def one(m: FactoredMatrix):
        copy = _Copying(ks)
        _scan(m.T, [copy], chunk_rows, filter_dtype)
        return copy.rates()

    return _per_matrix(ov, one)


@torch.no_grad()
def scan_ov_circuit(ov: FactoredMatrix, k: int = 100, ks: tuple[int, ...] = (1, 5), chunk_rows: int = 128,
                    filter_dtype: torch.dtype | None | str = "auto") -> tuple[torch.Tensor, ...]:
    """``topk_circuit_entries(ov, k)`` and ``copying_rates(ov, ks)`` in one pass over the chunks.

    Returns ``(values, out, src, *rates)``: values/out/src [..., k], one rate tensor [...] per K.
    """
    k = min(k, ov.shape[-1] * ov.shape[-2])

    def one(m: FactoredMatrix):
        top, copy = _TopK(k), _Copying(ks)
        _scan(m.T, [top, copy], chunk_rows, filter_dtype)  # rows of ovᵀ are sources
        return (top.values, top.cols, top.rows, *copy.rates())

    return _per_matrix(ov, one)


@torch.no_grad()
def topk_per_row(fm: FactoredMatrix, k: int, rows: torch.Tensor | None = None, largest: bool = True,
                 chunk_rows: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k entries of each selected row of ``M = A @ B`` (exact fp32, chunked).

    fm: [..., m, n]; rows: [r] (default all). Returns ``(values, indices)`` [..., r, k].
    Source -> top outputs (OV) is ``topk_per_row(ov.T, k)``; source -> top destinations (QK)
    is ``topk_per_row(qk.T, k)``, since both circuits are indexed [.., src] in their columns.
    """
    rows = torch.arange(fm.shape[-2]) if rows is None else torch.as_tensor(rows)
    vals, idx = [], []
    for start in range(0, len(rows), chunk_rows):
        block = fm.rows(rows[start:start + chunk_rows])
        top = block.topk(min(k, fm.shape[-1]), dim=-1, largest=largest)
        vals.append(top.values)
        idx.append(top.indices)
    return torch.cat(vals, dim=-2), torch.cat(idx, dim=-2)


def diagonal_stats(fm: FactoredMatrix) -> dict[str, torch.Tensor]:
    """How the diagonal of a square circuit compares with all its entries, from the factors alone.

    Returns tensors [...]: ``diag_mean``, ``mean`` (= 1ᵀ A B 1 / mn), ``std`` (from
    ||AB||_F^2 / mn - mean^2) and ``diag_z`` = (diag_mean - mean) / std. A copying OV circuit
    has a large positive ``diag_z``.
    """
    m, n = fm.shape[-2:]
    mean = (fm.A.sum(-2) * fm.B.sum(-1)).sum(-1) / (m * n)
    std = ((fm.norm() ** 2 / (m * n)) - mean ** 2).clamp_min(0).sqrt()
    diag_mean = fm.diag().mean(-1)
    return {"diag_mean": diag_mean, "mean": mean, "std": std, "diag_z": (diag_mean - mean) / std}
