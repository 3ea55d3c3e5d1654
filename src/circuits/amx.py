"""Row-wise maxima of column groups of a low-rank product on Intel AMX (``amx_group_max.c``).

The circuit scans (``circuit_tables``) need, for every entry of a d_vocab x d_vocab product of
inner width 64, whether it can clear a threshold. torch can only write the product out (bound by
that output: 0.28 s a circuit at GPT-2's vocabulary on a 2-core Xeon) and read it back (0.1 s
more). The small C kernel here multiplies with AMX tiles and keeps only the maximum of each group
of ``GROUP`` columns per row, in 0.16 s with nothing written but the maxima (1/64 of the product).

It is compiled on first use with the system's C compiler into ``$XDG_CACHE_HOME/circuits``
(about a second) and loaded with ctypes; threads call it on disjoint rows (ctypes releases the
GIL). Where the CPU has no AMX, no compiler is found or Linux refuses the AMX state,
``available()`` is False and the scans use torch. ``$CIRCUITS_AMX=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

GROUP = 64  # columns per maximum: four AMX tiles of 16 columns
SOURCE = Path(__file__).with_name("amx_group_max.c")
FLAGS = ("-O3", "-mamx-tile", "-mamx-bf16", "-mavx512f", "-mavx512bw", "-shared", "-fPIC")
ENV = "CIRCUITS_AMX"


def _cpu_has_amx() -> bool:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags and "amx_tile" in flags


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "circuits"


def _build() -> Path:
    """Compile the kernel once per source and flags; the file appears atomically (os.replace)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = _cache_dir() / f"amx_group_max-{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE)], check=True, capture_output=True, text=True)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return target


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get(ENV, "1") == "0" or not _cpu_has_amx():
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, RuntimeError, subprocess.CalledProcessError):
        return None
    lib.amx_request.restype = ctypes.c_int
    if lib.amx_request() != 0:  # Linux refused the AMX tile state to this process
        return None
    lib.group_max.restype = None
    lib.group_max.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    return lib


def available(inner_dim: int = 64) -> bool:
    """Whether ``group_maxima`` runs here for factors of this inner width (at most 64)."""
    return inner_dim <= 64 and _library() is not None


class PackedColumns:
    """The columns of B (given as rows of ``Bt`` [n, k], bf16) in AMX's pair-interleaved tile layout.

    k is zero-padded to 32 or 64 (zeros add nothing); n is padded to a multiple of GROUP by
    repeating the last column, so every group maximum is a maximum of real entries.
    """

    def __init__(self, Bt: torch.Tensor):
        n, k = Bt.shape
        if Bt.dtype != torch.bfloat16 or k > 64 or n == 0:
            raise ValueError(f"expected bf16 columns [n > 0, k <= 64], got {Bt.dtype} {tuple(Bt.shape)}")
        self.kt = 1 if k <= 32 else 2  # AMX tiles along k: 32 bf16 values each
        self.k, self.n, self.groups = k, n, -(-n // GROUP)
        Bt = torch.nn.functional.pad(Bt, (0, 32 * self.kt - k))
        Bt = torch.cat([Bt, Bt[-1:].expand(self.groups * GROUP - n, -1)])
        pairs = Bt.contiguous().view(torch.int32)  # [n', 16 kt]: one int32 = two consecutive k
        # [column block of 16, k tile, pair, column]
        self.data = pairs.view(self.groups * 4, 16, self.kt, 16).permute(0, 2, 3, 1).contiguous()


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="amx")


def group_maxima(A: torch.Tensor, B: PackedColumns, threads: int | None = None) -> torch.Tensor:
    """``max_{c in group g} (A @ B)[i, c]`` for each row i and group g of GROUP columns: [rows, groups] fp32.

    A: [rows, k] bf16 on the CPU. Products of bf16 values accumulate in fp32 (AMX rounds no
    intermediate result, but treats subnormal inputs and outputs as zero).
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("AMX kernel unavailable (see circuits.amx.available)")
    if A.dtype != torch.bfloat16 or A.ndim != 2 or A.shape[1] != B.k:
        raise ValueError(f"expected A [rows, {B.k}] bf16, got {A.dtype} {tuple(A.shape)}")
    rows = A.shape[0]
    padded = -(-rows // 16) * 16
    A = torch.nn.functional.pad(A, (0, 32 * B.kt - B.k, 0, padded - rows)).contiguous()
    out = torch.empty(B.groups, padded, dtype=torch.float32)
    threads = max(1, min(threads or torch.get_num_threads(), padded // 16))
    per = -(-padded // threads // 16) * 16
    row_bytes = A.shape[1] * A.element_size()

    def run(start: int) -> None:
        stop = min(padded, start + per)
        lib.group_max(A.data_ptr() + start * row_bytes, B.data.data_ptr(), out.data_ptr() + start * 4,
                      stop - start, padded, B.groups, B.kt)

    list(_pool(threads).map(run, range(0, padded, per)))
    return out[:, :rows].T
