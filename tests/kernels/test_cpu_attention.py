"""The C attention kernel (circuits.kernels.cpu_attention) against torch's attention in fp64, both directions,
on every instruction set this CPU has, in fp32 and bf16, on the strided layouts the model feeds it."""

import pytest
import torch
import torch.nn.functional as F

from circuits.config import ModelConfig
from circuits.kernels import build as ckernels
from circuits.kernels import cpu_attention
from circuits.model.transformer import AttnOnlyTransformer


ISAS = [name for name, (flags, _) in cpu_attention.ISAS.items() if set(flags) <= ckernels.cpu_flags()]
pytestmark = pytest.mark.skipif(not ISAS or cpu_attention.library() is None,
                                reason="the C attention kernel does not run on this machine")


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setattr(cpu_attention, "isa", lambda: request.param)
    return request.param


def qkv_like_the_model(b, h, n, e, dtype, scale=2.0, seed=0):
    """q, k, v as ``model.Attention.forward`` makes them: [b, h, n, e] views of projections laid out [b, n, h, e].
    Returns the three leaves [b, n, h, e] and the three views."""
    g = torch.Generator().manual_seed(seed)
    leaves = [(torch.randn(b, n, h, e, generator=g) * scale).to(dtype).requires_grad_() for _ in range(3)]
    return (*leaves, *(x.transpose(1, 2) for x in leaves))


def reference(q, k, v, dz, o_dtype=torch.float64):
    """Output and gradients of causal attention in fp64 at the same (possibly bf16) inputs, written
    out as the kernel computes them: its backward reads the output as it was stored (``o_dtype``),
    as flash attention's does, in D_i = dZ_i . Z_i."""
    q, k, v, dz = (x.detach().double() for x in (q, k, v, dz))
    n, e = q.shape[-2:]
    s = (q @ k.mT / e ** 0.5).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    p = s.softmax(-1)
    z = p @ v
    d = (dz * z.to(o_dtype).double()).sum(-1, keepdim=True)
    ds = p * (dz @ v.mT - d) / e ** 0.5
    return z, ds @ k, ds.mT @ q, p.mT @ dz


def assert_near(got, want, rel):
    err = float((got.detach().double() - want).abs().max())
    assert err <= rel * float(want.abs().max()) + 1e-30, f"max error {err:.2e}, scale {float(want.abs().max()):.2e}"


def test_reference_is_torch_attention():
    *_, q, k, v = qkv_like_the_model(2, 3, 20, 32, torch.float32)
    dz = torch.randn(2, 3, 20, 32)
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    z = F.scaled_dot_product_attention(*leaves, is_causal=True)
    z.backward(dz.double())
    for got, want in zip(reference(q, k, v, dz), (z, *(x.grad for x in leaves))):
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 37, 32), (1, 2, 256, 32), (2, 2, 100, 64), (1, 1, 1, 32), (3, 1, 9, 32),
                                   (2, 1, 45, 96), (1, 2, 1024, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_and_backward_match_fp64(isa, shape, dtype):
    b, h, n, e = shape
    q_leaf, k_leaf, v_leaf, q, k, v = qkv_like_the_model(b, h, n, e, dtype)
    z = cpu_attention.causal_attention(q, k, v)
    assert z.dtype == dtype and z.shape == (b, h, n, e)
    assert z.transpose(1, 2).is_contiguous()  # [b, n, h, e]: the model's reshape is free
    dz = torch.randn(b, h, n, e, generator=torch.Generator().manual_seed(1)).to(dtype)
    z.backward(dz)
    want_z, want_dq, want_dk, want_dv = reference(q, k, v, dz, o_dtype=dtype)
    rel = 2e-6 if dtype == torch.float32 else 2 ** -8  # fp32 arithmetic; bf16: the outputs' rounding
    dq, dk = q_leaf.grad.transpose(1, 2), k_leaf.grad.transpose(1, 2)
    assert_near(z, want_z, rel)
    assert_near(v_leaf.grad.transpose(1, 2), want_dv, rel)
    if n > 1:
        assert_near(dq, want_dq, rel)
        assert_near(dk, want_dk, rel)
    else:  # one position: the gradients of q and k are zero up to rounding (dP - D = 0 in exact arithmetic)
        assert float(dq.abs().max()) < 1e-5 and float(dk.abs().max()) < 1e-5


@pytest.mark.parametrize("scale", [0.5, 2.0, 30.0])  # 30: nearly one-hot rows, most terms underflowing
def test_forward_log_sum_exp_matches_fp64(isa, scale):
    """The log-sum-exp the forward keeps for the backward (computed in vectors, a block of rows at a time), to
    the rounding of the scores in fp32 (scores of hundreds at scale 30)."""
    dtype = torch.bfloat16 if isa == "amx" else torch.float32
    *_, q, k, v = qkv_like_the_model(2, 3, 45, 32, dtype, scale=scale)
    z, lse = cpu_attention._empty_like_bnhe(q), torch.empty(q.shape[:3], dtype=torch.float32)
    cpu_attention._run("forward", [q, k, v, z, lse], q.shape)
    s = (q.double() @ k.double().mT / 32 ** 0.5).detach()
    want = s.masked_fill(torch.ones(45, 45, dtype=torch.bool).triu(1), float("-inf")).logsumexp(-1)
    torch.testing.assert_close(lse.double(), want, rtol=2e-6, atol=2e-7 * float(s.abs().max()))


def test_saturated_softmax_as_accurate_as_torch_fp32(isa):
    """Scores of several hundred: the softmax is nearly one-hot and exp underflows. Rounding the
    scores in fp32 then costs any fp32 kernel accuracy; ours must stay within 2x of torch's."""
    *_, q, k, v = qkv_like_the_model(1, 2, 64, 32, torch.float32, scale=30.0)
    z = cpu_attention.causal_attention(q, k, v)
    want = reference(q, k, v, torch.zeros_like(z))[0]
    torch_fp32 = F.scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), is_causal=True)
    assert torch.isfinite(z).all()
    ours, theirs = ((x.detach().double() - want).abs().max() for x in (z, torch_fp32))
    assert ours <= 2 * theirs + 2e-6 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_results_do_not_depend_on_threads(isa, dtype):
    """Each (batch, head) slice is one thread's: 1 and 2 threads give the same bits (fp32 resumes)."""
    saved = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            q_leaf, k_leaf, v_leaf, q, k, v = qkv_like_the_model(3, 4, 70, 32, dtype)
            z = cpu_attention.causal_attention(q, k, v)
            z.backward(torch.ones_like(z))
            outs.append((z.detach(), q_leaf.grad, k_leaf.grad, v_leaf.grad))
    finally:
        torch.set_num_threads(saved)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_unsupported_inputs_are_named(isa):
    width = cpu_attention.ISAS[isa][1]
    assert not cpu_attention.available(width + 8)
    x = torch.zeros(1, 1, 4, width + 8)
    with pytest.raises(RuntimeError, match=f"does not run here for d_head={width + 8}"):
        cpu_attention.causal_attention(x, x, x)
    x = torch.zeros(1, 1, 4, 32, dtype=torch.float16)
    with pytest.raises(ValueError, match="expected float32 or bfloat16, got torch.float16"):
        cpu_attention.causal_attention(x, x, x)
    q = torch.zeros(1, 1, 4, 32)
    with pytest.raises(ValueError, match="k: expected a \\[batch, head, pos, d_head\\] torch.float32"):
        cpu_attention.causal_attention(q, q.bfloat16(), q)
    with pytest.raises(ValueError, match="must have one shape"):
        cpu_attention.causal_attention(q, torch.zeros(1, 1, 5, 32), q)


def test_kernels_off_by_environment(monkeypatch):
    monkeypatch.setenv(ckernels.ENV, "0")
    cpu_attention.library.cache_clear()
    try:
        assert not cpu_attention.available(32)
    finally:
        monkeypatch.delenv(ckernels.ENV)
        cpu_attention.library.cache_clear()
    assert cpu_attention.available(32) == ("avx512" in ISAS)


@pytest.mark.parametrize("bf16", [False, True])
def test_model_agrees_with_torch_attention(isa, monkeypatch, bf16, loss_and_gradients):
    """The training path with the kernel against the same model with torch's fused attention: in fp32, and
    under bf16 autocast (AMX tiles where "amx"), where the two differ by bf16 rounding only."""
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=32, n_ctx=48, d_vocab=100)
    model = AttnOnlyTransformer(cfg)
    tokens = torch.randint(0, 100, (3, 48), generator=torch.Generator().manual_seed(2))
    loss_k, grads_k = loss_and_gradients(model, tokens, bf16)
    monkeypatch.setattr(cpu_attention, "available", lambda d_head: False)
    loss_t, grads_t = loss_and_gradients(model, tokens, bf16)
    torch.testing.assert_close(loss_k, loss_t, rtol=1e-2 if bf16 else 1e-6, atol=0)
    for gk, gt in zip(grads_k, grads_t):
        if bf16:
            assert float((gk - gt).norm()) <= 2e-2 * float(gt.norm())
        else:
            torch.testing.assert_close(gk, gt, rtol=1e-4, atol=1e-7)


def test_bf16_runs_on_amx_fp32_on_avx512(monkeypatch):
    """Under "amx", bf16 tensors go to the tile kernel and fp32 ones to the AVX-512 one."""
    if "amx" not in ISAS:
        pytest.skip("no AMX here")
    called, lib = [], cpu_attention.library()

    class Spy:
        def __getattr__(self, name):
            called.append(name)
            return getattr(lib, name)

    monkeypatch.setattr(cpu_attention, "isa", lambda: "amx")
    for dtype in (torch.bfloat16, torch.float32):
        q = torch.randn(1, 1, 8, 32).to(dtype)
        with monkeypatch.context() as m:
            m.setattr(cpu_attention, "library", lambda: Spy())
            cpu_attention._run("forward", [q, q, q, torch.empty_like(q), torch.empty(1, 1, 8)], q.shape)
    assert called == ["attention_forward_amx", "attention_forward_avx512"]


def test_amx_capped_like_onednn(monkeypatch):
    """$ONEDNN_MAX_CPU_ISA keeps our attention off AMX as it keeps oneDNN's matmuls."""
    if "amx" not in ISAS:
        pytest.skip("no AMX here")
    assert cpu_attention.isa() == "amx"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cpu_attention.isa() == "avx512"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert cpu_attention.isa() == "amx"


def test_isa_capped_like_torch(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # an AVX2-only CPU: torch's attention, as there
    assert cpu_attention.isa() is None
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert cpu_attention.isa() is None


def test_nan_input_gives_nan_not_a_crash(isa):
    """A NaN in q (a diverged run) reaches the output and the gradients as NaN; the backward, which
    reads the forward's log-sum-exp, must not take a NaN there for anything else."""
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(1, 2, 40, 32).to(dtype) for _ in range(3))
        q[0, 1, 5, 3] = float("nan")  # query 5 of head 1
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        z = cpu_attention.causal_attention(q, k, v)
        z.backward(torch.ones_like(z))
        assert z[0, 1, 5].isnan().all() and not z[0, 0].isnan().any() and not z[0, 1, 6].isnan().any()
        assert v.grad[0, 1].isnan().any() and not v.grad[0, 0].isnan().any()
