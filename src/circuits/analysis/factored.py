"""A low-rank matrix product ``A @ B`` kept as its two factors.

Every circuit of the paper is a product whose middle is thin: the OV circuit
``W_U W_OV^h W_E`` is d_vocab x d_vocab (10 GB in fp32 at GPT-2's vocabulary) but has rank at
most d_head (64). ``FactoredMatrix(A, B)`` stores ``A [..., m, k]`` and ``B [..., k, n]`` and answers
questions about ``M = A @ B`` from the factors, in time and memory linear in m + n:

    eigenvalues     nonzero spectrum of A B  ==  spectrum of the k x k cyclic product  B A
    svd             A = Qa Ra,  Bᵀ = Qb Rb  =>  A B = Qa (Ra Rbᵀ) Qbᵀ; SVD of the k x k core
    norm            ||A B||_F^2 = tr((AᵀA)(BBᵀ))           (two k x k Gram matrices)
    diag            M[i, i] = A[i, :] . B[:, i]             (row-wise dot products)
    block, entries  only the requested rows and columns are multiplied out

Leading dimensions (heads, layers) broadcast as in ``torch.matmul``. Tests compare every method
with the dense ``A @ B`` on small sizes (``tests/analysis/test_factored.py``).
"""

from __future__ import annotations

import torch

Index = int | slice | torch.Tensor | list


class FactoredMatrix:
    """``M = A @ B`` with ``A [..., m, k]``, ``B [..., k, n]``; ``k`` (the inner dimension) is small."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor):
        if A.ndim < 2 or B.ndim < 2:
            raise ValueError(f"factors must be at least 2-D, got A {tuple(A.shape)} and B {tuple(B.shape)}")
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"inner dimensions differ: A {tuple(A.shape)} @ B {tuple(B.shape)}")
        batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        self.A = A.expand(*batch, *A.shape[-2:])  # [..., m, k] (expand is a view: no copy)
        self.B = B.expand(*batch, *B.shape[-2:])  # [..., k, n]

    # ---- shape -------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return self.A.shape[:-2]

    @property
    def shape(self) -> torch.Size:
        """``(*batch, m, n)``: the shape of the dense matrix this object stands for."""
        return torch.Size((*self.batch_shape, self.A.shape[-2], self.B.shape[-1]))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def inner_dim(self) -> int:
        """k: the rank bound, and the size of every small matrix the methods build."""
        return self.A.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.A.dtype

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, inner_dim={self.inner_dim}, dtype={self.dtype})"

    # ---- algebra -----------------------------------------------------------------------------
    @property
    def T(self) -> "FactoredMatrix":
        """(A B)ᵀ = Bᵀ Aᵀ, transposing the last two dimensions only."""
        return FactoredMatrix(self.B.mT, self.A.mT)

    def __neg__(self) -> "FactoredMatrix":
        return FactoredMatrix(-self.A, self.B)

    def __mul__(self, scalar: float) -> "FactoredMatrix":
        """Scale by a number (or a tensor broadcasting against the batch dimensions, shape [..., 1, 1])."""
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    def __matmul__(self, other: "torch.Tensor | FactoredMatrix"):
        """``self @ other``. A vector [n] gives a dense [..., m]; a matrix [..., n, p] or a
        FactoredMatrix gives a FactoredMatrix whose inner dimension is the smaller of the two."""
        if isinstance(other, FactoredMatrix):
            if self.inner_dim <= other.inner_dim:
                return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
            return FactoredMatrix(self.A @ (self.B @ other.A), other.B)
        if other.ndim == 1:
            return (self.A @ (self.B @ other).unsqueeze(-1)).squeeze(-1)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: torch.Tensor):
        """``other @ self``. A vector [m] gives a dense [..., n]; a matrix [..., p, m] a FactoredMatrix."""
        if other.ndim == 1:
            return ((other @ self.A).unsqueeze(-2) @ self.B).squeeze(-2)
        return FactoredMatrix(other @ self.A, self.B)

    def unsqueeze(self, dim: int) -> "FactoredMatrix":
        """Insert a batch dimension of size 1 at ``dim`` (0 <= dim <= number of batch dimensions)."""
        if not 0 <= dim <= len(self.batch_shape):
            raise IndexError(f"unsqueeze needs 0 <= dim <= {len(self.batch_shape)}, got {dim}")
        return FactoredMatrix(self.A.unsqueeze(dim), self.B.unsqueeze(dim))

    def dense(self) -> torch.Tensor:
        """The full matrix [..., m, n]: for tests and small sizes only."""
        return self.A @ self.B

    # ---- spectra and norms -------------------------------------------------------------------
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the square ``A B`` [..., k] (complex128), from the k x k product ``B A``.

        ``AB`` and ``BA`` share their nonzero eigenvalues (with multiplicity); ``AB`` has
        m - k further zeros, which are not returned. ``BA`` is formed in the factors' dtype (no
        float64 copy of a d_vocab-long factor), its eigenvalues in float64.
        """
        if self.shape[-1] != self.shape[-2]:
            raise ValueError(f"eigenvalues need a square matrix, got shape {tuple(self.shape)}")
        return torch.linalg.eigvals((self.B @ self.A).double())

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``A B = U diag(S) Vh``: U [..., m, r], S [..., r] (descending), Vh [..., r, n],
        r = min(m, k, n). QR of each factor, then the SVD of the small core ``Ra Rbᵀ``."""
        Qa, Ra = torch.linalg.qr(self.A)  # A  = Qa Ra,  Qa [m, min(m,k)]
        Qb, Rb = torch.linalg.qr(self.B.mT)  # Bᵀ = Qb Rb,  Qb [n, min(n,k)]
        U, S, Vh = torch.linalg.svd(Ra @ Rb.mT, full_matrices=False)
        return Qa @ U, S, Vh @ Qb.mT

    def norm(self) -> torch.Tensor:
        """Frobenius norm [...]: ``||A B||_F^2 = tr((AᵀA)(BBᵀ))`` from two k x k Gram matrices."""
        A, B = self.A.double(), self.B.double()
        sq = ((A.mT @ A) * (B @ B.mT)).sum(dim=(-2, -1))  # both Grams symmetric: tr(XY) = sum(X * Y)
        return sq.clamp_min(0).sqrt().to(self.dtype)

    # ---- parts of the matrix -----------------------------------------------------------------
    def diag(self) -> torch.Tensor:
        """The diagonal [..., m] of a square ``A B``: ``M[i, i] = A[i, :] . B[:, i]``."""
        if self.shape[-1] != self.shape[-2]:
            raise ValueError(f"diag needs a square matrix, got shape {tuple(self.shape)}")
        return (self.A * self.B.mT).sum(-1)

    def block(self, rows: Index = slice(None), cols: Index = slice(None)) -> torch.Tensor:
        """Dense ``M[..., rows, cols]``: the outer block of the selected rows and columns.

        An int removes that dimension; a 1-D tensor or list selects rows (columns) in order.
        Unlike numpy, two index arrays select a block, not paired entries (see ``entries``).
        """
        drop_row, drop_col = isinstance(rows, int), isinstance(cols, int)
        if drop_row:
            rows = [rows]
        if drop_col:
            cols = [cols]
        out = self.A[..., rows, :] @ self.B[..., :, cols]
        if drop_col:
            out = out.squeeze(-1)
        if drop_row:
            out = out.squeeze(-2 if not drop_col else -1)
        return out

    def rows(self, idx: Index) -> torch.Tensor:
        """Dense ``M[..., idx, :]``."""
        return self.block(idx, slice(None))

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Paired entries ``M[..., rows[i], cols[i]]`` [..., len(rows)], one dot product each."""
        return (self.A[..., rows, :] * self.B[..., :, cols].mT).sum(-1)

    def __getitem__(self, idx) -> "FactoredMatrix | torch.Tensor":
        """Index the batch dimensions (giving a FactoredMatrix), then rows and columns (giving the
        dense block, as ``block``): ``ov[h]`` is head h's circuit, ``ov[h, :10, 5]`` a dense slice."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        if any(i is Ellipsis or i is None for i in idx):
            raise IndexError("FactoredMatrix indexing takes no Ellipsis or None")
        nb = len(self.batch_shape)
        if len(idx) > nb + 2:
            raise IndexError(f"too many indices ({len(idx)}) for shape {tuple(self.shape)}")
        head, rest = idx[:nb], idx[nb:]
        A, B = (self.A[head], self.B[head]) if head else (self.A, self.B)
        inner = FactoredMatrix(A, B)
        return inner.block(*rest) if rest else inner
