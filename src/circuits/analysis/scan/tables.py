"""Tables read from a d_vocab x d_vocab circuit without ever building it.

Skip-trigram tables ("One layer": large QK entries pick (destination, source), large OV entries
pick (source, out)) and copying rates need the largest entries of ``M = A @ B``, a
``FactoredMatrix`` of rank d_head. The scan (``scan.scan`` over ``scan.blocks``) checks every entry of ``M`` in
bf16 with a rigorous error bound and recomputes exactly every entry that may matter, so the
results equal a dense fp32 computation while memory stays at one block of ``M``.
``filter_dtype=None`` scans in fp32 throughout; the default ``"auto"`` filters in bf16 only where
bf16 matmuls are fast (``precision.bf16_is_fast``): on an AVX2-only CPU they are ~100x slower
than fp32, and the fp32 scan is the fast one. Where they can, both scans run in small C kernels
(``circuits/kernels/group_max.py``: AMX, for bf16). Tests compare everything with dense ``torch.topk``
(``tests/analysis/test_scan.py``).
"""

from __future__ import annotations

import torch

from .blocks import kernel_for
from .scan import Copying, TopK, row_topk, scan
from circuits.analysis.factored import FactoredMatrix

KERNEL_MIN_ROWS = 4096  # below this, dense rows in torch are as fast as the group-maximum kernels


def _per_matrix(fm: FactoredMatrix, fn):
    """Apply ``fn`` to each matrix of a batched FactoredMatrix; stack results over the batch shape."""
    if fm.ndim == 2:
        return fn(fm)
    batch = fm.batch_shape
    A, B = fm.A.reshape(-1, *fm.A.shape[-2:]), fm.B.reshape(-1, *fm.B.shape[-2:])
    outs = [fn(FactoredMatrix(a, b)) for a, b in zip(A, B)]
    return tuple(torch.stack(parts).reshape(*batch, *parts[0].shape) for parts in zip(*outs))


@torch.no_grad()
def topk_circuit_entries(fm: FactoredMatrix, k: int, largest: bool = True, chunk_rows: int | None = None,
                         chunk_cols: int | None = None, filter_dtype: torch.dtype | None | str = "auto"):
    """The k largest (or smallest) entries of ``M = A @ B`` and where they are, never building M.

    fm: [..., m, n]. Returns ``(values, rows, cols)``, each [..., k], values sorted from the most
    extreme. For the OV circuit [out, src], (rows, cols) = (out, src); for QK [dst, src], (dst, src).
    """
    k = min(k, fm.shape[-1] * fm.shape[-2])

    def one(m: FactoredMatrix):
        top = TopK(k)
        scan(m if largest else -m, top, None, chunk_rows, chunk_cols, filter_dtype)
        return (top.values if largest else -top.values), top.rows, top.cols

    return _per_matrix(fm, one)


@torch.no_grad()
def copying_rates(ov: FactoredMatrix, ks: tuple[int, ...] = (1, 5), chunk_rows: int | None = None,
                  chunk_cols: int | None = None, filter_dtype: torch.dtype | None | str = "auto"
                  ) -> tuple[torch.Tensor, ...]:
    """Fraction of source tokens whose top-K OV outputs include themselves, one rate per K in ks.

    ov: the OV circuit [..., d_vocab(out), d_vocab(src)] ("One layer", copying). Source s's
    outputs are column s; s counts for K when fewer than K other tokens have a strictly larger
    entry than ``ov[s, s]`` (ties count in s's favour). Returns tensors of shape [...] per K.
    """
    def one(m: FactoredMatrix):
        copy = Copying(ks, m.shape[-1])
        scan(m.T, None, copy, chunk_rows, chunk_cols, filter_dtype)
        return copy.rates()

    return _per_matrix(ov, one)


@torch.no_grad()
def scan_ov_circuit(ov: FactoredMatrix, k: int = 100, ks: tuple[int, ...] = (1, 5), chunk_rows: int | None = None,
                    chunk_cols: int | None = None, filter_dtype: torch.dtype | None | str = "auto"
                    ) -> tuple[torch.Tensor, ...]:
    """``topk_circuit_entries(ov, k)`` and ``copying_rates(ov, ks)`` in one pass over the tiles.

    Returns ``(values, out, src, *rates)``: values/out/src [..., k], one rate tensor [...] per K.
    """
    k = min(k, ov.shape[-1] * ov.shape[-2])

    def one(m: FactoredMatrix):
        top, copy = TopK(k), Copying(ks, m.shape[-1])
        scan(m.T, top, copy, chunk_rows, chunk_cols, filter_dtype)  # rows of ovᵀ are sources
        return (top.values, top.cols, top.rows, *copy.rates())

    return _per_matrix(ov, one)


@torch.no_grad()
def topk_per_row(fm: FactoredMatrix, k: int, rows: torch.Tensor | None = None, largest: bool = True,
                 chunk_rows: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k entries of each selected row of ``M = A @ B`` (exact fp32).

    fm: [..., m, n]; rows: [r] (default all). Returns ``(values, indices)`` [..., r, k].
    Source -> top outputs (OV) is ``topk_per_row(ov.T, k)``; source -> top destinations (QK)
    is ``topk_per_row(qk.T, k)``, since both circuits are indexed [.., src] in their columns.
    Many rows on a CPU with a group-maximum kernel: ``scan.row_topk``; otherwise dense
    rows, ``chunk_rows`` at a time.
    """
    rows = torch.arange(fm.shape[-2]) if rows is None else torch.as_tensor(rows)
    sign = 1.0 if largest else -1.0
    if len(rows) >= KERNEL_MIN_ROWS and kernel_for(fm) is not None:
        vals, idx = _per_matrix(FactoredMatrix(sign * fm.A[..., rows, :], fm.B), lambda m: row_topk(m, k))
        return sign * vals, idx
    vals, idx = [], []
    for start in range(0, len(rows), chunk_rows):
        top = fm.rows(rows[start:start + chunk_rows]).topk(min(k, fm.shape[-1]), dim=-1, largest=largest)
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
