"""Where a preset's models live, and the train-or-load step every chapter starts from.

    data/checkpoints/<preset>/<n>l/   published (committed) models: model.safetensors, log.jsonl,
                                      snapshots/step_*.safetensors (bf16)
    runs/<preset>/<n>l/               local training runs (ignored by git; resumable)

A chapter asks for ``model_dir(n_layers)``: the published model of the preset when there is
one, otherwise a local run, trained on the spot if needed (the smoke preset in CI trains
in seconds). ``CIRCUITS_TRAIN=1`` forces local training even when published models exist.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_model, read_metadata, save_model
from .config import Preset, get_preset
from .model import AttnOnlyTransformer
from .paths import data_dir, project_root

TRAIN_ENV = "CIRCUITS_TRAIN"


def published_dir(preset: Preset, n_layers: int) -> Path:
    return data_dir() / "checkpoints" / preset.name / f"{n_layers}l"


def run_dir(preset: Preset, n_layers: int) -> Path:
    return project_root() / "runs" / preset.name / f"{n_layers}l"


def preset_tokens(preset: Preset) -> dict[str, np.ndarray]:
    """Token memmaps of the preset's corpus and tokenizer (built and cached on first use)."""
    from .tokens import prepare_tokens

    return prepare_tokens(preset.data.corpus, preset.data.tokenizer)


def train_preset(n_layers: int, preset: Preset | None = None, progress: bool = True) -> Path:
    """Train (or resume) the preset's ``n_layers`` model in ``runs/``; returns the run folder."""
    from .train import train

    preset = preset or get_preset()
    out = run_dir(preset, n_layers)
    train(preset.model_config(n_layers), preset.train_config(n_layers), preset_tokens(preset), out,
          data_cfg=preset.data, progress=progress, model_meta=tokenizer_meta(preset))
    return out


def tokenizer_meta(preset: Preset) -> dict[str, str]:
    """The tokenizer a model is trained with, recorded in its file: token ids mean nothing without it."""
    from .tokens import tokenizer_sha256

    return {"tokenizer": preset.data.tokenizer, "tokenizer_sha256": tokenizer_sha256(preset.data.tokenizer)}


def check_tokenizer(path: Path, preset: Preset) -> None:
    """Raise if the model at ``path`` was trained with other tokenizer files than the committed ones."""
    recorded = read_metadata(path).get("tokenizer_sha256")
    current = tokenizer_meta(preset)["tokenizer_sha256"]
    if recorded != current:
        raise CheckpointError(f"{path} was trained with tokenizer files of sha256 {recorded}, but "
                              f"data/tokenizer/{preset.data.tokenizer} has {current}: retrain the model "
                              f"(CIRCUITS_TRAIN=1) or restore the tokenizer it was trained with")


def wants_training() -> bool:
    return os.environ.get(TRAIN_ENV, "0") not in ("", "0", "false", "no")


def model_dir(n_layers: int, preset: Preset | None = None, train_if_missing: bool = True) -> Path:
    """The folder holding the preset's ``n_layers`` model: published, else trained locally."""
    preset = preset or get_preset()
    published = published_dir(preset, n_layers)
    if (published / "model.safetensors").exists() and not wants_training():
        return published
    local = run_dir(preset, n_layers)
    if not (local / "model.safetensors").exists():
        if not train_if_missing:
            raise FileNotFoundError(f"no {n_layers}-layer model for preset {preset.name!r} in {published} "
                                    f"or {local}; train it with `python -m circuits.cli train "
                                    f"--preset {preset.name} --layers {n_layers}`")
        train_preset(n_layers, preset)
    return local


def load_preset_model(n_layers: int, preset: Preset | None = None) -> AttnOnlyTransformer:
    """The preset's ``n_layers`` model, checked against the preset's shape."""
    preset = preset or get_preset()
    path = model_dir(n_layers, preset) / "model.safetensors"
    check_tokenizer(path, preset)
    return load_model(path, expect=preset.model_config(n_layers)).eval()


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


def publish(n_layers: int, preset: Preset, n_snapshots: int, steps: list[int] | None = None) -> Path:
    """Copy a finished local run into ``data/checkpoints``: model, log, ``n_snapshots`` snapshots.

    The snapshots kept are spread evenly (in log-steps) over those the run wrote, or are exactly
    the run's snapshots at ``steps`` (to bracket a phase change that happens late in a short run).
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
    (dst / "snapshots").mkdir(parents=True)
    save_model(model, dst / "model.safetensors", extra=meta)
    shutil.copy2(src / "log.jsonl", dst / "log.jsonl")
    for snap in snaps:
        shutil.copy2(snap, dst / "snapshots" / snap.name)
    return dst
