"""Which precision this machine multiplies fast in.

bf16 halves memory traffic and, on CPUs with native bf16 matmuls (AVX512-BF16, AMX) and on GPUs,
runs several times faster than fp32. CPUs with only AVX2 (AMD Zen 1-3, older Intel) have no bf16
matmul kernel: torch falls back to a reference loop that is about 100x *slower* than fp32
(measured on a 2-core AMD EPYC: 1.2 GFLOP/s in bf16 against 140 GFLOP/s in fp32). Training and
the circuit scans therefore ask ``bf16_is_fast`` before they use bf16, and run in fp32 where it
says no. ``$CIRCUITS_CPU_BF16`` (``0`` or ``1``) overrides the CPU answer, for tests and for
machines the check misjudges.
"""

from __future__ import annotations

import functools
import os

import torch

CPU_BF16_ENV = "CIRCUITS_CPU_BF16"


@functools.cache
def _cpu_bf16_detected() -> bool:
    # oneDNN's own test: true where it has bf16 GEMM kernels (AVX512 core and newer)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 matmuls on ``device_type`` ("cpu" or "cuda") run at least as fast as fp32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"${CPU_BF16_ENV} must be 0 or 1, got {forced!r}")
        return forced == "1"
    return _cpu_bf16_detected()


def autocast_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype matmuls get on ``device_type``: autocast's where it is on, else ``dtype`` (the inputs')."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype
