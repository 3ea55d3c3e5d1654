"""FactoredMatrix against the dense product on small sizes."""

import pytest
import torch

from circuits.analysis.factored import FactoredMatrix


def factors(batch=(3,), m=7, k=3, n=7, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, m, k, generator=g, dtype=dtype),
            torch.randn(*batch, k, n, generator=g, dtype=dtype))


def same_multiset(got: torch.Tensor, want: torch.Tensor, tol=1e-8):
    """Every value of ``got`` matched to a distinct nearest value of ``want``."""
    want = list(want.tolist())
    for z in got.tolist():
        dist = [abs(z - w) for w in want]
        i = min(range(len(want)), key=dist.__getitem__)
        assert dist[i] < tol, (z, want)
        want.pop(i)


def test_dense_shape_transpose_and_scalars():
    A, B = factors(batch=(2, 3), m=5, k=2, n=4)
    fm = FactoredMatrix(A, B)
    assert fm.shape == (2, 3, 5, 4) and fm.inner_dim == 2 and fm.ndim == 4
    torch.testing.assert_close(fm.dense(), A @ B)
    torch.testing.assert_close(fm.T.dense(), (A @ B).mT)
    torch.testing.assert_close((-fm).dense(), -(A @ B))
    torch.testing.assert_close((2.5 * fm).dense(), 2.5 * (A @ B))
    torch.testing.assert_close(fm.unsqueeze(1).dense(), (A @ B).unsqueeze(1))


def test_batch_dims_broadcast():
    A = torch.randn(3, 1, 5, 2, dtype=torch.float64)
    B = torch.randn(4, 2, 6, dtype=torch.float64)
    fm = FactoredMatrix(A, B)
    assert fm.shape == (3, 4, 5, 6)
    torch.testing.assert_close(fm.dense(), A @ B)


def test_matmul_keeps_inner_dim_small():
    A, B = factors(m=6, k=2, n=5)
    C, D = factors(m=5, k=3, n=4, seed=1)
    fm, other = FactoredMatrix(A, B), FactoredMatrix(C, D)
    prod = fm @ other
    assert prod.inner_dim == 2
    torch.testing.assert_close(prod.dense(), A @ B @ C @ D)
    prod2 = other.T @ fm.T  # inner 3 on the left, 2 on the right
    assert prod2.inner_dim == 2
    torch.testing.assert_close(prod2.dense(), (A @ B @ C @ D).mT)
    M = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close((fm @ M).dense(), A @ B @ M)
    L = torch.randn(9, 6, dtype=torch.float64)
    torch.testing.assert_close((L @ fm).dense(), L @ A @ B)
    v, w = torch.randn(5, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(fm @ v, (A @ B) @ v)
    torch.testing.assert_close(w @ fm, w @ (A @ B))


def test_eigenvalues_are_the_nonzero_spectrum():
    A, B = factors(m=9, k=3, n=9)
    fm = FactoredMatrix(A, B)
    lam = fm.eigenvalues()
    assert lam.shape == (3, 3) and lam.dtype == torch.complex128
    for h in range(3):
        dense = torch.linalg.eigvals(A[h] @ B[h])
        nonzero = dense[dense.abs() > 1e-9]
        assert len(nonzero) == 3
        same_multiset(lam[h], nonzero)


def test_eigenvalues_need_square():
    A, B = factors(m=5, k=2, n=4)
    with pytest.raises(ValueError, match="square"):
        FactoredMatrix(A, B).eigenvalues()


@pytest.mark.parametrize("m,k,n", [(8, 3, 6), (8, 5, 4), (3, 5, 7)])
def test_svd_reconstructs_and_matches_singular_values(m, k, n):
    A, B = factors(m=m, k=k, n=n)
    U, S, Vh = FactoredMatrix(A, B).svd()
    r = min(m, k, n)
    assert U.shape == (3, m, r) and S.shape == (3, r) and Vh.shape == (3, r, n)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, A @ B)
    torch.testing.assert_close(S, torch.linalg.svdvals(A @ B)[..., :r])
    torch.testing.assert_close(U.mT @ U, torch.eye(r, dtype=A.dtype).expand(3, r, r))
    assert (S[..., :-1] >= S[..., 1:]).all()


def test_frobenius_norm():
    for dtype in (torch.float32, torch.float64):
        A, B = factors(m=11, k=4, n=6, dtype=dtype)
        norm = FactoredMatrix(A, B).norm()
        assert norm.dtype == dtype
        torch.testing.assert_close(norm, torch.linalg.matrix_norm(A @ B))


def test_diag_block_rows_entries_and_getitem():
    A, B = factors(m=7, k=3, n=7)
    fm, M = FactoredMatrix(A, B), A @ B
    torch.testing.assert_close(fm.diag(), M.diagonal(dim1=-2, dim2=-1))
    torch.testing.assert_close(fm.rows(torch.tensor([4, 1])), M[:, [4, 1], :])
    torch.testing.assert_close(fm.block([0, 6], [2, 3, 5]), M[:, [0, 6]][:, :, [2, 3, 5]])
    torch.testing.assert_close(fm.entries(torch.tensor([0, 6, 3]), torch.tensor([2, 2, 4])), M[:, [0, 6, 3], [2, 2, 4]])
    assert isinstance(fm[1], FactoredMatrix)
    torch.testing.assert_close(fm[1].dense(), M[1])
    torch.testing.assert_close(fm[1, 2:5], M[1, 2:5])
    torch.testing.assert_close(fm[1, :, 3], M[1, :, 3])
    torch.testing.assert_close(fm[-1, -1, -2], M[-1, -1, -2])
    torch.testing.assert_close(fm[0, 3], M[0, 3])
    torch.testing.assert_close(fm[[0, 2], 1:3, [6, 0]], M[[0, 2]][:, 1:3][:, :, [6, 0]])
    with pytest.raises(IndexError):
        fm[0, 0, 0, 0]


def test_rejects_mismatched_factors():
    with pytest.raises(ValueError, match="inner"):
        FactoredMatrix(torch.randn(4, 3), torch.randn(2, 5))
