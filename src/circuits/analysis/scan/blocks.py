"""Blocks of ``M = A @ B`` for the circuit scans (``scan``): approximate values with rigorous bounds.

``M`` (a d_vocab x d_vocab circuit of rank d_head) is approximated in bf16 block by block and
reduced on the fly; only entries whose approximation may clear a threshold are recomputed
exactly (fp32 dot products of the fp32 factors). Each approximate value carries a rigorous
per-row error bound ``margin[i]`` (``rounding_margin``): with Ã, B̃ the bf16 factors,

    |v~[i, j] - M[i, j]|  <=  ||A[i] - Ã[i]|| max_j ||B_j|| + ||Ã[i]|| max_j ||B_j - B̃_j||
                              + (γ_k + u_out) ||Ã[i]|| max_j ||B̃_j||            =: margin[i]

(Cauchy-Schwarz on the actual rounding residuals; γ_k for fp32 accumulation, u_out = 2^-8 where
the output is rounded to bf16; a tiny absolute term covers subnormals, which AMX flushes to
zero), so the results equal a dense fp32 computation. In exact mode (``filter_dtype=None``, used
where bf16 matmuls are slow) the blocks are fp32 and the bound is that of fp32 rounding.

Two ways to produce the blocks:
  - ``group_max.group_maxima`` (a C kernel: bf16 on CPUs with AMX): the
    maximum of every group of 64 columns per row, straight from the registers (0.14 s a circuit at
    GPT-2's vocabulary on 2 cores with AMX);
  - torch matmuls into one reused tile of ``chunk_rows x chunk_cols`` values, dismissed as a
    whole by one maximum taken over the tile's bits read as integers (``KEYS``: for floats >= +0
    the bit patterns order like the values, and an integer maximum is 5-10x faster than a bf16
    one on CPU; negative floats have negative keys, so a maximum key below zero only says "every
    entry is negative", which 0 bounds from above).
Rows and columns are visited in order of decreasing norm: entries scale with ||A[i]|| ||B[:, j]||,
so the largest come first and a top-k threshold is high from the first block on.
"""

from __future__ import annotations

import contextlib

import torch

from circuits.kernels import group_max as kernels
from circuits.analysis.factored import FactoredMatrix
from circuits.kernels.precision import bf16_is_fast

MARGIN_FACTOR = 2.0 ** -6  # >= the worst-case bf16 error relative to ||A[i]|| max_j ||B[:, j]|| (used where
# fp32 matmuls may round to TF32 or bf16 internally; the bf16 filter uses the residuals, rounding_margin)
CHUNK_ROWS, CHUNK_COLS = 2048, 512  # a 2 MB bf16 tile (torch path), in L2 on the 2-core machines
KERNEL_ROWS = 8192  # rows per kernel call: group maxima of 8192 rows are 26 MB at GPT-2's vocabulary
EXACT_BATCH = 1 << 16  # exact entries per gather: 32 MB of factor rows at width 64
KEYS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32,
        torch.float64: torch.int64}  # same-width integers whose order matches floats >= +0


def upper_bound(max_key: torch.Tensor, dtype: torch.dtype, exact: torch.dtype) -> torch.Tensor:
    """An upper bound on the largest value from the largest integer key: exact when it is >= 0."""
    return max_key.clamp_min(0).view(dtype).to(exact)


def key_above(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key of the largest ``dtype`` value <= t (t >= 0): ``v > t`` iff ``key(v) > key_above(t)``."""
    x = t.to(dtype)
    return x.view(KEYS[dtype]) - (x.to(t.dtype) > t).to(KEYS[dtype])


def key_at_least(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key of the smallest ``dtype`` value >= t (t > 0): ``v >= t`` iff ``key(v) >= key_at_least(t)``."""
    x = t.to(dtype)
    return x.view(KEYS[dtype]) + (x.to(t.dtype) < t).to(KEYS[dtype])


def rounding_margin(A: torch.Tensor, A_lo: torch.Tensor, Bt: torch.Tensor, Bt_lo: torch.Tensor,
                    b_max: torch.Tensor, rounded_output: bool) -> torch.Tensor:
    """Per-row bound on |v~[i, j] - M[i, j]| for values multiplied from rounded factors [m].

    With Ã, B̃ the rounded factors (their products are exact in fp32) and dA = A - Ã, dB = B - B̃:
    M - Ã B̃ = dA B + Ã dB, so by Cauchy-Schwarz on the actual rounding residuals

        |v~ - M| <= ||dA[i]|| max_j ||B_j|| + ||Ã[i]|| max_j ||dB_j|| + (γ_k + u_out (1 + γ_k)) ||Ã[i]|| max_j ||B̃_j||

    (γ_k = k 2^-24 / (1 - k 2^-24): fp32 accumulation in any order; u_out = 2^-8 where the output is
    rounded to bf16; b_max = max_j ||B_j||, which the caller has). The residuals are about 2^-9 of the factors, so this is 10-15x tighter than
    the worst case MARGIN_FACTOR and lets far fewer entries through to the exact recheck.
    """
    exact = A.dtype
    At, Bt_t = A_lo.to(exact), Bt_lo.to(exact)
    k = A.shape[1]
    gamma = k * 2.0 ** -24 / (1 - k * 2.0 ** -24)
    u_out = 2.0 ** -8 if rounded_output else 0.0
    db_max, bt_max = ((Bt - Bt_t).norm(dim=1).max(), Bt_t.norm(dim=1).max()) if len(Bt) else (b_max, b_max)
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
            margin = rounding_margin(self.A, self.A_lo, self.Bt, Bt_lo, col_max, rounded_output=kind is None)
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
            self.group_width = (self.group_cols >= 0).sum(1).tolist()  # real columns; padding ends the last group
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


@contextlib.contextmanager
def fp32_accumulation(device_type: str):
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
