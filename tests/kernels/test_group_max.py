"""The group-maximum C kernel (circuits/kernels/group_max.py) against its plain-torch reference, on CPUs that
have it (AMX); the reference itself against a looped definition everywhere."""

import pytest
import torch

from circuits.kernels import build as ckernels
from circuits.kernels import group_max

KINDS = [pytest.param(kind, marks=pytest.mark.skipif(not group_max.available(kind), reason=f"no {kind} kernel here"))
         for kind in group_max.KINDS]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows, k, n", [(1, 64, 64), (37, 64, 200), (50, 32, 130), (16, 7, 65), (101, 48, 1000)])
@pytest.mark.parametrize("threads", [1, 2])
def test_group_maxima_match_dense(kind, rows, k, n, threads):
    g = torch.Generator().manual_seed(rows + k + n)
    dtype = group_max.KINDS[kind][0]
    A = torch.randn(rows, k, generator=g).to(dtype)
    Bt = torch.randn(n, k, generator=g).to(dtype)
    packed = group_max.PackedColumns(Bt, kind)
    got = group_max.group_maxima(A, packed, threads=threads)
    dense = A.double() @ Bt.double().T  # the kernel sums in fp32, in its own order
    groups = -(-n // group_max.GROUP)
    assert got.shape == (rows, groups)
    want = group_max.reference_group_maxima(A.double(), Bt.double())
    torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=1e-5 * float(dense.abs().max()))


@pytest.mark.parametrize("n", [64, 65, 200])
def test_reference_group_maxima_is_the_looped_definition(n):
    A, Bt = torch.randn(5, 7), torch.randn(n, 7)
    got = group_max.reference_group_maxima(A, Bt)
    dense = A @ Bt.T
    for g in range(-(-n // group_max.GROUP)):
        torch.testing.assert_close(got[:, g], dense[:, g * group_max.GROUP:(g + 1) * group_max.GROUP].amax(1))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown kernel"):
        group_max.available("sse")
    with pytest.raises(ValueError, match="expects torch.bfloat16 columns"):
        group_max.PackedColumns(torch.randn(10, 8), "amx")
    with pytest.raises(ValueError, match="k <= 64"):
        group_max.PackedColumns(torch.randn(10, 65).bfloat16(), "amx")


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_rows_are_refused(kind):
    dtype = group_max.KINDS[kind][0]
    packed = group_max.PackedColumns(torch.randn(10, 8).to(dtype), kind)
    with pytest.raises(ValueError, match="expected A \\[rows, 8\\]"):
        group_max.group_maxima(torch.randn(4, 8, dtype=torch.float64), packed)


def test_switched_off_by_environment(monkeypatch):
    was = {kind: group_max.available(kind) for kind in group_max.KINDS}
    monkeypatch.setenv(ckernels.ENV, "0")
    group_max._library.cache_clear()
    try:
        assert not any(group_max.available(kind) for kind in group_max.KINDS)
    finally:
        monkeypatch.delenv(ckernels.ENV)
        group_max._library.cache_clear()
    assert {kind: group_max.available(kind) for kind in group_max.KINDS} == was
