"""The one door to attention, ``kernels.causal_attention``: every path it can take equals the plain reference."""

import pytest
import torch

from circuits.kernels import causal_attention, cpu_attention, reference_causal_attention


def test_causal_attention_under_cpu_autocast_matches_fp64():
    """The training kernel leaves bf16 autocast for fp32 on CPU; values and gradients must still be
    the causal softmax attention, and the output stays in the caller's dtype."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(torch.ones(17, 17).triu(1).bool(), float("-inf"))
    ref = scores.softmax(-1) @ v
    ref.sum().backward()
    ref_grads = [t.grad.clone() for t in (q, k, v)]
    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = causal_attention(*low)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    torch.testing.assert_close(out.double(), ref.detach(), rtol=2e-2, atol=2e-2)
    for got, want in zip(low, ref_grads):
        torch.testing.assert_close(got.grad.double(), want, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", [True, False])
def test_every_cpu_path_matches_the_reference(monkeypatch, dtype, kernel):
    if kernel and not cpu_attention.available(32):
        pytest.skip("the C kernel does not run here")
    if not kernel:
        monkeypatch.setattr(cpu_attention, "available", lambda d_head: False)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 40, 32, generator=g).to(dtype) for _ in range(3))
    want = reference_causal_attention(q.double(), k.double(), v.double())
    got = causal_attention(q, k, v)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-2)


def test_the_reference_is_the_masked_softmax():
    q, k, v = (torch.randn(1, 1, 4, 8, dtype=torch.float64) for _ in range(3))
    z = reference_causal_attention(q, k, v)
    for i in range(4):
        s = (q[0, 0, i] @ k[0, 0, : i + 1].T) / 8 ** 0.5
        torch.testing.assert_close(z[0, 0, i], s.softmax(-1) @ v[0, 0, : i + 1])
