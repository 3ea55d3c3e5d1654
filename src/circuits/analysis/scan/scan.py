"""The scan behind ``tables``: every entry of ``M = A @ B`` checked, none stored.

``blocks.Blocks`` gives ``M`` block by block in bf16 (or fp32) with a rigorous error bound
per row; the consumers here keep what they need and recompute exactly every entry that may
matter: ``TopK`` (the k largest entries of the whole matrix), ``Copying`` (is each row's diagonal
among its top K?) and ``row_topk`` (the top k of every row). Results equal a dense fp32
computation; ``tests/analysis/test_scan.py`` compares them with dense ``torch.topk``.
"""

from __future__ import annotations

import functools
import math

import torch

from circuits.kernels import group_max as kernels
from .blocks import (KEYS, Blocks, fp32_accumulation, key_above, key_at_least, upper_bound)
from circuits.analysis.factored import FactoredMatrix

GROUPS = 8  # column groups per row whose maxima settle copying rows in a torch tile
ROW_GROUPS = 32  # candidate groups a row may have in row_topk before it is computed whole


def _count_true(mask: torch.Tensor) -> torch.Tensor:
    """Per-row count of a bool matrix [r, c] as int64; summed in int16 where it fits (6x faster on CPU)."""
    return mask.sum(1, dtype=torch.int16 if mask.shape[1] < 2 ** 15 else torch.int32).long()


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
        return int(key_at_least(torch.tensor(lo, dtype=torch.float64), dtype))

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
        keys = approx.view(KEYS[approx.dtype])
        lo = thr - margin_max  # no entry of the tile matters unless its approximate value is >= lo
        if lo > 0 and int(keys.amax()) < self._key(lo, approx.dtype):
            return  # the usual case: one integer maximum dismisses the whole tile
        row_max = upper_bound(keys.amax(1), approx.dtype, margin.dtype)
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
        key = torch.where(hi >= 0, key_above(hi.clamp_min(0), approx.dtype), -1)
        # GROUPS maxima per row are 10x cheaper than counting every entry and settle nearly as many rows
        w = max(1, approx.shape[1] // GROUPS)
        g = approx.shape[1] // w
        group_max = approx[:, : g * w].view(KEYS[approx.dtype]).view(len(rows), g, w).amax(2)
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
                    cand = approx.view(KEYS[approx.dtype]) >= key_at_least(lo, approx.dtype)[:, None]
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
    with fp32_accumulation(blocks.A.device.type):
        _scan_blocks(blocks, top, copy)
        if copy is not None and blocks.packed is None:
            copy.finish(blocks)  # copying's exact pass over the rows the first tiles left open


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
    order = gi.argsort(stable=True)
    groups, counts = torch.unique_consecutive(gi[order], return_counts=True)
    for g, pairs in zip(groups.tolist(), order.split(counts.tolist())):
        real = blocks.group_width[g]
        vals[ri[pairs], slot[pairs], :real] = blocks.A[rows[ri[pairs]]] @ blocks.Bt[blocks.group_cols[g, :real]].T
    return vals.view(r, -1), slot_group
