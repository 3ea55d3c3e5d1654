"""circuits.cpu_memory: glibc keeps freed memory, so a training step's tensors stop page-faulting."""

import ctypes.util
import platform
import subprocess
import sys

import pytest

from circuits.kernels import memory as cpu_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

ROUNDS = """
import ctypes, resource, sys
from circuits.kernels import memory as cpu_memory
if sys.argv[1] == "keep":
    assert cpu_memory.keep_freed_memory()
if sys.argv[1] == "heap":
    assert cpu_memory.keep_all_in_heap()
size = int(sys.argv[2]) << 20
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(3):  # size MB allocated, written and freed, three times
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1], faults[2])
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    """glibc by default maps a first 20 MB block and unmaps it when freed, and the second one faults its
    5,120 pages in again; after keep_freed_memory the block stays with the process from the first round
    on. (A cpu-preset training step: about 16,700 faults by default, 1,000 with it.)"""
    rounds = {mode: faulted_rounds(mode, 20) for mode in ("default", "keep")}
    assert rounds["default"][0] > 4000, rounds
    assert max(rounds["keep"]) < 100, rounds


def faulted_rounds(mode: str, megabytes: int) -> list[int]:
    """Page faults of the second and third rounds of ROUNDS in a fresh process."""
    return [int(x) for x in subprocess.run([sys.executable, "-c", ROUNDS, mode, str(megabytes)], capture_output=True,
                                           text=True, check=True).stdout.split()]


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_blocks_above_32_mb_are_reused_only_when_all_is_kept_in_the_heap():
    """A 100 MB block (TransformerLens's logits are 134 MB at the cpu preset) is mapped and unmapped every
    round under keep_freed_memory, 25,600 pages faulted in each time; keep_all_in_heap reuses it."""
    rounds = {mode: faulted_rounds(mode, 100) for mode in ("keep", "heap")}
    assert min(rounds["keep"]) > 20000, rounds
    assert max(rounds["heap"]) < 100, rounds


def test_returns_false_without_mallopt(monkeypatch):
    cpu_memory.keep_freed_memory.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "/nonexistent/libc.so")
    try:
        assert cpu_memory.keep_freed_memory() is False
    finally:
        cpu_memory.keep_freed_memory.cache_clear()
