"""The residual stream's reads (circuits.residual): the C kernel route against torch's ops, values and
gradients, in fp32 and under bf16 autocast, and the model's fast path through them."""

import pytest
import torch

from circuits import cpu_attention, residual
from circuits.config import ModelConfig
from circuits.model import AttnOnlyTransformer
from conftest import loss_and_gradients

KERNEL = cpu_attention.isa() is not None and cpu_attention.library() is not None
needs_kernel = pytest.mark.skipif(not KERNEL, reason="the C kernels do not run on this machine")


def _reads(b, n, d, out_dtype, autocast, kernel, seed=0):
    """Outputs of ``read`` and ``final`` on fixed inputs, and the gradients of a loss that weighs every
    output differently (so that a gradient sent to the wrong input shows)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g).requires_grad_()
    pos = torch.randn(n, d, generator=g).requires_grad_()
    out = None if out_dtype is None else torch.randn(b, n, d, generator=g).to(out_dtype).requires_grad_()
    out2 = torch.randn(b, n, d, generator=g).bfloat16().requires_grad_()
    runs = residual._kernel_runs
    try:
        if not kernel:
            residual._kernel_runs = lambda *args: False
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            new_x, a, c = residual.read(x, out, pos)
            f = residual.final(new_x, out2)
    finally:
        residual._kernel_runs = runs
    weights = [torch.randn(t.shape, generator=g) for t in (new_x, a, c, f)]
    loss = sum((t.float() * w).sum() for t, w in zip((new_x, a, c, f), weights))
    leaves = [x, pos, out2] + ([out] if out is not None else [])
    return [new_x, a, c, f], torch.autograd.grad(loss, leaves)


@needs_kernel
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("out_dtype", [None, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d", [256, 40])  # 40: whole vectors and a tail
def test_kernel_matches_torch_ops(autocast, out_dtype, d):
    (outs1, grads1), (outs0, grads0) = (_reads(3, 8, d, out_dtype, autocast, kernel) for kernel in (True, False))
    for got, want in zip(outs1, outs0):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)  # the same sums, rounded the same way
    for got, want in zip(grads1, grads0):
        assert got.dtype == want.dtype
        # the kernel sums a position's gradients over the batch in another order than torch
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)


@needs_kernel
def test_autocast_dtypes():
    (x, a, c, f), _ = _reads(2, 4, 32, torch.bfloat16, True, True)
    assert (x.dtype, a.dtype, c.dtype, f.dtype) == (torch.float32, torch.bfloat16, torch.bfloat16, torch.bfloat16)
    (x, a, c, f), _ = _reads(2, 4, 32, torch.float32, False, True)
    assert c is x and (x.dtype, a.dtype, f.dtype) == (torch.float32,) * 3  # fp32 reads values from x itself


@needs_kernel
def test_gradients_do_not_depend_on_threads():
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(_reads(4, 7, 48, torch.bfloat16, True, True, seed=5)[1])
    finally:
        torch.set_num_threads(threads)
    for one, three in zip(*results):
        assert torch.equal(one, three)


@needs_kernel
@pytest.mark.parametrize("autocast", [False, True])
def test_model_loss_and_gradients_do_not_depend_on_the_route(autocast, monkeypatch):
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=2, d_head=32, n_ctx=16, d_vocab=50)
    model = AttnOnlyTransformer(cfg)
    tokens = torch.randint(0, 50, (3, 17), generator=torch.Generator().manual_seed(1))
    loss_k, grads_k = loss_and_gradients(model, tokens, autocast)
    monkeypatch.setattr(residual, "_kernel_runs", lambda *args: False)
    loss_t, grads_t = loss_and_gradients(model, tokens, autocast)
    for got, want in zip([loss_k, *grads_k], [loss_t, *grads_t]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
