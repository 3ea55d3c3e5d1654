"""The fused unembed + cross-entropy equals the reference loss_fn(resid @ W_U) in value and gradients."""

import pytest
import torch

from circuits import cpu_xent, unembed_loss
from circuits.config import ModelConfig
from circuits.model import AttnOnlyTransformer, loss_fn
from circuits.unembed_loss import default_chunk_rows, unembed_cross_entropy

ROUTES = ["torch"] + (["kernel"] if cpu_xent.available() else [])


@pytest.fixture(autouse=True, params=ROUTES)
def route(request, monkeypatch):
    """Every test on both routes of the chunk's loss: torch's ops, and the C kernel where it runs."""
    if request.param == "torch":
        monkeypatch.setattr(cpu_xent, "available", lambda: False)
    return request.param


def _reference_and_fused(chunk_rows, autocast):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 16, generator=g)
    W_U = torch.randn(16, 50, generator=g)
    t = torch.randint(0, 50, (3, 7), generator=g)
    grads = []
    for fused in (False, True):
        xr, wr = x.clone().requires_grad_(), W_U.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = unembed_cross_entropy(xr, wr, t, chunk_rows) if fused else loss_fn(xr @ wr, t)
        (2.5 * loss).backward()  # a non-unit upstream gradient must scale both gradients
        grads.append((loss.item(), xr.grad, wr.grad))
    return grads


@pytest.mark.parametrize("chunk_rows", [1, 5, 21, 512])
def test_fused_loss_and_gradients_match_reference_fp32(chunk_rows):
    (l0, gx0, gw0), (l1, gx1, gw1) = _reference_and_fused(chunk_rows, autocast=False)
    assert l1 == pytest.approx(l0, rel=1e-6)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw1, gw0, rtol=1e-5, atol=1e-6)


def test_default_cpu_chunks_hold_16_mb_of_logits_above_a_floor():
    assert default_chunk_rows("cpu", torch.bfloat16, 4096) == 2048
    assert default_chunk_rows("cpu", torch.float32, 4096) == 1024
    assert default_chunk_rows("cpu", torch.float32, 8192) == 512
    # GPT-2's vocabulary: the floors, so that W_U's gradient is not accumulated in a hundred passes
    assert default_chunk_rows("cpu", torch.float32, 50257) == 512
    assert default_chunk_rows("cpu", torch.bfloat16, 50257) == 2048
    assert default_chunk_rows("cpu", torch.float16, 1 << 30) == 1  # never zero rows


def test_default_chunks_split_the_rows(monkeypatch):
    # 600 bytes of fp32 logits over 50 tokens, no floor: the 21 rows in 7 chunks of 3
    monkeypatch.setattr(unembed_loss, "CPU_CHUNK_BYTES", 600)
    monkeypatch.setattr(unembed_loss, "CPU_CHUNK_FLOOR", {})
    calls, mm = [], torch.mm

    def spy(a, b, **kw):  # the chunk loop's products: their row counts are the chunks'
        calls.append(a.shape[0])
        return mm(a, b, **kw)
    monkeypatch.setattr(torch, "mm", spy)
    (l0, gx0, gw0), (l1, gx1, gw1) = _reference_and_fused(None, autocast=False)
    assert l1 == pytest.approx(l0, rel=1e-6)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw1, gw0, rtol=1e-5, atol=1e-6)
    assert 3 in calls and max(calls) == 3


def test_fused_loss_under_bf16_autocast_is_close_and_keeps_dtypes():
    (l0, gx0, gw0), (l1, gx1, gw1) = _reference_and_fused(4, autocast=True)
    assert l1 == pytest.approx(l0, rel=1e-2)
    assert gx1.dtype == gw1.dtype == torch.float32
    torch.testing.assert_close(gx1, gx0, rtol=0.05, atol=2e-3)
    torch.testing.assert_close(gw1, gw0, rtol=0.05, atol=2e-3)


def test_model_forward_with_targets_is_the_mean_loss_of_its_logits():
    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=12, d_vocab=40)
    model = AttnOnlyTransformer(cfg)
    tokens = torch.randint(0, 40, (2, 13))
    want = loss_fn(model(tokens[:, :-1]), tokens[:, 1:])
    got = model(tokens[:, :-1], tokens[:, 1:])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    want.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="disagree"):
        unembed_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(4, 5), torch.zeros(2, 4, dtype=torch.long))


def test_loss_without_gradients_matches_and_skips_their_work():
    g = torch.Generator().manual_seed(1)
    x, W_U, t = torch.randn(2, 9, 16, generator=g), torch.randn(16, 30, generator=g), torch.randint(0, 30, (2, 9))
    with torch.no_grad():
        got = unembed_cross_entropy(x, W_U, t, 4)
    assert got.item() == pytest.approx(loss_fn(x @ W_U, t).item(), rel=1e-6)
    assert got.grad_fn is None


@pytest.mark.parametrize("autocast", [False, True])
def test_gpu_chunk_route_matches_reference(monkeypatch, autocast):
    # the route GPUs take (one fused loss-and-gradient call per chunk, compiled there), run eagerly here
    from circuits import unembed_loss
    monkeypatch.setattr(unembed_loss, "_chunk_fn", lambda device_type: unembed_loss._loss_and_grad)
    (l0, gx0, gw0), (l1, gx1, gw1) = _reference_and_fused(5, autocast=autocast)
    tol = dict(rtol=0.05, atol=2e-3) if autocast else dict(rtol=1e-5, atol=1e-6)
    assert l1 == pytest.approx(l0, rel=1e-2 if autocast else 1e-6)
    assert gx1.dtype == gw1.dtype == torch.float32
    torch.testing.assert_close(gx1, gx0, **tol)
    torch.testing.assert_close(gw1, gw0, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [7, 100, 4096])
def test_kernel_rows_match_fp64(route, dtype, vocab):
    if route != "kernel":
        pytest.skip("the C kernel alone")
    g = torch.Generator().manual_seed(vocab)
    x = (torch.randn(37, vocab, generator=g) * 3).to(dtype)
    t = torch.randint(0, vocab, (37,), generator=g)
    xd = x.double()
    want_loss = torch.logsumexp(xd, -1) - xd.gather(1, t[:, None])[:, 0]
    want_grad = torch.softmax(xd, -1) * 0.01
    want_grad[torch.arange(37), t] -= 0.01
    kept = x.clone()
    torch.testing.assert_close(cpu_xent.cross_entropy_rows(kept, t, 0.01, grad=False).double(), want_loss,
                               rtol=1e-6, atol=2e-6)
    assert torch.equal(kept, x)  # without grad the logits are left as they were
    loss = cpu_xent.cross_entropy_rows(x, t, 0.01, grad=True)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=2e-6)
    step = 2e-6 if dtype == torch.float32 else 2 ** -8  # the gradient is rounded to the logits' dtype
    assert float((x.double() - want_grad).abs().max()) <= step * float(want_grad.abs().max())


def test_kernel_names_bad_input(route):
    if route != "kernel":
        pytest.skip("the C kernel alone")
    x = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="a target is outside the vocabulary \\[0, 5\\)"):
        cpu_xent.cross_entropy_rows(x, torch.tensor([0, 5]), 1.0, grad=True)
    with pytest.raises(ValueError, match="3 targets for 2 rows"):
        cpu_xent.cross_entropy_rows(x, torch.tensor([0, 1, 2]), 1.0, grad=True)
    with pytest.raises(ValueError, match="contiguous \\[rows, V\\] fp32 or bf16"):
        cpu_xent.cross_entropy_rows(x.T, torch.tensor([0, 1, 2, 3, 4]), 1.0, grad=True)


def test_kernel_bf16_gradient_is_its_fp32_gradient_rounded(route):
    """Read from bf16, the kernel computes what it computes from the same values in fp32, and writes the
    gradient rounded to nearest even, as torch rounds; a row with a NaN stays NaN."""
    if route != "kernel":
        pytest.skip("the C kernel alone")
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9, 4100, generator=g) * 4).bfloat16()  # 4,100: whole vectors and a tail
    x[4, 17] = float("nan")
    t = torch.randint(0, 4100, (9,), generator=g)
    wide = x.float()
    cpu_xent.cross_entropy_rows(wide, t, 0.01, grad=True)
    cpu_xent.cross_entropy_rows(x, t, 0.01, grad=True)
    torch.testing.assert_close(x, wide.bfloat16(), rtol=0, atol=0, equal_nan=True)
    assert x[4].isnan().all() and not x[[0, 1, 2, 3, 5, 6, 7, 8]].isnan().any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accumulate_adds_in_fp32(route, dtype):
    if route != "kernel":
        pytest.skip("the C kernel alone")
    g = torch.Generator().manual_seed(4)
    dst = torch.randn(3, 4099, generator=g)  # past one 4,096 block, with a tail
    src = torch.randn(3, 4099, generator=g).to(dtype)
    want = dst + src.float()
    cpu_xent.accumulate(dst, src)
    assert torch.equal(dst, want)
    with pytest.raises(ValueError, match="contiguous fp32 CPU dst and a src of its shape"):
        cpu_xent.accumulate(dst.bfloat16(), src)
    with pytest.raises(ValueError, match="contiguous fp32 CPU dst and a src of its shape"):
        cpu_xent.accumulate(dst, src[:, :10])
