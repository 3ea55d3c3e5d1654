"""Causal attention for training on CPUs, forward and backward, in a small C kernel (``c/attention.c``).

    Z = softmax_causal(Q K^T / sqrt(d_head)) V        per (batch, head); Q, K, V, Z [n, d_head]

the attention of ``model.Attention.forward`` (the paper's A^h = softmax*(x^T W_Q^hT W_K^h x), applied
to V = x W_V^h), reached through ``kernels.causal_attention``. Without it a ``cpu``-preset training step
took 0.524 s instead of 0.384 s on a 2-core AMD EPYC (Zen 4, bf16): it saves 27 % of the step
(``benchmarks/kernel_value.py``; benchmarks/HISTORY.md, 2026-12-07). The kernel here computes only the causal half (a block
of query rows reads only the keys before it), keeps the softmax's log-sum-exp for the backward
instead of the pattern, and runs the small products register-blocked in fp32 in AVX-512 vectors, on
torch's own OpenMP threads (see ``c/attention.c``). Each (batch, head)
slice is computed by one thread from start to end, so results do not depend on the number of
threads, and fp32 training stays bit-reproducible. On CPUs with AMX (Xeon 4th gen. on), bf16 tensors
(training under autocast) take ``attention_amx.h``: the five products on bf16 tiles, the softmax in
AVX-512, and the computed operands P and dS each split into two bf16 (hi + lo), so that it is as
accurate as the fp32-vector kernel; a training layer's attention took half the time.

``available(d_head)`` says whether it runs here (x86-64 Linux with AVX-512 or AMX, a C compiler with OpenMP,
d_head a multiple of 32, ``$CIRCUITS_C_KERNELS`` not 0); otherwise ``kernels.causal_attention`` uses torch's
kernel. CPUs with AVX2 only run torch's: the AVX2 build of this kernel saved 10-14 % of an fp32 step, below the
15 % a kernel must save, and was removed. Tests compare both directions with fp64 torch.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os

import torch

from .build import C_DIR, cpu_flags, load

SOURCE = C_DIR / "attention.c"
HEADERS = tuple(C_DIR / name for name in ("attention_ops.h", "attention_body.h", "attention_amx.h",
                                          "attention_amx_backward.h", "attention_ops_end.h"))
# instruction set -> (CPU flags it needs, d_head must be a multiple of this), widest first. "amx" runs
# bf16 attention on AMX tiles (attention_amx.h; fp32 tensors take the AVX-512 kernel there): 32 columns
# of bf16 per tile product. "avx512" computes in fp32 vectors: d_head is two vectors of fp32.
ISAS = {"amx": (("amx_bf16", "amx_tile", "avx512_bf16", "avx512bw", "avx512f", "fma"), 32),
        "avx512": (("avx512f", "fma"), 32)}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled attention kernels (None where they do not run here)."""
    lib = load(SOURCE, HEADERS, ("-fopenmp",)) if _allowed() else None
    if lib is None:
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.amx_request.restype = ctypes.c_int
    for name in ISAS:
        for kind, n_tensors in (("forward", 5), ("backward", 9)):
            fn = getattr(lib, f"attention_{kind}_{name}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ptr] * (n_tensors + 1) + [ctypes.c_int, i64, i64, i64, i64, ctypes.c_float]
    return lib


def isa() -> str | None:
    """The widest instruction set of ``ISAS`` this CPU has (None: none of them). Capped, as torch's
    own kernels are, by ``$ATEN_CPU_CAPABILITY`` ("avx2" or "default": none), and for AMX,
    as oneDNN's matmuls are, by ``$ONEDNN_MAX_CPU_ISA`` (AMX only where it is unset, ALL or names AMX)."""
    return next((name for name in _allowed() if name != "amx" or _amx_granted()), None)


def _allowed() -> list[str]:
    """The names of ``ISAS`` this CPU has and the environment allows (see ``isa``), widest first."""
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    allowed = () if cap in ("default", "avx2") else tuple(ISAS)
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if onednn not in ("ALL", "DEFAULT") and "AMX" not in onednn:
        allowed = tuple(name for name in allowed if name != "amx")
    return [name for name, (flags, _) in ISAS.items() if name in allowed and set(flags) <= cpu_flags()]


def vector_isa() -> str | None:
    """The instruction set of the fp32 vector kernels here: ``isa()``, but AVX-512 where that is AMX
    (fp32 attention runs in AVX-512 vectors on AMX machines)."""
    name = isa()
    return "avx512" if name == "amx" else name


def _amx_granted() -> bool:
    """Whether Linux lets this process use AMX's tile registers (it must ask: ARCH_REQ_XCOMP_PERM; the
    library asks once and remembers a grant)."""
    lib = library()
    return lib is not None and lib.amx_request() == 0


def available(d_head: int) -> bool:
    """Whether the kernel runs here for heads of width ``d_head``."""
    name = isa()
    return name is not None and d_head % ISAS[name][1] == 0 and library() is not None


def _run(kind: str, tensors: list[torch.Tensor], shape: torch.Size) -> None:
    """Call ``attention_{kind}`` on ``tensors`` ([b, h, n, e], all fp32 or all bf16, e contiguous; and
    the fp32 log-sum-exp [b, h, n], contiguous, 5th in the forward's order and 6th in the backward's)."""
    b, h, n, e = shape
    bf16 = 3 if tensors[0].dtype == torch.bfloat16 else 0  # bit 0: inputs, bit 1: outputs
    strides = torch.tensor([s for t in tensors if t.dim() == 4 for s in t.stride()[:3]], dtype=torch.int64)
    fn = getattr(library(), f"attention_{kind}_{isa() if bf16 else vector_isa()}")
    code = fn(*(t.data_ptr() for t in tensors), strides.data_ptr(), bf16, b * h, h, n, e, 1.0 / math.sqrt(e))
    if code:
        raise RuntimeError(f"attention kernel {kind} failed with code {code} "
                           "(-1: unsupported shape, -2: out of memory, -3: AMX refused by the OS)")


def _empty_like_bnhe(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised [b, h, n, e] tensor of x's dtype laid out as [b, n, h, e]: heads side by
    side, the layout ``model.Attention`` concatenates them in, so that reshape costs no copy."""
    b, h, n, e = x.shape
    return torch.empty(b, n, h, e, dtype=x.dtype).transpose(1, 2)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Named errors for inputs the kernel does not take."""
    if q.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"q: expected float32 or bfloat16, got {q.dtype}")
    for x, name in ((q, "q"), (k, "k"), (v, "v")):
        if x.dtype != q.dtype or x.device.type != "cpu" or x.dim() != 4:
            raise ValueError(f"{name}: expected a [batch, head, pos, d_head] {q.dtype} CPU tensor, got "
                             f"{x.dtype} {tuple(x.shape)} on {x.device}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not available(q.shape[-1]):
        raise RuntimeError(f"the C attention kernel does not run here for d_head={q.shape[-1]} "
                           "(see circuits.cpu_attention.available)")


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _CausalAttention(torch.autograd.Function):
    """q, k, v [b, h, n, e] in, z [b, h, n, e] out (laid out as [b, n, h, e]); the gradients dq, dk keep the
    strides of q and k, so views of one projection's output (the model's) get their gradients in that layout."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
        z = _empty_like_bnhe(q)
        lse = torch.empty(q.shape[:3], dtype=torch.float32)
        _run("forward", [q, k, v, z, lse], q.shape)
        ctx.save_for_backward(q, k, v, z, lse)
        return z

    @staticmethod
    def backward(ctx, dz: torch.Tensor):
        q, k, v, z, lse = ctx.saved_tensors
        dz = _unit_stride(dz.to(q.dtype))
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), _empty_like_bnhe(v)  # empty_like keeps strides
        _run("backward", [q, k, v, z, dz, lse, dq, dk, dv], v.shape)
        return dq, dk, dv


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax_causal(q k^T / sqrt(d_head)) v for [batch, head, pos, d_head] CPU tensors, all fp32 or
    all bf16, with autograd. It computes in fp32 arithmetic either way (on AMX, bf16 tiles with P and dS
    split in two): bf16 inputs are read as they are, and the result (laid out as [batch, pos, head,
    d_head]) and the gradients are rounded to bf16 as they are written. Needs ``available(d_head)``."""
    _check(q, k, v)
    return _CausalAttention.apply(q, k, v)
