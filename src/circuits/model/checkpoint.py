"""Checkpoints: safetensors (no pickle), written atomically, verified by sha256 on load.

A weights file holds only TransformerLens state-dict names (``embed.W_E``, ``pos_embed.W_pos``,
``blocks.{l}.attn.W_Q|W_K|W_V|W_O``, ``unembed.W_U``) plus string metadata: the model config
as JSON and the sha256 of the tensors. A resume checkpoint holds the same weights plus the
optimizer moments (``optimizer.{name}.exp_avg|exp_avg_sq``) and the data generator's state.

Writes go to a temporary file in the same folder and are renamed over the target only when
complete (``os.replace`` is atomic), so an interrupted save never damages the last good file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from circuits.config import ModelConfig, from_json, to_json
from .transformer import AttnOnlyTransformer

FORMAT = "circuits-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted or of another shape."""


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Save ``tensors`` to ``path`` as safetensors with a sha256 in the metadata, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**metadata, "format": FORMAT, "sha256": tensors_sha256(tensors)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def verified_load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a file written by ``atomic_save``; raise ``CheckpointError`` unless it is intact."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file: {err}") from err
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {metadata.get('format')!r}, expected {FORMAT!r}")
    if tensors_sha256(tensors) != metadata.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted: sha256 of its tensors does not match")
    return tensors, metadata


def model_state(model: AttnOnlyTransformer, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's weights under TransformerLens names, optionally cast (bf16 snapshots)."""
    return {k: (v.to(dtype) if dtype else v) for k, v in model.state_dict().items()}


def save_model(model: AttnOnlyTransformer, path: str | Path, dtype: torch.dtype | None = None,
               extra: dict[str, str] | None = None) -> Path:
    """Write the weights and config of ``model`` (optionally in ``dtype``) to ``path``."""
    meta = {"model_config": to_json(model.cfg), **(extra or {})}
    return atomic_save(model_state(model, dtype), path, meta)


def check_shapes(cfg: ModelConfig, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Raise if the tensors are not exactly those of a model with config ``cfg``."""
    expected = {k: tuple(v.shape) for k, v in AttnOnlyTransformer(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items() if not k.startswith("optimizer.")}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
        raise CheckpointError(f"checkpoint {path} does not fit a model with config {cfg}: "
                              f"mismatched (name, shape) entries {diff}")


def load_model(path: str | Path, expect: ModelConfig | None = None,
               device: str | torch.device = "cpu") -> AttnOnlyTransformer:
    """Load a model saved by ``save_model`` (fp32 weights; bf16 snapshots are upcast)."""
    path = Path(path)
    tensors, meta = verified_load(path)
    cfg = from_json(ModelConfig, meta["model_config"])
    if expect is not None and cfg != expect:
        raise CheckpointError(f"checkpoint {path} holds a model with config {cfg}, expected {expect}")
    check_shapes(cfg, tensors, path)
    model = AttnOnlyTransformer(cfg)
    weights = {k: v.float() for k, v in tensors.items() if not k.startswith("optimizer.")}
    model.load_state_dict(weights, strict=True)
    return model.to(device)


def read_metadata(path: str | Path) -> dict:
    """A checkpoint's metadata, JSON fields decoded; no tensors are read."""
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    return {k: (json.loads(v) if k.endswith("_config") or k == "state" else v) for k, v in meta.items()}
