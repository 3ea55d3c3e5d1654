"""The CUDA paths: fused loss with GPU-sized chunks, compiled forward around its graph break, training.

Skipped without a GPU (CI has none); run on a GPU box with ``pytest tests/test_cuda.py``.
"""

import dataclasses

import pytest
import torch

from circuits.config import ModelConfig, get_preset
from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer
from circuits.train.log import eval_rows, read_log
from circuits.kernels.unembed_loss import GPU_CHUNK_ROWS, unembed_cross_entropy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _exact_fp32_matmuls():
    # training turns TF32 on (train.pick_device); comparisons with fp32 references need it off
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("chunk_rows", [None, 1000])
@pytest.mark.parametrize("bf16", [False, True])
def test_fused_loss_on_cuda_matches_reference(monkeypatch, chunk_rows, bf16, compiled):
    from circuits.kernels import unembed_loss
    monkeypatch.setattr(unembed_loss, "COMPILED_ON", ("cuda",) if compiled else ())
    g = torch.Generator(device=CUDA).manual_seed(0)
    n_rows = GPU_CHUNK_ROWS + 904  # more than one default chunk, and a ragged last one
    x = torch.randn(2, n_rows // 2, 64, device=CUDA, generator=g)
    W_U = torch.randn(64, 5003, device=CUDA, generator=g) / 8
    t = torch.randint(0, 5003, (2, n_rows // 2), device=CUDA, generator=g)
    results = []
    for fused in (False, True):
        xr, wr = x.clone().requires_grad_(), W_U.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = unembed_cross_entropy(xr, wr, t, chunk_rows) if fused else loss_fn(xr @ wr, t)
        (3.0 * loss).backward()
        results.append((loss.item(), xr.grad, wr.grad))
    (l0, gx0, gw0), (l1, gx1, gw1) = results
    tol = dict(rtol=0.05, atol=2e-5) if bf16 else dict(rtol=1e-4, atol=1e-7)
    assert l1 == pytest.approx(l0, rel=1e-2 if bf16 else 1e-5)
    assert gx1.dtype == gw1.dtype == torch.float32
    torch.testing.assert_close(gx1, gx0, **tol)
    torch.testing.assert_close(gw1, gw0, **tol)


def test_model_on_cuda_matches_cpu():
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=40, d_vocab=97)
    model = AttnOnlyTransformer(cfg)
    tokens = torch.randint(0, 97, (3, 40))
    want = model(tokens)
    got = model.to(CUDA)(tokens.to(CUDA)).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    logits, _ = model.run_with_cache(tokens.to(CUDA))
    torch.testing.assert_close(logits.cpu(), want, rtol=1e-4, atol=1e-4)


def test_compiled_forward_matches_eager_around_the_loss_graph_break():
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, n_ctx=64, d_vocab=300)
    model = AttnOnlyTransformer(cfg).to(CUDA)
    tokens = torch.randint(0, 300, (4, 65), device=CUDA)
    grads = []
    for fwd in (model, torch.compile(model)):
        model.zero_grad()
        loss = fwd(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = grads
    assert l1 == pytest.approx(l0, rel=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-3, atol=1e-6, msg=name)


def test_training_on_cuda_with_compile_lowers_loss_and_resumes(tmp_path, tiny_cfg, tiny_train_cfg,
                                                              markov_splits):
    from circuits.train.loop import train

    cfg = dataclasses.replace(tiny_train_cfg, compile=True)
    train(tiny_cfg, cfg, markov_splits, tmp_path / "cut", progress=False, stop_at_step=15)
    resumed = train(tiny_cfg, cfg, markov_splits, tmp_path / "cut", progress=False)
    whole = train(tiny_cfg, cfg, markov_splits, tmp_path / "whole", progress=False)
    rows = eval_rows(read_log(tmp_path / "whole" / "log.jsonl"))
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.3
    assert rows[-1]["precision"] == "bf16"
    cut = eval_rows(read_log(tmp_path / "cut" / "log.jsonl"))
    assert [r["step"] for r in cut] == [r["step"] for r in rows]
    # CUDA kernels (index_put's atomics) are not bitwise deterministic: equal up to rounding
    assert cut[-1]["val_loss"] == pytest.approx(rows[-1]["val_loss"], abs=0.05)
    for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05, msg=name)


def test_paper_size_training_step_on_cuda():
    from circuits.train.loop import make_optimizer, training_step

    preset = get_preset("paper")
    cfg = dataclasses.replace(preset.model_config(2), n_ctx=256)
    train_cfg = preset.train_config(2)
    model = AttnOnlyTransformer(cfg).to(CUDA)
    opt = make_optimizer(model, train_cfg)
    batch = torch.randint(0, cfg.d_vocab, (8, cfg.n_ctx + 1), device=CUDA)
    first = training_step(torch.compile(model), model, opt, batch, train_cfg, CUDA)
    assert first == pytest.approx(torch.log(torch.tensor(cfg.d_vocab * 1.0)).item(), abs=1.0)
    later = [training_step(model, model, opt, batch, train_cfg, CUDA) for _ in range(5)]
    assert later[-1] < first  # the same batch again: the loss must fall


@pytest.mark.parametrize("filter_dtype", [torch.bfloat16, None])
@pytest.mark.parametrize("tf32", [False, True])
def test_circuit_scan_on_cuda_matches_dense(filter_dtype, tf32):
    from circuits.analysis.scan.tables import scan_ov_circuit
    from circuits.analysis.factored import FactoredMatrix

    torch.backends.cuda.matmul.allow_tf32 = tf32  # the fixture restores it
    g = torch.Generator().manual_seed(0)
    B = torch.randn(3, 16, 700, generator=g)
    A = torch.tensor([0.0, 1.0, 3.0])[:, None, None] * B.mT + torch.randn(3, 700, 16, generator=g)
    ov = FactoredMatrix(A.to(CUDA), B.to(CUDA))
    reduced = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    vals, out, src, top1, top5 = scan_ov_circuit(ov, k=20, chunk_rows=128, chunk_cols=96, filter_dtype=filter_dtype)
    assert torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction == reduced  # restored after the scan
    torch.backends.cuda.matmul.allow_tf32 = False
    M = (A.double() @ B.double()).float()
    for h in range(3):
        want = M[h].flatten().topk(20)
        torch.testing.assert_close(vals[h].cpu(), want.values)
        assert set((out[h].cpu() * 700 + src[h].cpu()).tolist()) == set(want.indices.tolist())
        beaten = (M[h] > M[h].diagonal()[None, :]).sum(0)
        assert float(top1[h]) == float((beaten < 1).float().mean())
        assert float(top5[h]) == float((beaten < 5).float().mean())


def test_token_dump_on_cuda_matches_dense():
    from circuits.analysis.factored import FactoredMatrix
    from circuits.analysis.skip_trigrams import token_dump

    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(2, 300, 16, generator=g), torch.randn(2, 16, 300, generator=g)
    ov, qk = FactoredMatrix(A.to(CUDA), B.to(CUDA)), FactoredMatrix(B.mT.to(CUDA), A.mT.to(CUDA))
    dump = token_dump(ov, qk, torch.arange(300, device=CUDA), k=5)
    M = A.double() @ B.double()  # ov [out, src]; qk = M.T [dst, src]
    want = {"ov_out": M.mT.topk(5, dim=-1), "qk_src": M.mT.topk(5, dim=-1), "qk_dst": M.topk(5, dim=-1)}
    for name, w in want.items():
        torch.testing.assert_close(dump[f"{name}_value"].cpu(), w.values.float())
        assert torch.equal(dump[name].cpu(), w.indices)
