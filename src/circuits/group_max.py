"""Row-wise maxima of column groups of a low-rank product, in small C kernels (``group_max.c``).

The circuit scans (``circuit_scan``) need, for every entry of a d_vocab x d_vocab product of inner
width 64, whether it can clear a threshold. torch can only write the product out (bound by that
output: 0.28 s a circuit at GPT-2's vocabulary on a 2-core Xeon with AMX) and read it back (0.1 s
more). The kernels here keep only the maximum of each group of ``GROUP`` columns per row, 1/64 of
the entries:

  ``"amx"``   bf16 inputs, fp32 accumulation, on Intel AMX tiles: 0.14 s a circuit on that Xeon;
  ``"avx2"``  fp32 throughout with AVX2 FMAs, for CPUs with neither fast bf16 nor AVX-512 (where
              the scan is exact fp32 anyway and torch's fp32 matmul is slow).

They are compiled on first use with the system's C compiler (``ckernels``, under a second) and
loaded with ctypes; threads call them on disjoint rows (ctypes releases the GIL). Where the CPU
lacks the instructions, no compiler is found or Linux refuses the AMX state, ``available`` is False
and the scans use torch. ``$CIRCUITS_C_KERNELS=0`` turns both off.
"""

from __future__ import annotations

import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .ckernels import cpu_flags as _cpu_flags, load

GROUP = 64  # columns per maximum: four AMX tiles (or eight AVX2 registers) of columns
SOURCE = Path(__file__).with_name("group_max.c")
# kind -> (input dtype, CPU flags it needs, flags that make torch the faster choice). On AVX-512 CPUs
# torch's own fp32 scan beats the AVX2 kernel (5.6 s against 11.1 s for two paper-size heads on the
# AMX Xeon); on AVX2-only CPUs torch's fp32 matmul of inner width 64 runs at 61 GFLOP/s (an AMD
# EPYC), the kernel at 86 % of the FMA peak (137 GFLOP/s on the Xeon's AVX2 units).
KINDS = {"amx": (torch.bfloat16, ("amx_bf16", "amx_tile", "avx512f", "avx512bw"), ()),
         "avx2": (torch.float32, ("avx2", "fma"), ("avx512f",))}


@functools.cache
def _library() -> ctypes.CDLL | None:
    lib = load(SOURCE) if any(_has(kind) for kind in KINDS) else None
    if lib is None:
        return None
    lib.amx_request.restype = ctypes.c_int
    for name, last in (("group_max_amx", ctypes.c_int), ("group_max_f32", ctypes.c_int64)):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [last]
    return lib


def _has(kind: str) -> bool:
    return set(KINDS[kind][1]) <= _cpu_flags()


@functools.cache
def _amx_granted() -> bool:
    return _library() is not None and _library().amx_request() == 0  # Linux hands out AMX state on request


def available(kind: str, inner_dim: int = 64) -> bool:
    """Whether kernel ``kind`` ("amx" or "avx2") runs here for factors of this inner width."""
    if kind not in KINDS:
        raise ValueError(f"unknown kernel {kind!r}; expected one of {sorted(KINDS)}")
    if not _has(kind) or _library() is None:
        return False
    if kind == "amx":
        return inner_dim <= 64 and _amx_granted()
    return True


def kind_for(dtype: torch.dtype, inner_dim: int) -> str | None:
    """The kernel the scans use for factors of this dtype and inner width: one that runs here and
    beats torch on this CPU (None: use torch)."""
    return next((kind for kind, (dt, _, instead) in KINDS.items()
                 if dt == dtype and not set(instead) & _cpu_flags() and available(kind, inner_dim)), None)


class PackedColumns:
    """The columns of B, given as the rows of ``Bt`` [n, k], laid out for kernel ``kind``.

    n is padded to a multiple of GROUP by repeating the last column, so every group maximum is a
    maximum of real entries. "amx": bf16, k zero-padded to 32 or 64 (zeros add nothing), pairs of
    k interleaved per column; "avx2": fp32, [group][k][64 columns].
    """

    def __init__(self, Bt: torch.Tensor, kind: str):
        n, k = Bt.shape
        dtype = KINDS[kind][0]
        if Bt.dtype != dtype or n == 0 or (kind == "amx" and k > 64):
            raise ValueError(f"kernel {kind!r} expects {dtype} columns [n > 0, k{' <= 64' if kind == 'amx' else ''}]"
                             f", got {Bt.dtype} {tuple(Bt.shape)}")
        self.kind, self.n, self.k, self.groups = kind, n, k, -(-n // GROUP)
        self.kt = 1 if k <= 32 else 2  # AMX tiles along k: 32 bf16 values each
        if kind == "amx":
            Bt = torch.nn.functional.pad(Bt, (0, 32 * self.kt - k))
        Bt = torch.cat([Bt, Bt[-1:].expand(self.groups * GROUP - n, -1)])
        if kind == "amx":
            pairs = Bt.contiguous().view(torch.int32)  # [n', 16 kt]: one int32 = two consecutive k
            # [column block of 16, k tile, pair, column]
            self.data = pairs.view(self.groups * 4, 16, self.kt, 16).permute(0, 2, 3, 1).contiguous()
        else:
            self.data = Bt.view(self.groups, GROUP, k).transpose(1, 2).contiguous()  # [group, k, column]


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="group_max")


def group_maxima(A: torch.Tensor, B: PackedColumns, threads: int | None = None) -> torch.Tensor:
    """``max_{c in group g} (A @ B)[i, c]`` for each row i and group g of GROUP columns: [rows, groups] fp32.

    A: [rows, k] on the CPU, in the dtype of B's kernel. AMX accumulates products of bf16 values
    in fp32 without rounding them, but treats subnormal inputs and outputs as zero.
    """
    lib = _library()
    dtype = KINDS[B.kind][0]
    if lib is None or not available(B.kind, B.k):
        raise RuntimeError(f"kernel {B.kind!r} unavailable here (see circuits.group_max.available)")
    if A.dtype != dtype or A.ndim != 2 or A.shape[1] != B.k:
        raise ValueError(f"expected A [rows, {B.k}] {dtype}, got {A.dtype} {tuple(A.shape)}")
    rows = A.shape[0]
    if B.kind == "amx":  # whole tiles of 16 rows and 32 k
        padded = -(-rows // 16) * 16
        A = torch.nn.functional.pad(A, (0, 32 * B.kt - B.k, 0, padded - rows))
    else:
        padded = rows
    A = A.contiguous()
    out = torch.empty(B.groups, padded, dtype=torch.float32)
    threads = max(1, min(threads or torch.get_num_threads(), -(-padded // 16)))
    per = -(-padded // threads // 16) * 16
    row_bytes = A.shape[1] * A.element_size()

    def run(start: int) -> None:
        stop = min(padded, start + per)
        fn, last = (lib.group_max_amx, B.kt) if B.kind == "amx" else (lib.group_max_f32, B.k)
        fn(A.data_ptr() + start * row_bytes, B.data.data_ptr(), out.data_ptr() + start * 4,
           stop - start, padded, B.groups, last)

    list(_pool(threads).map(run, range(0, padded, per)))
    return out[:, :rows].T
