"""Run folders: published models win unless training is forced; publish copies a verified run."""

import pytest

from circuits.checkpoint import save_model
from circuits.config import get_preset
from circuits.model import AttnOnlyTransformer
from circuits import runs


@pytest.fixture
def home(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("CIRCUITS_HOME", str(tmp_path))
    monkeypatch.delenv(runs.TRAIN_ENV, raising=False)
    return tmp_path


def fake_run(preset, n_layers, n_snapshots=5):
    folder = runs.run_dir(preset, n_layers)
    model = AttnOnlyTransformer(preset.model_config(n_layers))
    save_model(model, folder / "model.safetensors", extra=runs.tokenizer_meta(preset))
    (folder / "log.jsonl").write_text('{"step": 1, "tokens": 8, "train_loss": 9.0}\n')
    for step in range(1, n_snapshots + 1):
        save_model(model, folder / "snapshots" / f"step_{step * 10:06d}.safetensors")
    return folder


def test_publish_then_model_dir_prefers_published(home, monkeypatch):
    smoke = get_preset("smoke")
    local = fake_run(smoke, 1)
    assert runs.model_dir(1, smoke) == local
    published = runs.publish(1, smoke, n_snapshots=3)
    assert published == home / "data" / "checkpoints" / "smoke" / "1l"
    assert [p.name for p in runs.snapshot_paths(published)] == [
        "step_000010.safetensors", "step_000030.safetensors", "step_000050.safetensors"]
    assert runs.model_dir(1, smoke) == published
    monkeypatch.setenv(runs.TRAIN_ENV, "1")
    assert runs.model_dir(1, smoke) == local


def test_missing_model_without_training_is_named(home):
    with pytest.raises(FileNotFoundError, match="no 2-layer model for preset 'smoke'.*circuits.cli train"):
        runs.model_dir(2, get_preset("smoke"), train_if_missing=False)


def test_publish_refuses_unfinished_run(home):
    with pytest.raises(FileNotFoundError, match="no finished model"):
        runs.publish(2, get_preset("smoke"), n_snapshots=1)


def test_load_preset_model_checks_shape(home):
    smoke = get_preset("smoke")
    fake_run(smoke, 0)
    model = runs.load_preset_model(0, smoke)
    assert model.cfg == smoke.model_config(0)


def test_model_of_another_tokenizer_is_refused(home):
    smoke = get_preset("smoke")
    folder = runs.run_dir(smoke, 0)
    save_model(AttnOnlyTransformer(smoke.model_config(0)), folder / "model.safetensors",
               extra={"tokenizer": "bpe4k", "tokenizer_sha256": "0" * 64})
    with pytest.raises(runs.CheckpointError, match="trained with tokenizer files of sha256 0000"):
        runs.load_preset_model(0, smoke)


def test_publish_exact_snapshot_steps(home):
    smoke = get_preset("smoke")
    fake_run(smoke, 2)
    published = runs.publish(2, smoke, n_snapshots=0, steps=[40, 20])
    assert [p.name for p in runs.snapshot_paths(published)] == ["step_000020.safetensors", "step_000040.safetensors"]
    with pytest.raises(ValueError, match=r"no snapshots at steps \[35\]"):
        runs.publish(2, smoke, n_snapshots=0, steps=[20, 35])
    assert len(runs.snapshot_paths(published)) == 2  # a refused publish leaves the published model alone
