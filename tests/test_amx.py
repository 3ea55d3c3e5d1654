"""The AMX group-maximum kernel (circuits/amx.py) against torch, where the CPU has AMX."""

import pytest
import torch

from circuits import amx

pytestmark = pytest.mark.skipif(not amx.available(), reason="no AMX on this CPU (or no C compiler)")


@pytest.mark.parametrize("rows, k, n", [(1, 64, 64), (37, 64, 200), (50, 32, 130), (16, 7, 65), (100, 48, 1000)])
@pytest.mark.parametrize("threads", [1, 2])
def test_group_maxima_match_dense(rows, k, n, threads):
    g = torch.Generator().manual_seed(rows + k + n)
    A = torch.randn(rows, k, generator=g).bfloat16()
    Bt = torch.randn(n, k, generator=g).bfloat16()
    packed = amx.PackedColumns(Bt)
    got = amx.group_maxima(A, packed, threads=threads)
    dense = A.float() @ Bt.float().T  # products of bf16 values are exact in fp32; sums differ in order
    groups = -(-n // amx.GROUP)
    assert got.shape == (rows, groups)
    want = torch.stack([dense[:, i * amx.GROUP:(i + 1) * amx.GROUP].amax(1) for i in range(groups)], 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(dense.abs().max()))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="bf16 columns"):
        amx.PackedColumns(torch.randn(10, 8))
    with pytest.raises(ValueError, match="bf16 columns"):
        amx.PackedColumns(torch.randn(10, 65).bfloat16())
    packed = amx.PackedColumns(torch.randn(10, 8).bfloat16())
    with pytest.raises(ValueError, match="A \\[rows, 8\\] bf16"):
        amx.group_maxima(torch.randn(4, 8), packed)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(amx.ENV, "0")
    amx._library.cache_clear()
    try:
        assert not amx.available()
    finally:
        monkeypatch.delenv(amx.ENV)
        amx._library.cache_clear()
    assert amx.available()
