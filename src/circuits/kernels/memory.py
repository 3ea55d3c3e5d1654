"""Keeping freed memory in the process while training on a CPU (glibc's malloc).

A training step allocates and frees the same few dozen large tensors every time (activations, their
gradients, the loss's logits buffer). glibc hands allocations above a threshold back to the kernel when
they are freed (``munmap``, or trimming the heap's top), so the next step's tensors start as fresh pages,
each one a page fault and a zeroing by the kernel: about 8,900 faults a step of the ``cpu`` preset, some
6 % of its CPU time, measured with ``perf`` on a 2-core Xeon (``MALLOC_*`` set in the environment took them
to none). ``keep_freed_memory`` sets the same through ``mallopt``: allocations up to 32 MB come from the
heap, and freed memory stays with the process for reuse. The cost is that the process keeps its peak
heap until it exits, which is what a training run does anyway.

``keep_all_in_heap`` goes further for a benchmark's peer: with glibc's M_MMAP_MAX at 0 even allocations above
32 MB come from the heap and are reused. Our step allocates nothing that large, but TransformerLens's does (its
fp32 logits and their log-softmax, 134 MB each at the ``cpu`` preset), and by default it faults those pages in
every step: with them kept its fp32 step ran 2.2x faster on a 2-core AMD EPYC (benchmarks/HISTORY.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


def _mallopt(settings: tuple[tuple[int, int], ...]) -> bool:
    """glibc's ``mallopt`` for each (option, value); False where there is no glibc or one is refused."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in settings)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to serve allocations up to 32 MB from the heap and not to return freed memory to the
    kernel (process-wide, once). True where it took effect; False off glibc (nothing changes there)."""
    return _mallopt(((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))


@functools.cache
def keep_all_in_heap() -> bool:
    """``keep_freed_memory``, and every allocation from the heap whatever its size (M_MMAP_MAX = 0), so that
    large freed blocks are reused too (process-wide, once; for benchmarks: a process can then not hand a
    large tensor's memory back to the kernel). True where both took effect."""
    return keep_freed_memory() and _mallopt(((M_MMAP_MAX, 0),))
