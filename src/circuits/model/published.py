"""Where a preset's models live, and loading them.

    data/checkpoints/<preset>/<n>l/   published (committed) models: model.safetensors, log.jsonl
    runs/<preset>/<n>l/               local training runs (ignored by git; resumable)

``model_dir(n_layers)`` is the published model of the preset when there is one and ``CIRCUITS_TRAIN`` is not
set, otherwise the local run. Training a missing run is ``circuits.train.runs.ensure_model``'s job.
"""

from __future__ import annotations

import os
from pathlib import Path

from circuits.config import Preset, get_preset
from circuits.data.tokens import tokenizer_sha256
from circuits.paths import data_dir, project_root

from .checkpoint import CheckpointError, load_model, read_metadata
from .transformer import AttnOnlyTransformer

TRAIN_ENV = "CIRCUITS_TRAIN"


def published_dir(preset: Preset, n_layers: int) -> Path:
    return data_dir() / "checkpoints" / preset.name / f"{n_layers}l"


def run_dir(preset: Preset, n_layers: int) -> Path:
    return project_root() / "runs" / preset.name / f"{n_layers}l"


def tokenizer_meta(preset: Preset) -> dict[str, str]:
    """The tokenizer a model is trained with, recorded in its file: token ids mean nothing without it."""
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


def model_dir(n_layers: int, preset: Preset | None = None) -> Path:
    """The folder of the preset's ``n_layers`` model: the published one, unless ``$CIRCUITS_TRAIN`` asks for
    local training or there is none; else the local run (which may not exist yet)."""
    preset = preset or get_preset()
    published = published_dir(preset, n_layers)
    if (published / "model.safetensors").exists() and not wants_training():
        return published
    return run_dir(preset, n_layers)


def load_preset_model(n_layers: int, preset: Preset | None = None) -> AttnOnlyTransformer:
    """The preset's ``n_layers`` model, checked against the preset's shape."""
    preset = preset or get_preset()
    path = model_dir(n_layers, preset) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no {n_layers}-layer model for preset {preset.name!r} in {published_dir(preset, n_layers)} "
                                f"or {run_dir(preset, n_layers)}; train it with `python -m circuits.cli train "
                                f"--preset {preset.name} --layers {n_layers}`")
    check_tokenizer(path, preset)
    return load_model(path, expect=preset.model_config(n_layers)).eval()
