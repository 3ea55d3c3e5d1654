"""Keeping freed memory in the process while training on a CPU (glibc's malloc).

A training step allocates and frees the same few dozen large tensors every time (activations, their
gradients, the loss's logits buffer). glibc hands allocations above a threshold back to the kernel when
they are freed (``munmap``, or trimming the heap's top), so the next step's tensors start as fresh pages,
each one a page fault and a zeroing by the kernel: about 8,900 faults a step of the ``cpu`` preset, some
6 % of its CPU time, measured with ``perf`` on a 2-core Xeon (``MALLOC_*`` set in the environment took them
to none). ``keep_freed_memory`` sets the same through ``mallopt``: allocations up to 32 MB come from the
heap, and freed memory stays with the process for reuse. The cost is that the process keeps its peak
heap until it exits, which is what a training run does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to serve allocations up to 32 MB from the heap and not to return freed memory to the
    kernel (process-wide, once). True where it took effect; False off glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
