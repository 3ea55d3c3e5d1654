"""Results shared between chapters, computed once per build: the first notebook that needs a result computes
it and writes it under ``_build/.circuits/<preset>/``, the others read it.

A result is a dict of numbers, strings, lists and numpy arrays, stored as JSON plus one ``.npz`` (no pickle).
Its file name carries a key made of the models it was computed from (the sha256 of their weights), so a cache
left by another model is never read. ``make book`` clears the folder first, so every build computes afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from circuits.paths import project_root

CACHE_ENV = "CIRCUITS_CACHE"


def cache_dir(preset_name: str) -> Path:
    """``$CIRCUITS_CACHE/<preset>`` or ``<project>/_build/.circuits/<preset>``."""
    base = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else project_root() / "_build" / ".circuits"
    return base / preset_name


def model_key(*models: torch.nn.Module) -> str:
    """A short digest of the models' weights: results are tied to the exact models they came from."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _save(result: dict, path: Path) -> None:
    arrays = {k: np.asarray(v) for k, v in result.items() if isinstance(v, (np.ndarray, torch.Tensor))}
    plain = {k: v for k, v in result.items() if k not in arrays}
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".npz", lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})),
                          (".json", lambda f: f.write(json.dumps(plain).encode()))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path.with_suffix(suffix))  # atomic: a reader sees the whole file or none


def _load(path: Path) -> dict | None:
    if not (path.with_suffix(".json").exists() and path.with_suffix(".npz").exists()):
        return None
    result = json.loads(path.with_suffix(".json").read_text())
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
        result.update({k: arrays[k] for k in arrays.files})
    return result


def cached(preset_name: str, name: str, key: str, compute: Callable[[], dict]) -> dict:
    """``compute()``'s result, read from the cache when an earlier notebook of this build stored it under
    (``name``, ``key``). Tensors come back as numpy arrays, tuples as lists."""
    path = cache_dir(preset_name) / f"{name}-{key}"
    found = _load(path)
    if found is not None:
        return found
    result = compute()
    _save(result, path)
    return _load(path)
