"""The fused unembedding + cross-entropy equals its plain reference (the logits, then F.cross_entropy) in value
and gradients."""

import pytest
import torch

from circuits.config import ModelConfig
from circuits.kernels import unembed_loss
from circuits.kernels.unembed_loss import default_chunk_rows, reference_unembed_cross_entropy, unembed_cross_entropy
from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer


def _reference_and_fused(chunk_rows, autocast):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 16, generator=g)
    W_U = torch.randn(16, 50, generator=g)
    t = torch.randint(0, 50, (3, 7), generator=g)
    grads = []
    for fused in (False, True):
        xr, wr = x.clone().requires_grad_(), W_U.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = unembed_cross_entropy(xr, wr, t, chunk_rows) if fused else reference_unembed_cross_entropy(xr, wr, t)
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
    monkeypatch.setattr(unembed_loss, "_chunk_fn", lambda device_type: unembed_loss._loss_and_grad)
    (l0, gx0, gw0), (l1, gx1, gw1) = _reference_and_fused(5, autocast=autocast)
    tol = dict(rtol=0.05, atol=2e-3) if autocast else dict(rtol=1e-5, atol=1e-6)
    assert l1 == pytest.approx(l0, rel=1e-2 if autocast else 1e-6)
    assert gx1.dtype == gw1.dtype == torch.float32
    torch.testing.assert_close(gx1, gx0, **tol)
    torch.testing.assert_close(gw1, gw0, **tol)
