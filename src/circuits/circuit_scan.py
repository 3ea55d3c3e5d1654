"""The scan behind ``circuit_tables``: every entry of ``M = A @ B`` checked, none stored.

``M`` (a d_vocab x d_vocab circuit of rank d_head) is approximated in bf16 block by block and
reduced on the fly; only entries whose approximation may clear a threshold are recomputed
exactly (fp32 dot products of the fp32 factors). Each approximate value carries a rigorous
per-row error bound ``margin[i]`` (``_rounding_margin``): with Ã, B̃ the bf16 factors,

    |v~[i, j] - M[i, j]|  <=  ||A[i] - Ã[i]|| max_j ||B_j|| + ||Ã[i]|| max_j ||B_j - B̃_j||
                              + (γ_k + u_out) ||Ã[i]|| max_j ||B̃_j||            =: margin[i]

(Cauchy-Schwarz on the actual rounding residuals; γ_k for fp32 accumulation, u_out = 2^-8 where
the output is rounded to bf16; a tiny absolute term covers subnormals, which AMX flushes to
zero), so the results equal a dense fp32 computation. In exact mode (``filter_dtype=None``, used
where bf16 matmuls are slow) the blocks are fp32 and the bound is that of fp32 rounding.

Two ways to produce the blocks:
  - ``group_max.group_maxima`` (C kernels: bf16 on CPUs with AMX, fp32 on CPUs with AVX2): the
    maximum of every group of 64 columns per row, straight from the registers (0.14 s a circuit at
    GPT-2's vocabulary on 2 cores with AMX);
  - torch matmuls into one reused tile of ``chunk_rows x chunk_cols`` values, dismissed as a
    whole by one maximum taken over the tile's bits read as integers (``_KEYS``: for floats >= +0
    the bit patterns order like the values, and an integer maximum is 5-10x faster than a bf16
    one on CPU; negative floats have negative keys, so a maximum key below zero only says "every
    entry is negative", which 0 bounds from above).
Rows and columns are visited in order of decreasing norm: entries scale with ||A[i]|| ||B[:, j]||,
so the largest come first and a top-k threshold is high from the first block on.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from . import group_max as kernels
from .factored import FactoredMatrix
from .precision import bf16_is_fast

MARGIN_FACTOR = 2.0 ** -6  # >= the worst-case bf16 error relative to ||A[i]|| max_j ||B[:, j]|| (used where
# fp32 matmuls may round to TF32 or bf16 internally; the bf16 filter uses the residuals, _rounding_margin)
GROUPS = 8  # column groups per row whose maxima settle copying rows in a torch tile
CHUNK_ROWS, CHUNK_COLS = 2048, 512  # a 2 MB bf16 tile (torch path), in L2 on the 2-core machines
KERNEL_ROWS = 8192  # rows per kernel call: group maxima of 8192 rows are 26 MB at GPT-2's vocabulary
EXACT_BATCH = 1 << 16  # exact entries per gather: 32 MB of factor rows at width 64
ROW_GROUPS = 32  # candidate groups a row may have in row_topk before it is computed whole
_KEYS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32,
         torch.float64: torch.int64}  # same-width integers whose order matches floats >= +0


def _upper_bound(max_key: torch.Tensor, dtype: torch.dtype, exact: torch.dtype) -> torch.Tensor:
    """An upper bound on the largest value from the largest integer key: exact when it is >= 0."""
    return max_key.clamp_min(0).view(dtype).to(exact)


def _key_above(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key of the largest ``dtype`` value <= t (t >= 0): ``v > t`` iff ``key(v) > _key_above(t)``."""
    x = t.to(dtype)
    return x.view(_KEYS[dtype]) - (x.to(t.dtype) > t).to(_KEYS[dtype])


def _key_at_least(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key of the smallest ``dtype`` value >= t (t > 0): ``v >= t`` iff ``key(v) >= _key_at_least(t)``."""
    x = t.to(dtype)
    return x.view(_KEYS[dtype]) + (x.to(t.dtype) < t).to(_KEYS[dtype])


def _count_true(mask: torch.Tensor) -> torch.Tensor:
    """Per-row count of a bool matrix [r, c] as int64; summed in int16 where it fits (6x faster on CPU)."""
    return mask.sum(1, dtype=torch.int16 if mask.shape[1] < 2 ** 15 else torch.int32).long()


def _rounding_margin(A: torch.Tensor, A_lo: torch.Tensor, Bt: torch.Tensor, Bt_lo: torch.Tensor,
                     rounded_output: bool) -> torch.Tensor:
    """Per-row bound on |v~[i, j] - M[i, j]| for values multiplied from rounded factors [m].

    With Ã, B̃ the rounded factors (their products are exact in fp32) and dA = A - Ã, dB = B - B̃:
    M - Ã B̃ = dA B + Ã dB, so by Cauchy-Schwarz on the actual rounding residuals

        |v~ - M| <= ||dA[i]|| max_j ||B_j|| + ||Ã[i]|| max_j ||dB_j|| + (γ_k + u_out (1 + γ_k)) ||Ã[i]|| max_j ||B̃_j||

    (γ_k = k 2^-24 / (1 - k 2^-24): fp32 accumulation in any order; u_out = 2^-8 where the output is
    rounded to bf16). The residuals are about 2^-9 of the factors, so this is 10-15x tighter than
    the worst case MARGIN_FACTOR and lets far fewer entries through to the exact recheck.
    """
    exact = A.dtype
    At, Bt_t = A_lo.to(exact), Bt_lo.to(exact)
    k = A.shape[1]
    gamma = k * 2.0 ** -24 / (1 - k * 2.0 ** -24)
    u_out = 2.0 ** -8 if rounded_output else 0.0
    b_max = Bt.norm(dim=1).max() if len(Bt) else A.new_zeros(())
    db_max = (Bt - Bt_t).norm(dim=1).max() if len(Bt) else A.new_zeros(())
    bt_max = Bt_t.norm(dim=1).max() if len(Bt) else A.new_zeros(())
    a_t = At.norm(dim=1)
    bound = (A - At).norm(dim=1) * b_max + a_t * db_max + (gamma + u_out * (1 + gamma)) * a_t * bt_max
    return bound * (1 + 2.0 ** -16)  # the norms themselves are rounded


def _resolve(filter_dtype, device_type: str) -> torch.dtype | None:
    """``"auto"``: bf16 where bf16 matmuls are fast here, else None (fp32 throughout)."""
    if filter_dtype == "auto":
        return torch.bfloat16 if bf16_is_fast(device_type) else None
    return filter_dtype


def kernel_for(fm: FactoredMatrix, filter_dtype="auto") -> str | None:
    """The group-maximum kernel a scan of ``fm`` runs in (``group_max.kind_for``), or None for torch."""
    if fm.A.device.type != "cpu":
        return None
    dtype = _resolve(filter_dtype, "cpu") or torch.promote_types(fm.dtype, torch.float32)
    return kernels.kind_for(dtype, fm.inner_dim)


def _reduced_fp32_matmuls(device_type: str) -> bool:
    """Whether fp32 matmuls here may round their inputs to TF32 or bf16 (torch's precision settings)."""
    if torch.get_float32_matmul_precision() != "highest":
        return True
    return device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32


class Blocks:
    """A 2-D FactoredMatrix in norm order: approximate blocks with per-row error bounds, exact entries."""

    def __init__(self, fm: FactoredMatrix, chunk_rows: int | None, chunk_cols: int | None, filter_dtype):
        if fm.ndim != 2:
            raise ValueError(f"expected one matrix (2-D), got shape {tuple(fm.shape)}")
        self.exact_dtype = torch.promote_types(fm.dtype, torch.float32)
        self.A = fm.A.to(self.exact_dtype).contiguous()  # [m, k]
        self.Bt = fm.B.mT.to(self.exact_dtype).contiguous()  # [n, k]: columns of B as rows, for gathers
        self.m, self.n = fm.shape
        k = fm.inner_dim
        filter_dtype = _resolve(filter_dtype, self.A.device.type)
        kind = kernel_for(fm, filter_dtype) if self.n else None
        row_norm, col_norm = self.A.norm(dim=1), self.Bt.norm(dim=1)
        col_max = col_norm.max() if self.n else col_norm.new_zeros(())
        if filter_dtype is None:  # fp32 rounding: summation order differs from ``exact``
            factor, self.A_lo, Bt_lo = (k + 2) * torch.finfo(self.exact_dtype).eps, self.A, self.Bt
            if _reduced_fp32_matmuls(self.A.device.type):  # TF32 or bf16 inside fp32 matmuls: bf16's bound
                factor = max(factor, MARGIN_FACTOR)
            margin = factor * row_norm * col_max
        else:
            self.A_lo, Bt_lo = self.A.to(filter_dtype), self.Bt.to(filter_dtype)
            # torch's bf16 matmul rounds its output to bf16; the kernels return fp32
            margin = _rounding_margin(self.A, self.A_lo, self.Bt, Bt_lo, rounded_output=kind is None)
        # subnormals, which AMX flushes to zero (inputs and outputs): at most FLT_MIN per term
        tiny = 4 * (k + 2) * torch.finfo(torch.float32).tiny * (1 + row_norm) * (1 + col_max)
        self.margin = margin + tiny  # [m], exact dtype, by original row
        self.row_ids = row_norm.argsort(descending=True)
        self.col_ids = col_norm.argsort(descending=True)
        A_sorted, Bt_sorted = self.A_lo[self.row_ids], Bt_lo[self.col_ids]
        self.packed = None
        if kind is not None:
            self.chunk_rows = max(1, int(chunk_rows or KERNEL_ROWS))
            self.packed = kernels.PackedColumns(Bt_sorted, kind)
            pad = self.packed.groups * kernels.GROUP - self.n  # padded columns repeat real ones: mark them -1
            self.group_cols = torch.cat([self.col_ids, self.col_ids.new_full((pad,), -1)]).view(-1, kernels.GROUP)
        else:
            self.chunk_rows = max(1, int(chunk_rows or CHUNK_ROWS))
            self.chunk_cols = max(1, int(chunk_cols or CHUNK_COLS))
            # B cut once into contiguous column tiles [k, c]: a strided slice is repacked by every matmul
            self.B_tiles = [(self.col_ids[j:j + self.chunk_cols], Bt_sorted[j:j + self.chunk_cols].T.contiguous())
                            for j in range(0, self.n, self.chunk_cols)]
            # one output buffer for every tile (consumers never keep one): fresh tiles cost page
            # faults, and on glibc they fragmented the heap to 5 GB over 24 paper-size circuits
            self.buf = torch.empty(min(self.chunk_rows, self.m) * min(self.chunk_cols, self.n),
                                   dtype=self.A_lo.dtype, device=self.A.device)
        self.blocks = [(self.row_ids[i:i + self.chunk_rows], A_sorted[i:i + self.chunk_rows])
                       for i in range(0, self.m, self.chunk_rows)]

    def tiles(self, a: torch.Tensor):
        """Torch path: yields ``(cols, approx [r, c])`` for the column tiles of the rows whose factor
        rows are ``a`` (``cols``: the original column indices of the tile)."""
        for cols, b in self.B_tiles:
            out = self.buf[: a.shape[0] * b.shape[1]].view(a.shape[0], b.shape[1])
            yield cols, torch.mm(a, b, out=out)

    def group_entries(self, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel path: ``(pair, cols)`` for every column of the given groups, padding dropped
        (``pair`` indexes ``groups``)."""
        cols = self.group_cols[groups].flatten()
        pair = torch.arange(len(groups)).repeat_interleave(kernels.GROUP)
        keep = cols >= 0
        return pair[keep], cols[keep]

    def exact(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Exact ``M[rows[i], cols[i]]`` [len(rows)], in batches that bound the gathered memory."""
        if len(rows) <= EXACT_BATCH:
            return (self.A[rows] * self.Bt[cols]).sum(-1)
        return torch.cat([(self.A[r] * self.Bt[c]).sum(-1)
                          for r, c in zip(rows.split(EXACT_BATCH), cols.split(EXACT_BATCH))])


class TopK:
    """Running exact top-k of a whole matrix (largest entries)."""

    def __init__(self, k: int):
        self.k = k
        self.values = torch.empty(0)
        self.rows = torch.empty(0, dtype=torch.long)
        self.cols = torch.empty(0, dtype=torch.long)
        self.thr = -math.inf  # the k-th best exact value so far: a lower bound on the final k-th largest

    @functools.lru_cache(maxsize=4)
    def _key(self, lo: float, dtype: torch.dtype) -> int:
        return int(_key_at_least(torch.tensor(lo, dtype=torch.float64), dtype))

    def _merge(self, blocks: Blocks, r: torch.Tensor, c: torch.Tensor) -> None:
        v = blocks.exact(r, c)
        values = torch.cat([self.values.to(v), v])  # .to(v): dtype and device of the factors
        order = values.topk(min(self.k, len(values))).indices
        self.values = values[order]
        self.rows = torch.cat([self.rows.to(r.device), r])[order]
        self.cols = torch.cat([self.cols.to(c.device), c])[order]
        if len(self.values) >= self.k:
            self.thr = float(self.values[-1])

    def update(self, blocks: Blocks, rows, margin, margin_max: float, cols, approx: torch.Tensor) -> None:
        """Torch path: one tile ``approx`` [r, c] of rows ``rows`` and columns ``cols``."""
        thr = self.thr
        if thr == -math.inf:  # bootstrap: the tile's k best approximate entries are real entries
            flat = approx.flatten().topk(min(self.k, approx.numel())).indices
            vals = blocks.exact(rows[flat // approx.shape[1]], cols[flat % approx.shape[1]])
            thr = float(vals.min()) if len(vals) >= self.k else -math.inf
        keys = approx.view(_KEYS[approx.dtype])
        lo = thr - margin_max  # no entry of the tile matters unless its approximate value is >= lo
        if lo > 0 and int(keys.amax()) < self._key(lo, approx.dtype):
            return  # the usual case: one integer maximum dismisses the whole tile
        row_max = _upper_bound(keys.amax(1), approx.dtype, margin.dtype)
        maybe = (row_max + margin >= thr).nonzero().squeeze(1)  # rows that may hold an entry >= thr
        ri, ci = (approx[maybe].to(margin.dtype) + margin[maybe, None] >= thr).nonzero().unbind(1)
        self._merge(blocks, rows[maybe[ri]], cols[ci])

    def update_groups(self, blocks: Blocks, rows, margin, group_max: torch.Tensor) -> None:
        """Kernel path: group maxima [r, groups] of rows ``rows``; candidate groups are recomputed exactly."""
        thr = self.thr
        row_max = group_max.amax(1)
        if thr == -math.inf:  # bootstrap from the entries of the best group of each of the k best rows
            best = row_max.topk(min(self.k, len(row_max))).indices
            pair, cols = blocks.group_entries(group_max[best].argmax(1))
            vals = blocks.exact(rows[best][pair], cols)
            thr = float(vals.topk(self.k).values[-1]) if len(vals) >= self.k else -math.inf
        maybe = (row_max + margin >= thr).nonzero().squeeze(1)
        ri, gi = (group_max[maybe] + margin[maybe, None] >= thr).nonzero().unbind(1)
        pair, cols = blocks.group_entries(gi)
        self._merge(blocks, rows[maybe[ri]][pair], cols)


class Copying:
    """For each row i of a square matrix: is the diagonal entry among the row's top K? (K in ks)

    An entry with ``v~ > d + margin`` surely beats the diagonal d; a row with K such entries
    (in distinct column groups) is settled, which in a circuit that does not copy is nearly every
    row. The rest are counted exactly among the entries that may beat d (``v~ >= d - margin``).
    Torch path: the first tile of each row block settles rows, ``finish`` counts the rest over all
    columns. Kernel path: the group maxima of all columns settle rows and point to the candidates.
    """

    def __init__(self, ks: tuple[int, ...], m: int):
        self.ks = tuple(ks)
        self.k_max = max(self.ks)
        self.beaten = torch.zeros(m, dtype=torch.long)  # per row: entries above the diagonal, capped at k_max

    def first_tile(self, blocks: Blocks, rows, margin, approx: torch.Tensor) -> None:
        hi = blocks.exact(rows, rows) + margin  # v~ > hi means the entry is truly above the diagonal
        # v > hi as keys when hi >= 0; for hi < 0, count v >= +0 (a lower bound is all that is needed)
        key = torch.where(hi >= 0, _key_above(hi.clamp_min(0), approx.dtype), -1)
        # GROUPS maxima per row are 10x cheaper than counting every entry and settle nearly as many rows
        w = max(1, approx.shape[1] // GROUPS)
        g = approx.shape[1] // w
        group_max = approx[:, : g * w].view(_KEYS[approx.dtype]).view(len(rows), g, w).amax(2)
        self.beaten[rows.cpu()] = _count_true(group_max > key[:, None]).clamp(max=self.k_max).cpu()

    def finish(self, blocks: Blocks) -> None:
        """Torch path: count exactly in the rows the first tiles did not settle."""
        hard = (self.beaten < self.k_max).nonzero().squeeze(1).to(blocks.A.device)
        for rows in hard.split(blocks.chunk_rows):
            d = blocks.exact(rows, rows)
            lo = d - blocks.margin[rows]  # an entry truly above d has v~ >= lo
            counts = torch.zeros(len(rows), dtype=torch.long, device=d.device)
            for cols, approx in blocks.tiles(blocks.A_lo[rows]):
                if bool((lo > 0).all()):  # the usual case for rows a copying head decides: compare keys
                    cand = approx.view(_KEYS[approx.dtype]) >= _key_at_least(lo, approx.dtype)[:, None]
                else:
                    cand = approx.to(lo.dtype) >= lo[:, None]
                ri, ci = cand.nonzero().unbind(1)
                self._count(blocks, rows, d, ri, cols[ci], counts)
            self.beaten[rows.cpu()] = counts.clamp(max=self.k_max).cpu()

    def update_groups(self, blocks: Blocks, rows, margin, group_max: torch.Tensor) -> None:
        """Kernel path: settle rows from their group maxima, count the others exactly."""
        d = blocks.exact(rows, rows)
        sure = _count_true(group_max > (d + margin)[:, None])
        self.beaten[rows] = sure.clamp(max=self.k_max)
        open_ = (sure < self.k_max).nonzero().squeeze(1)
        if len(open_) == 0:
            return
        ri, gi = (group_max[open_] >= (d - margin)[open_, None]).nonzero().unbind(1)
        pair, cols = blocks.group_entries(gi)
        counts = torch.zeros(len(open_), dtype=torch.long)
        self._count(blocks, rows[open_], d[open_], ri[pair], cols, counts)
        self.beaten[rows[open_]] = counts.clamp(max=self.k_max)

    @staticmethod
    def _count(blocks: Blocks, rows, d, ri, cols, counts) -> None:
        """Add to counts[ri] the entries (rows[ri], cols) truly above d[ri], the diagonal excluded."""
        keep = rows[ri] != cols
        ri, cols = ri[keep], cols[keep]
        counts.index_add_(0, ri, (blocks.exact(rows[ri], cols) > d[ri]).long())

    def rates(self) -> tuple[torch.Tensor, ...]:
        return tuple((self.beaten < k).float().mean() for k in self.ks)


def scan(fm: FactoredMatrix, top: TopK | None, copy: Copying | None, chunk_rows: int | None,
         chunk_cols: int | None, filter_dtype) -> None:
    """One pass over ``fm`` feeding the top-k and the copying counts (either may be None).

    chunk_rows, chunk_cols: block size (None: KERNEL_ROWS rows on the kernel path, CHUNK_ROWS x
    CHUNK_COLS on the torch path; the kernels always take every column at once)."""
    blocks = Blocks(fm, chunk_rows, chunk_cols, filter_dtype)
    with _fp32_accumulation(blocks.A.device.type):
        _scan_blocks(blocks, top, copy)
        if copy is not None and blocks.packed is None:
            copy.finish(blocks)  # copying's exact pass over the rows the first tiles left open


@contextlib.contextmanager
def _fp32_accumulation(device_type: str):
    """cuBLAS may reduce bf16 products in bf16 (torch's default allows it), which the error bound
    does not cover: the scan turns that off while it runs."""
    if device_type != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul
    saved = flags.allow_bf16_reduced_precision_reduction
    flags.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        flags.allow_bf16_reduced_precision_reduction = saved


def _scan_blocks(blocks: Blocks, top: TopK | None, copy: Copying | None) -> None:
    for rows, a in blocks.blocks:
        margin = blocks.margin[rows]
        if blocks.packed is not None:
            group_max = kernels.group_maxima(a, blocks.packed)
            if top is not None:
                top.update_groups(blocks, rows, margin, group_max)
            if copy is not None:
                copy.update_groups(blocks, rows, margin, group_max)
            continue
        margin_max = float(margin.max())
        for t, (cols, approx) in enumerate(blocks.tiles(a)):
            if copy is not None and t == 0:
                copy.first_tile(blocks, rows, margin, approx)
            if top is None:
                break  # copying alone reads only the first tile here, then ``finish``
            top.update(blocks, rows, margin, margin_max, cols, approx)


def row_topk(fm: FactoredMatrix, k: int, filter_dtype="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of every row of a 2-D ``fm`` from group maxima: ``(values, indices)`` [m, k]; only
    where a kernel runs (``kernel_for``).

    Row i's k-th largest group maximum m_k marks k distinct entries whose true values are >= m_k -
    margin, so every entry of the row's true top k has v~ >= m_k - 2 margin, and so has its group.
    Only those groups (about k per row) are recomputed exactly, one small matmul per group; a row
    with more than ROW_GROUPS of them (ties, say) is computed whole.
    """
    blocks = Blocks(fm, None, None, filter_dtype)
    if blocks.packed is None:
        raise ValueError("row_topk needs a group-maximum kernel for this matrix (see kernel_for)")
    k = min(k, blocks.n)
    values = torch.empty(blocks.m, k, dtype=blocks.exact_dtype)
    indices = torch.empty(blocks.m, k, dtype=torch.long)
    for rows, a in blocks.blocks:
        group_max = kernels.group_maxima(a, blocks.packed).contiguous()  # [r, groups]
        n_groups = group_max.shape[1]
        floor = group_max.topk(min(k, n_groups), dim=1).values[:, -1] - 2 * blocks.margin[rows]
        cand = group_max >= floor[:, None]
        wide = cand.sum(1, dtype=torch.int32) > ROW_GROUPS
        ri, gi = (cand & ~wide[:, None]).nonzero().unbind(1)  # row-major: each row's groups together
        if len(ri):
            vals, slot_group = _candidate_values(blocks, rows, ri, gi)
            top = vals.topk(k, dim=1)
            group = slot_group.gather(1, top.indices // kernels.GROUP)
            values[rows], indices[rows] = top.values, blocks.group_cols[group, top.indices % kernels.GROUP]
        for part in wide.nonzero().squeeze(1).split(128):  # rows with many candidate groups: whole rows
            top = (blocks.A[rows[part]] @ blocks.Bt.T).topk(k, dim=1)
            values[rows[part]], indices[rows[part]] = top.values, top.indices
    return values, indices


def _candidate_values(blocks: Blocks, rows, ri, gi) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact values of every column of the (row position ri, group gi) pairs, one small matmul per
    group: ``(values [r, slots x GROUP], slot_group [r, slots])``, where a row's slots hold its groups
    in order and unused slots and padding columns hold -inf."""
    r = len(rows)
    starts = torch.searchsorted(ri, torch.arange(r))
    slot = torch.arange(len(ri)) - starts[ri]
    n_slots = int(slot.max()) + 1
    vals = torch.full((r, n_slots, kernels.GROUP), -math.inf, dtype=blocks.exact_dtype)
    slot_group = torch.zeros((r, n_slots), dtype=torch.long)
    slot_group[ri, slot] = gi
    n_real = (blocks.group_cols >= 0).sum(1).tolist()  # padding only ever ends the last group
    order = gi.argsort(stable=True)
    groups, counts = torch.unique_consecutive(gi[order], return_counts=True)
    for g, pairs in zip(groups.tolist(), order.split(counts.tolist())):
        real = n_real[g]
        vals[ri[pairs], slot[pairs], :real] = blocks.A[rows[ri[pairs]]] @ blocks.Bt[blocks.group_cols[g, :real]].T
    return vals.view(r, -1), slot_group
