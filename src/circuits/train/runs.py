"""Training a preset's models, and publishing a finished run.

    runs/<preset>/<n>l/               local training runs (ignored by git; resumable)
    data/checkpoints/<preset>/<n>l/   published (committed) models: model.safetensors, log.jsonl[, snapshots/]

``ensure_model`` is the train-or-load step the book's training chapter starts from: the published model when
there is one (``model.published.model_dir``), otherwise a local run, trained on the spot if it is missing (the
smoke preset in CI trains in seconds). ``CIRCUITS_TRAIN=1`` forces local training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from circuits.config import Preset, get_preset
from circuits.data.tokens import preset_tokens
from circuits.model.checkpoint import load_model, read_metadata, save_model
from circuits.model.published import load_preset_model, model_dir, published_dir, run_dir, tokenizer_meta
from circuits.model.transformer import AttnOnlyTransformer

from .loop import train


def train_preset(n_layers: int, preset: Preset | None = None, progress: bool = True) -> Path:
    """Train (or resume) the preset's ``n_layers`` model in ``runs/``; returns the run folder."""
    preset = preset or get_preset()
    out = run_dir(preset, n_layers)
    meta = {**tokenizer_meta(preset), "corpus": preset.data.corpus}
    train(preset.model_config(n_layers), preset.train_config(n_layers), preset_tokens(preset), out,
          data_cfg=preset.data, progress=progress, model_meta=meta)
    return out


def ensure_model(n_layers: int, preset: Preset | None = None) -> AttnOnlyTransformer:
    """The preset's ``n_layers`` model: published, else the local run, trained first if it has not finished."""
    preset = preset or get_preset()
    if not (model_dir(n_layers, preset) / "model.safetensors").exists():
        train_preset(n_layers, preset)
    return load_preset_model(n_layers, preset)


def snapshot_paths(folder: Path) -> list[Path]:
    """A run's snapshots in training order."""
    return sorted((folder / "snapshots").glob("step_*.safetensors"))


def _snapshots_to_publish(snaps: list[Path], n_snapshots: int, steps: list[int] | None) -> list[Path]:
    """Exactly the snapshots at ``steps``, else ``n_snapshots`` of ``snaps`` spread evenly in log-steps."""
    if steps:
        by_step = {int(p.stem.split("_")[1]): p for p in snaps}
        missing = sorted(set(steps) - set(by_step))
        if missing:
            raise ValueError(f"the run has no snapshots at steps {missing}; it has {sorted(by_step)}")
        return [by_step[s] for s in sorted(set(steps))]
    if not snaps or n_snapshots <= 0:
        return []
    keep = sorted({int(i) for i in np.round(np.linspace(0, len(snaps) - 1, n_snapshots))})
    return [snaps[i] for i in keep]


def publish(n_layers: int, preset: Preset, n_snapshots: int = 0, steps: list[int] | None = None) -> Path:
    """Copy a finished local run into ``data/checkpoints``: the model, its log and ``n_snapshots`` snapshots
    (none by default: every figure of the book reads the log, and each snapshot grows every clone).

    The snapshots kept are spread evenly (in log-steps) over those the run wrote, or are exactly the run's
    snapshots at ``steps``.
    """
    src, dst = run_dir(preset, n_layers), published_dir(preset, n_layers)
    if not (src / "model.safetensors").exists():
        raise FileNotFoundError(f"{src} has no finished model to publish")
    model = load_model(src / "model.safetensors", expect=preset.model_config(n_layers))  # verify first
    meta = {k: v for k, v in read_metadata(src / "model.safetensors").items()
            if k not in ("format", "sha256", "model_config")}
    if "tokenizer_sha256" not in meta:  # runs started before models recorded their tokenizer
        print(f"warning: {src} does not record its tokenizer; recording the current one")
        meta.update(tokenizer_meta(preset))
    snaps = _snapshots_to_publish(snapshot_paths(src), n_snapshots, steps)  # may refuse: before rmtree
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    save_model(model, dst / "model.safetensors", extra=meta)
    shutil.copy2(src / "log.jsonl", dst / "log.jsonl")
    if snaps:
        (dst / "snapshots").mkdir()
    for snap in snaps:
        shutil.copy2(snap, dst / "snapshots" / snap.name)
    return dst
