"""The resume checkpoint of a run: weights, AdamW's moments and the progress record, in one safetensors file
(no pickle), written atomically, verified on load (``model.checkpoint``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from circuits.config import ModelConfig, TrainConfig, from_json, to_json
from circuits.model.checkpoint import atomic_save, check_shapes, verified_load


def optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW moments under ``optimizer.{param name}.{key}`` (no pickle in checkpoints)."""
    out = {}
    for name, p in model.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            out[f"optimizer.{name}.{key}"] = torch.as_tensor(value).float()
    return out


def load_optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer,
                           tensors: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        prefix = f"optimizer.{name}."
        state = {k[len(prefix):]: v.clone() for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            state["step"] = state["step"].reshape(())
            opt.state[p] = state


def resume_state(path: Path, model, opt, model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict:
    """Load a resume checkpoint into ``model`` and ``opt``; returns its progress record."""
    tensors, meta = verified_load(path)
    saved = (from_json(ModelConfig, meta["model_config"]), from_json(TrainConfig, meta["train_config"]))
    if saved != (model_cfg, train_cfg):
        raise ValueError(f"{path} was written by another configuration {saved}; use a new run_dir")
    check_shapes(model_cfg, tensors, path)
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")})
    load_optimizer_tensors(model, opt, tensors)
    return json.loads(meta["state"])


def save_resume(path: Path, model, opt, model_cfg, train_cfg, data_cfg, state: dict) -> None:
    tensors = {**model.state_dict(), **optimizer_tensors(model, opt)}
    atomic_save(tensors, path, {"model_config": to_json(model_cfg), "train_config": to_json(train_cfg),
                                "data_config": to_json(data_cfg) if data_cfg else "null",
                                "state": json.dumps(state)})
