"""Run folders: published models win unless training is forced; publish copies a verified run."""

import pytest

from circuits.config import get_preset
from circuits.model import published
from circuits.model.checkpoint import CheckpointError, save_model
from circuits.model.transformer import AttnOnlyTransformer
from circuits.train import runs


@pytest.fixture
def home(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("CIRCUITS_HOME", str(tmp_path))
    monkeypatch.delenv(published.TRAIN_ENV, raising=False)
    return tmp_path


def fake_run(preset, n_layers, n_snapshots=5):
    folder = published.run_dir(preset, n_layers)
    model = AttnOnlyTransformer(preset.model_config(n_layers))
    save_model(model, folder / "model.safetensors", extra=published.tokenizer_meta(preset))
    (folder / "log.jsonl").write_text('{"step": 1, "tokens": 8, "train_loss": 9.0}\n')
    for step in range(1, n_snapshots + 1):
        save_model(model, folder / "snapshots" / f"step_{step * 10:06d}.safetensors")
    return folder


def test_publish_then_model_dir_prefers_published(home, monkeypatch):
    smoke = get_preset("smoke")
    local = fake_run(smoke, 1)
    assert published.model_dir(1, smoke) == local
    folder = runs.publish(1, smoke, n_snapshots=3)
    assert folder == home / "data" / "checkpoints" / "smoke" / "1l"
    assert [p.name for p in runs.snapshot_paths(folder)] == [
        "step_000010.safetensors", "step_000030.safetensors", "step_000050.safetensors"]
    assert published.model_dir(1, smoke) == folder
    monkeypatch.setenv(published.TRAIN_ENV, "1")
    assert published.model_dir(1, smoke) == local


def test_missing_model_is_named(home):
    with pytest.raises(FileNotFoundError, match="no 2-layer model for preset 'smoke'.*circuits.cli train"):
        published.load_preset_model(2, get_preset("smoke"))


def test_publish_keeps_no_snapshots_by_default(home):
    smoke = get_preset("smoke")
    fake_run(smoke, 1)
    folder = runs.publish(1, smoke)
    assert sorted(p.name for p in folder.iterdir()) == ["log.jsonl", "model.safetensors"]


def test_publish_refuses_unfinished_run(home):
    with pytest.raises(FileNotFoundError, match="no finished model"):
        runs.publish(2, get_preset("smoke"), n_snapshots=1)


def test_load_preset_model_checks_shape(home):
    smoke = get_preset("smoke")
    fake_run(smoke, 0)
    model = published.load_preset_model(0, smoke)
    assert model.cfg == smoke.model_config(0)


def test_model_of_another_tokenizer_is_refused(home):
    smoke = get_preset("smoke")
    folder = published.run_dir(smoke, 0)
    save_model(AttnOnlyTransformer(smoke.model_config(0)), folder / "model.safetensors",
               extra={"tokenizer": "bpe4k", "tokenizer_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="trained with tokenizer files of sha256 0000"):
        published.load_preset_model(0, smoke)


def test_publish_exact_snapshot_steps(home):
    smoke = get_preset("smoke")
    fake_run(smoke, 2)
    folder = runs.publish(2, smoke, n_snapshots=0, steps=[40, 20])
    assert [p.name for p in runs.snapshot_paths(folder)] == ["step_000020.safetensors", "step_000040.safetensors"]
    with pytest.raises(ValueError, match=r"no snapshots at steps \[35\]"):
        runs.publish(2, smoke, n_snapshots=0, steps=[20, 35])
    assert len(runs.snapshot_paths(folder)) == 2  # a refused publish leaves the published model alone
