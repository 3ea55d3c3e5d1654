"""Row-wise maxima of column groups of a low-rank product, in a small C kernel (``c/group_max.c``).

The circuit scans (``analysis.scan``) need, for every entry of a d_vocab x d_vocab product of inner
width 64, whether it can clear a threshold. torch can only write the product out (bound by that
output: 0.28 s a circuit at GPT-2's vocabulary on a 2-core Xeon with AMX) and read it back (0.1 s
more). The kernel here keeps only the maximum of each group of ``GROUP`` columns per row, 1/64 of
the entries, on Intel AMX tiles (bf16 inputs, fp32 accumulation): 0.14 s a circuit on that Xeon, and the
whole one-layer scan of ``benchmarks/circuit_analysis.py`` 6.2 s against 10.4 s with torch's tiles in the
same session. ``reference_group_maxima`` is what it computes, in plain torch.

It is compiled on first use with the system's C compiler (``build``, under a second) and loaded with
ctypes; threads call it on disjoint rows (ctypes releases the GIL). Where the CPU lacks AMX, no compiler is
found or Linux refuses the AMX state, ``kind_for`` says None and the scans use torch. An fp32 AVX2 kernel was
removed: held to AVX2, an AMD EPYC ran the scan in 9.1 s with it and 8.4 s with torch (benchmarks/HISTORY.md).
``$CIRCUITS_C_KERNELS=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor

import torch

from .build import C_DIR, cpu_flags as _cpu_flags, load

GROUP = 64  # columns per maximum: four AMX tiles of columns
SOURCE = C_DIR / "group_max.c"
# kind -> (input dtype, CPU flags it needs)
KINDS = {"amx": (torch.bfloat16, ("amx_bf16", "amx_tile", "avx512f", "avx512bw"))}


@functools.cache
def _library() -> ctypes.CDLL | None:
    lib = load(SOURCE) if any(_has(kind) for kind in KINDS) else None
    if lib is None:
        return None
    lib.amx_request.restype = ctypes.c_int
    lib.group_max_amx.restype = None
    lib.group_max_amx.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    return lib


def _has(kind: str) -> bool:
    return set(KINDS[kind][1]) <= _cpu_flags()


@functools.cache
def _amx_granted() -> bool:
    return _library() is not None and _library().amx_request() == 0  # Linux hands out AMX state on request


def available(kind: str, inner_dim: int = 64) -> bool:
    """Whether kernel ``kind`` ("amx") runs here for factors of this inner width."""
    if kind not in KINDS:
        raise ValueError(f"unknown kernel {kind!r}; expected one of {sorted(KINDS)}")
    return _has(kind) and _library() is not None and inner_dim <= 64 and _amx_granted()


def kind_for(dtype: torch.dtype, inner_dim: int) -> str | None:
    """The kernel the scans use for factors of this dtype and inner width (None: use torch)."""
    return next((kind for kind, (dt, _) in KINDS.items() if dt == dtype and available(kind, inner_dim)), None)


class PackedColumns:
    """The columns of B, given as the rows of ``Bt`` [n, k], laid out for kernel ``kind``.

    n is padded to a multiple of GROUP by repeating the last column, so every group maximum is a
    maximum of real entries. "amx": bf16, k zero-padded to 32 or 64 (zeros add nothing), pairs of
    k interleaved per column.
    """

    def __init__(self, Bt: torch.Tensor, kind: str):
        n, k = Bt.shape
        dtype = KINDS[kind][0]
        if Bt.dtype != dtype or n == 0 or k > 64:
            raise ValueError(f"kernel {kind!r} expects {dtype} columns [n > 0, k <= 64], got {Bt.dtype} {tuple(Bt.shape)}")
        self.kind, self.n, self.k, self.groups = kind, n, k, -(-n // GROUP)
        self.kt = 1 if k <= 32 else 2  # AMX tiles along k: 32 bf16 values each
        Bt = torch.nn.functional.pad(Bt, (0, 32 * self.kt - k))
        Bt = torch.cat([Bt, Bt[-1:].expand(self.groups * GROUP - n, -1)])
        pairs = Bt.contiguous().view(torch.int32)  # [n', 16 kt]: one int32 = two consecutive k
        # [column block of 16, k tile, pair, column]
        self.data = pairs.view(self.groups * 4, 16, self.kt, 16).permute(0, 2, 3, 1).contiguous()


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
        raise RuntimeError(f"kernel {B.kind!r} unavailable here (see circuits.kernels.group_max.available)")
    if A.dtype != dtype or A.ndim != 2 or A.shape[1] != B.k:
        raise ValueError(f"expected A [rows, {B.k}] {dtype}, got {A.dtype} {tuple(A.shape)}")
    rows = A.shape[0]
    padded = -(-rows // 16) * 16  # whole tiles of 16 rows and 32 k
    A = torch.nn.functional.pad(A, (0, 32 * B.kt - B.k, 0, padded - rows)).contiguous()
    out = torch.empty(B.groups, padded, dtype=torch.float32)
    threads = max(1, min(threads or torch.get_num_threads(), -(-padded // 16)))
    per = -(-padded // threads // 16) * 16
    row_bytes = A.shape[1] * A.element_size()

    def run(start: int) -> None:
        stop = min(padded, start + per)
        lib.group_max_amx(A.data_ptr() + start * row_bytes, B.data.data_ptr(), out.data_ptr() + start * 4,
                          stop - start, padded, B.groups, B.kt)

    list(_pool(threads).map(run, range(0, padded, per)))
    return out[:, :rows].T


def reference_group_maxima(A: torch.Tensor, Bt: torch.Tensor) -> torch.Tensor:
    """What ``group_maxima`` computes, in plain torch: ``A @ Btᵀ`` [rows, n] written out, then the maximum of
    each group of GROUP columns (the last group padded by repeating the last column), [rows, groups] fp32."""
    dense = A.float() @ Bt.float().T
    pad = -dense.shape[1] % GROUP
    dense = torch.cat([dense, dense[:, -1:].expand(-1, pad)], 1)
    return dense.view(dense.shape[0], -1, GROUP).amax(-1)
