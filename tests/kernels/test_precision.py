"""bf16 only where the machine multiplies fast in it; fp32 elsewhere (precision.py)."""

import pytest
import torch

from circuits.analysis.scan.blocks import Blocks
from circuits.analysis.factored import FactoredMatrix
from circuits.kernels.precision import CPU_BF16_ENV, bf16_is_fast
from circuits.train.loop import autocast, effective_precision, train

CPU = torch.device("cpu")


@pytest.mark.parametrize("flag, fast", [("0", False), ("1", True)])
def test_environment_overrides_the_cpu_answer(monkeypatch, flag, fast):
    monkeypatch.setenv(CPU_BF16_ENV, flag)
    assert bf16_is_fast("cpu") is fast


def test_bad_override_is_named(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match=CPU_BF16_ENV):
        bf16_is_fast("cpu")


def test_bf16_request_runs_in_fp32_where_bf16_is_slow(monkeypatch):
    a = torch.randn(4, 4)
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert effective_precision(CPU, "bf16") == "fp32"
    with pytest.warns(UserWarning, match="fp32"):
        effective_precision(CPU, "bf16", warn=True)
    with autocast(CPU, "bf16"):
        assert (a @ a).dtype == torch.float32
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert effective_precision(CPU, "bf16") == "bf16"
    with autocast(CPU, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    assert effective_precision(CPU, "fp32") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        effective_precision(CPU, "fp16")


@pytest.mark.parametrize("flag, filter_dtype", [("0", torch.float32), ("1", torch.bfloat16)])
def test_circuit_scans_filter_in_bf16_only_where_it_is_fast(monkeypatch, flag, filter_dtype):
    monkeypatch.setenv(CPU_BF16_ENV, flag)
    fm = FactoredMatrix(torch.randn(6, 3), torch.randn(3, 5))
    blocks = Blocks(fm, 2, 2, "auto")
    assert blocks.A_lo.dtype == filter_dtype
    assert blocks.packed is None or blocks.packed.kind == {torch.bfloat16: "amx", torch.float32: "avx2"}[filter_dtype]


@pytest.mark.skipif(torch.cuda.is_available(), reason="train() picks the GPU; this is the CPU fallback")
def test_training_log_records_the_precision_it_ran_in(monkeypatch, tmp_path, tiny_cfg, tiny_train_cfg,
                                                      markov_splits):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    with pytest.warns(UserWarning, match="training in fp32"):
        train(tiny_cfg, tiny_train_cfg, markov_splits, tmp_path, progress=False)
    rows = [r for r in (tmp_path / "log.jsonl").read_text().splitlines() if '"val_loss"' in r]
    assert rows and all('"precision": "fp32"' in r for r in rows)
