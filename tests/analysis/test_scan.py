"""Chunked, bf16-filtered tables of a factored circuit against dense torch.topk.

Every case runs on each scan path that this CPU has: torch tiles in bf16 and in fp32 (exact mode),
and the AMX kernel of ``circuits/kernels/group_max.py`` (bf16).
"""

import pytest
import torch

from circuits.kernels import group_max
from circuits.analysis.scan.tables import (copying_rates, diagonal_stats, scan_ov_circuit, topk_circuit_entries,
                                     topk_per_row)
from circuits.analysis.factored import FactoredMatrix


def _kernel(kind):
    return pytest.mark.skipif(not group_max.available(kind), reason=f"no {kind} kernel here (CPU or C compiler)")


FILTERS = [pytest.param(torch.bfloat16, id="bf16-torch"), pytest.param("amx", id="bf16-amx", marks=_kernel("amx")),
           pytest.param(None, id="fp32-torch")]


@pytest.fixture
def path(monkeypatch):
    """``path(filter)`` -> the filter_dtype to pass, with every C kernel but the one asked for switched off."""
    def choose(filter_dtype):
        kind = filter_dtype if isinstance(filter_dtype, str) else None
        monkeypatch.setattr(group_max, "kind_for",
                            lambda dtype, inner_dim: kind if kind and group_max.KINDS[kind][0] == dtype else None)
        return {"amx": torch.bfloat16}.get(kind, filter_dtype)
    return choose


def random_fm(batch=(), m=150, k=6, n=131, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return FactoredMatrix(scale * torch.randn(*batch, m, k, generator=g), torch.randn(*batch, k, n, generator=g))


def copying_fm(n=120, k=8, strength=1.5, seed=0):
    """A square circuit whose diagonal is raised for many tokens (some rows undecided for the filter)."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(k, n, generator=g)
    A = strength * B.T + torch.randn(n, k, generator=g)
    return FactoredMatrix(A, B)


def dense_copying(ov_dense: torch.Tensor, K: int) -> float:
    """Rate over sources s (columns) where fewer than K other outputs beat ov[s, s]."""
    n = ov_dense.shape[-1]
    d = ov_dense.diagonal()
    beaten = (ov_dense > d[None, :]).sum(0)  # per column; the diagonal never beats itself
    return float((beaten < K).float().mean()) if n else 0.0


@pytest.mark.parametrize("filter_dtype", FILTERS)
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("tile", [(1, 512), (37, 13), (4096, 4096), (5, 1)])
def test_topk_entries_match_dense(path, filter_dtype, largest, tile):
    fm = random_fm()
    M = fm.dense()
    vals, rows, cols = topk_circuit_entries(fm, 25, largest=largest, chunk_rows=tile[0], chunk_cols=tile[1],
                                            filter_dtype=path(filter_dtype))
    want = M.flatten().topk(25, largest=largest)
    torch.testing.assert_close(vals, want.values)
    n = M.shape[1]
    assert set((rows * n + cols).tolist()) == set(want.indices.tolist())
    torch.testing.assert_close(M[rows, cols], vals)


@pytest.mark.parametrize("filter_dtype", FILTERS)
@pytest.mark.parametrize("scale", [1e-39, 1e-30, 1e-18, 1e18])
def test_topk_entries_any_scale(path, filter_dtype, scale):
    fm = random_fm(scale=scale, seed=3)
    vals, rows, cols = topk_circuit_entries(fm, 10, chunk_rows=16, chunk_cols=20, filter_dtype=path(filter_dtype))
    M = fm.dense()
    want = M.flatten().topk(10)
    torch.testing.assert_close(vals, want.values, rtol=1e-5, atol=0)  # relative: the values are tiny or huge
    assert set((rows * M.shape[1] + cols).tolist()) == set(want.indices.tolist())


@pytest.mark.parametrize("filter_dtype", FILTERS)
def test_topk_entries_with_ties_and_batch(path, filter_dtype):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(2, 40, 4, generator=g).round()  # integer factors: many exactly equal entries
    B = torch.randn(2, 4, 50, generator=g).round()
    A[:, 20:] = A[:, :20]  # duplicated rows
    fm = FactoredMatrix(A, B)
    vals, rows, cols = topk_circuit_entries(fm, 30, chunk_rows=7, chunk_cols=9, filter_dtype=path(filter_dtype))
    assert vals.shape == rows.shape == cols.shape == (2, 30)
    M = fm.dense()
    for h in range(2):
        torch.testing.assert_close(vals[h], M[h].flatten().topk(30).values)
        torch.testing.assert_close(M[h][rows[h], cols[h]], vals[h])
        assert len(set(zip(rows[h].tolist(), cols[h].tolist()))) == 30


def test_topk_k_larger_than_matrix():
    fm = random_fm(m=4, n=3)
    vals, _, _ = topk_circuit_entries(fm, 100)
    torch.testing.assert_close(vals, fm.dense().flatten().sort(descending=True).values)


@pytest.mark.parametrize("filter_dtype", FILTERS)
@pytest.mark.parametrize("strength", [0.0, 0.7, 3.0])
@pytest.mark.parametrize("chunk_cols", [11, 512])
def test_copying_rates_match_dense(path, filter_dtype, strength, chunk_cols):
    ov = copying_fm(strength=strength)
    top1, top5 = copying_rates(ov, chunk_rows=23, chunk_cols=chunk_cols, filter_dtype=path(filter_dtype))
    M = ov.dense()
    assert float(top1) == dense_copying(M, 1)
    assert float(top5) == dense_copying(M, 5)
    if strength == 3.0:
        assert float(top1) > 0.3  # many rows are decided exactly, not by the bf16 filter


def test_copying_rates_use_columns_as_sources():
    """A matrix whose diagonal tops every column but not every row: rates must read columns."""
    M = torch.tensor([[5.0, 0.0, 0.0], [9.0, 4.0, 0.0], [9.0, 0.0, 3.0]])
    U, S, Vh = torch.linalg.svd(M)
    ov = FactoredMatrix(U * S, Vh)
    (top1,) = copying_rates(ov, ks=(1,))
    assert float(top1) == pytest.approx(2 / 3)  # column 0: 9 > 5 beats it; columns 1, 2: diagonal wins
    (top1_rows,) = copying_rates(ov.T, ks=(1,))
    assert float(top1_rows) == pytest.approx(1 / 3)


@pytest.mark.parametrize("filter_dtype", FILTERS)
def test_copying_rates_batched_and_fused_scan(path, filter_dtype):
    g = torch.Generator().manual_seed(2)
    B = torch.randn(3, 6, 90, generator=g)
    ov = FactoredMatrix(torch.tensor([0.0, 1.0, 3.0])[:, None, None] * B.mT + torch.randn(3, 90, 6, generator=g), B)
    filter_dtype = path(filter_dtype)
    top1, top5 = copying_rates(ov, chunk_rows=32, filter_dtype=filter_dtype)
    assert top1.shape == top5.shape == (3,)
    vals, out, src, f1, f5 = scan_ov_circuit(ov, k=12, chunk_rows=32, chunk_cols=7, filter_dtype=filter_dtype)
    torch.testing.assert_close(f1, top1)
    torch.testing.assert_close(f5, top5)
    v2, o2, s2 = topk_circuit_entries(ov, 12, filter_dtype=filter_dtype)
    torch.testing.assert_close(vals, v2)
    M = ov.dense()
    for h in range(3):
        assert float(top1[h]) == dense_copying(M[h], 1) and float(top5[h]) == dense_copying(M[h], 5)
        torch.testing.assert_close(M[h][out[h], src[h]], vals[h])


def test_topk_per_row():
    fm = random_fm(batch=(2,))
    M = fm.dense()
    rows = torch.tensor([5, 0, 149])
    vals, idx = topk_per_row(fm, 4, rows=rows, chunk_rows=2)
    want = M[:, rows].topk(4, dim=-1)
    torch.testing.assert_close(vals, want.values)
    assert torch.equal(idx, want.indices)
    vals, idx = topk_per_row(fm, 3, largest=False, chunk_rows=64)
    torch.testing.assert_close(vals, M.topk(3, dim=-1, largest=False).values)


def test_diagonal_stats():
    ov = FactoredMatrix(*[t.double() for t in (copying_fm(strength=2.0).A, copying_fm(strength=2.0).B)])
    M = ov.dense()
    stats = diagonal_stats(ov)
    torch.testing.assert_close(stats["mean"], M.mean())
    torch.testing.assert_close(stats["std"], M.std(unbiased=False))
    torch.testing.assert_close(stats["diag_mean"], M.diagonal().mean())
    assert stats["diag_z"] > 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_keys_order_like_values(dtype):
    """The integer keys of the scan (circuit_blocks): v > t iff key(v) > key_above(t) for t >= 0,
    and v >= t iff key(v) >= key_at_least(t) for t > 0, for values of either sign."""
    from circuits.analysis.scan.blocks import KEYS, key_above, key_at_least, upper_bound

    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(4000, generator=g), torch.tensor([0.0, -0.0, 1e-40, -1e-40])]).to(dtype)
    t = torch.cat([torch.rand(300, generator=g) * 3, v[:50].float().abs(), torch.tensor([1e-41, 0.0])]).double()
    keys = v.view(KEYS[dtype])
    above = key_above(t, dtype)
    assert torch.equal(keys[None, :] > above[:, None], v.double()[None, :] > t[:, None])
    pos = t > 0
    at_least = key_at_least(t[pos], dtype)
    assert torch.equal(keys[None, :] >= at_least[:, None], v.double()[None, :] >= t[pos][:, None])
    for x in (v, -v.abs()):  # the bound from the largest key: exact when some entry is >= +0
        assert float(upper_bound(x.view(KEYS[dtype]).amax(), dtype, torch.float64)) >= float(x.double().max())
    assert float(upper_bound(keys.amax(), dtype, torch.float64)) == float(v.double().max())


def test_fp32_scan_allows_for_reduced_precision_matmuls(monkeypatch):
    """With torch's fp32 matmul precision below "highest", the fp32 scan's error bound widens to bf16's."""
    from circuits.analysis.scan.blocks import MARGIN_FACTOR, Blocks

    fm = random_fm()
    tight = Blocks(fm, None, None, None).margin
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")
    wide = Blocks(fm, None, None, None).margin
    norms = fm.A.norm(dim=1) * fm.B.norm(dim=0).max()
    assert torch.all(wide >= MARGIN_FACTOR * norms) and torch.all(tight < MARGIN_FACTOR * norms / 100)


KERNELS = [p for p in FILTERS if p.id in ("bf16-amx", "fp32-avx2")]


@pytest.mark.parametrize("filter_dtype", KERNELS)
@pytest.mark.parametrize("k", [1, 4, 70, 500])
@pytest.mark.parametrize("row_groups", [32, 1])
def test_row_topk_matches_dense(monkeypatch, path, filter_dtype, k, row_groups):
    """Per-row top-k from group maxima (circuit_scan.row_topk), groups of 64 columns: k below, near
    and above the number of groups and columns, rows with exactly tied entries, and rows computed
    whole (more than ROW_GROUPS candidate groups)."""
    from circuits.analysis.scan import scan as circuit_scan
    from circuits.analysis.scan.scan import row_topk

    monkeypatch.setattr(circuit_scan, "ROW_GROUPS", row_groups)
    fm = random_fm(m=150, n=131, seed=k)
    fm.A[7] = 0.0  # a row of zeros: every entry ties
    vals, idx = row_topk(fm, k, filter_dtype=path(filter_dtype))
    M = fm.dense()
    want = M.topk(min(k, M.shape[1]), dim=-1)
    torch.testing.assert_close(vals, want.values)
    torch.testing.assert_close(M.gather(1, idx), want.values)  # ties may pick other columns of equal value
    assert all(len(set(r)) == len(r) for r in idx.tolist())


@pytest.mark.parametrize("largest", [True, False])
def test_topk_per_row_on_the_kernel_path(monkeypatch, largest):
    from circuits.analysis.scan import tables as circuit_tables

    if circuit_tables.kernel_for(random_fm()) is None:
        pytest.skip("no group-maximum kernel for the default scan here")
    monkeypatch.setattr(circuit_tables, "KERNEL_MIN_ROWS", 1)
    fm = random_fm(batch=(2,))
    rows = torch.tensor([5, 0, 149, 5])
    vals, idx = topk_per_row(fm, 4, rows=rows, largest=largest)
    want = fm.dense()[:, rows].topk(4, dim=-1, largest=largest)
    torch.testing.assert_close(vals, want.values)
    assert torch.equal(idx, want.indices)
