"""The benchmark scripts run end to end at a tiny size and end with the line their docstrings promise."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from circuits.kernels import cpu_attention

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_attention_benchmark_runs():
    # the smoke preset's heads (d_head 8) fit no C kernel: the script says so in its last line
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_attention.py"), "--preset", "smoke",
                          "--repeats", "1"], capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert out[0].startswith("one layer: batch 8 x 4 heads x 64 positions x d_head 8")
    assert any(line.startswith("torch fp32") for line in out)
    assert re.fullmatch(r".*attention_speedup_vs_torch=(n/a|\d+\.\d\d)", out[-1])


def test_cpu_attention_benchmark_times_our_kernel():
    if not cpu_attention.available(32):
        pytest.skip("no C attention kernel here")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_attention.py"), "--repeats", "1"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert any(line.startswith(f"ours {cpu_attention.vector_isa()}") for line in out)
    assert re.fullmatch(r"attention_speedup_vs_torch=\d+\.\d\d", out[-1])


def test_train_throughput_benchmark_runs():
    pytest.importorskip("transformer_lens")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--preset", "smoke",
                          "--steps", "1", "--repeats", "2", "--set", "d_model=48"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert "d_model=48," in lines[0]  # --set changes the timed shape
    peak = next(line for line in lines if " matmul peak: " in line)
    assert "(best of 3 timings: " in peak  # one before the contenders, then one a repeat in turn with them
    assert re.fullmatch(r"ratio_vs_transformerlens=\d+\.\d\d ratio_same_precision=\d+\.\d\d mfu=\d+\.\d\d", lines[-1])
    ours = next(line for line in lines if line.startswith("ours ("))
    assert re.search(r"tokens/s \(repeats [\d,]+-[\d,]+\)$", ours)  # the repeats' range beside the median
    ceiling = next(line for line in lines if line.startswith("ceiling: "))
    # smoke at d_model 48: 6 N = 6 (48 * 4096 + 2 * 4 * 48 * 32) = 1,253,376; attention 12 * 2 * 64 * 32 = 49,152,
    # of which the causal half (65 / 128) is computed: 1,278,336 FLOPs a token
    assert "(1.3 M FLOPs computed a token)" in ceiling


def test_train_throughput_heap_only_says_so():
    pytest.importorskip("transformer_lens")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--preset", "smoke",
                          "--steps", "1", "--repeats", "1", "--heap-only"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert out[0] in ("every allocation from the heap (glibc M_MMAP_MAX=0): yes",
                      "every allocation from the heap (glibc M_MMAP_MAX=0): not here (no glibc)")
    assert out[-1].startswith("ratio_vs_transformerlens=")


def test_computed_flops_count_the_causal_half_of_the_attention():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import train_throughput as bench
    finally:
        sys.path.pop(0)
    from circuits.config import ModelConfig

    cfg = ModelConfig(n_layers=2, d_model=256, n_heads=12, d_head=32, n_ctx=256, d_vocab=4096)
    assert bench.model_flops_per_token(cfg) == 6 * (256 * 4096 + 2 * 4 * 256 * 384) + 12 * 2 * 256 * 384
    assert bench.computed_flops_per_token(cfg) == 6 * (256 * 4096 + 2 * 4 * 256 * 384) + 12 * 2 * 384 * 257 / 2


def test_train_throughput_benchmark_names_a_bad_override():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--set", "d_modle=48"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "unknown override key 'd_modle'" in run.stderr


def test_kernel_value_benchmark_runs():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_value.py"), "--preset", "smoke",
                          "--rounds", "1", "--steps", "1", "--no-scan"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert out[0].startswith("training step: 2L, d_model 32, 4 heads x 8")
    assert any("torch's attention" in line for line in out)
    assert re.fullmatch(r"attention_saves=-?\d+\.\d{3} scan_saves=n/a", out[-1])
