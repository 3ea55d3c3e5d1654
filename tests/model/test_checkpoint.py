"""Checkpoints: TransformerLens names, no pickle, atomic writes, verified loads, clear errors."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from circuits.model.checkpoint import CheckpointError, load_model, read_metadata, save_model
from circuits.model.transformer import AttnOnlyTransformer


@pytest.fixture
def saved(tmp_path, tiny_cfg):
    model = AttnOnlyTransformer(tiny_cfg)
    path = save_model(model, tmp_path / "model.safetensors")
    return model, path


def test_round_trip_gives_same_logits(saved, tiny_cfg):
    model, path = saved
    tokens = torch.randint(0, tiny_cfg.d_vocab, (2, 10))
    torch.testing.assert_close(load_model(path)(tokens), model(tokens), rtol=0, atol=0)
    assert read_metadata(path)["model_config"]["d_model"] == tiny_cfg.d_model


def test_plain_safetensors_reader_sees_transformerlens_names(saved):
    _, path = saved
    names = set(load_file(str(path)))
    assert {"embed.W_E", "pos_embed.W_pos", "blocks.1.attn.W_O", "unembed.W_U"} <= names


def test_no_temporary_files_left(saved, tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_truncated_checkpoint_is_rejected(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_model(path)


def test_corrupted_checkpoint_is_rejected(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip one byte inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted: sha256"):
        load_model(path)


def test_checkpoint_of_another_shape_is_rejected(saved, tiny_cfg):
    _, path = saved
    other = dataclasses.replace(tiny_cfg, d_model=64)
    with pytest.raises(CheckpointError, match="expected ModelConfig"):
        load_model(path, expect=other)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_bf16_snapshot_loads_as_fp32(tmp_path, tiny_cfg):
    model = AttnOnlyTransformer(tiny_cfg)
    path = save_model(model, tmp_path / "snap.safetensors", dtype=torch.bfloat16)
    loaded = load_model(path)
    assert loaded.embed.W_E.dtype == torch.float32
    torch.testing.assert_close(loaded.embed.W_E, model.embed.W_E.bfloat16().float())
