"""Building and loading the package's small C kernels (``c/attention.c``, ``c/group_max.c``).

Each source is compiled on first use with the system's C compiler (``$CC``, else ``cc`` or ``gcc``)
into ``$XDG_CACHE_HOME/circuits`` (default ``~/.cache/circuits``), under a name that hashes the
sources and flags, so an edited kernel is rebuilt; the file appears atomically (``os.replace``).
Each kernel names its instruction set in target attributes or pragmas, so no ``-march`` is needed
and one build serves every x86-64 CPU; Python calls only what the CPU has (``cpu_flags``).
``$CIRCUITS_C_KERNELS=0`` turns every kernel off (torch runs instead).
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
from pathlib import Path

FLAGS = ("-O3", "-shared", "-fPIC")
C_DIR = Path(__file__).with_name("c")  # every C source and header of the package
ENV = "CIRCUITS_C_KERNELS"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The flags of /proc/cpuinfo (empty off Linux x86-64: no kernel runs there)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return frozenset()
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "circuits"


def build(source: Path, headers: tuple[Path, ...] = (), flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` (which may include ``headers``) with ``FLAGS + flags``, once per content and
    flags; the path of the .so."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    flags = (*FLAGS, *flags)
    content = b"".join(p.read_bytes() for p in (source, *headers)) + " ".join(flags).encode()
    target = _cache_dir() / f"{source.stem}-{hashlib.sha256(content).hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *flags, "-o", tmp, str(source)], check=True, capture_output=True, text=True)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return target


def load(source: Path, headers: tuple[Path, ...] = (), flags: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """The compiled library, or None where kernels are turned off or it cannot be built or loaded."""
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(build(source, headers, flags)))
    except (OSError, RuntimeError, subprocess.CalledProcessError):
        return None
