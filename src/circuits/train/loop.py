"""The training loop: AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast, DDP.

``train`` is the one entry point notebooks and scripts import. A run lives in a folder:

    run_dir/checkpoint.safetensors   weights + AdamW moments + progress (the resume point, ``resume``)
    run_dir/model.safetensors        final weights (fp32, TransformerLens names)
    run_dir/log.jsonl                one row per log step; evaluation rows add the scores (``log``)
    run_dir/snapshots/step_*.safetensors   log-spaced bf16 snapshots

Determinism: the batch of step s on rank r is drawn from a generator seeded by (seed, r, s), so a run resumed
from any checkpoint replays exactly the batches it would have seen. A step whose loss or gradient norm is not
finite stops the run with ``TrainingDiverged`` before the optimizer moves: the last checkpoint stays good.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from circuits.config import DataConfig, ModelConfig, TrainConfig
from circuits.data.batches import check_token_range, iter_eval_batches, sample_batch
from circuits.data.stats import token_counts
from circuits.kernels.memory import keep_freed_memory
from circuits.metrics.losses import loss_by_position, per_token_loss, position_bins
from circuits.metrics.olsson import (in_context_learning_score, prefix_matching_scores, previous_token_scores,
                                     repeated_random_tokens)
from circuits.model.checkpoint import save_model
from circuits.model.transformer import AttnOnlyTransformer

from .log import append_rows, truncate_log
from .resume import resume_state, save_resume
from .setup import autocast, distributed_setup, effective_precision, make_optimizer, maybe_compile, pick_device

LOG_EVERY = 10  # steps between train-loss rows in log.jsonl


def data_label(data_cfg: DataConfig | None) -> str | None:
    """Which data trained the model, as its log records it: ``"openwebtext (/data/owt), gpt2"``."""
    if data_cfg is None:
        return None
    return f"{data_cfg.corpus}{f' ({data_cfg.path})' if data_cfg.path else ''}, {data_cfg.tokenizer}"


class TrainingDiverged(RuntimeError):
    """A step's loss or gradient norm was not finite; the run stopped before the optimizer moved."""


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``cfg.lr`` over ``warmup_steps``, then cosine to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def snapshot_steps(total_steps: int, n: int) -> list[int]:
    """``n`` log-spaced steps from ~1/64 of the run to its end (where the phase change lives)."""
    if n <= 0:
        return []
    first = max(1, total_steps // 64)
    return sorted({int(round(s)) for s in np.geomspace(first, total_steps, n)})


def training_step(fwd, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor,
                  cfg: TrainConfig, device: torch.device, step: int = -1) -> float:
    """One optimiser step on ``batch`` [batch, n_ctx + 1]; returns the loss. ``fwd`` may wrap ``model`` (DDP,
    torch.compile); gradients are clipped on ``model``'s parameters. A loss or gradient norm that is not finite
    raises ``TrainingDiverged`` (naming ``step``) before the weights change."""
    with autocast(device, cfg.precision):
        loss = fwd(batch[:, :-1], batch[:, 1:])  # the fused unembedding + cross-entropy (kernels.unembed_loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    value = loss.item()
    if not (math.isfinite(value) and math.isfinite(norm)):
        raise TrainingDiverged(f"step {step}: the loss is {value} and the gradient norm {norm}; the weights "
                               "were not updated and the last checkpoint is kept (resume from it with a lower "
                               "learning rate, or in fp32)")
    opt.step()
    return value


@torch.no_grad()
def evaluate(model: AttnOnlyTransformer, val_tokens: np.ndarray, cfg: TrainConfig,
             repeated: torch.Tensor, device: torch.device) -> dict:
    """Validation loss, its mean in bins of positions, the in-context-learning score, and every head's
    previous-token and prefix-matching scores."""
    model.eval()
    n_ctx = model.cfg.n_ctx
    losses = torch.cat([per_token_loss(model, b.to(device)).cpu()
                        for b in iter_eval_batches(val_tokens, cfg.batch_size, n_ctx, cfg.eval_batches)])
    edges = position_bins(n_ctx)
    row = {"val_loss": float(losses.mean()), "icl_score": in_context_learning_score(losses),
           "position_bins": edges, "loss_by_position": [round(x, 4) for x in loss_by_position(losses, edges)]}
    if model.cfg.n_layers:
        text = next(iter(iter_eval_batches(val_tokens, 8, n_ctx, 1)))[:, :-1].to(device)
        prev = previous_token_scores(model, text)
        prefix = prefix_matching_scores(model, repeated.to(device))
        row.update(prev_token=prev.tolist(), prefix_matching=prefix.tolist(),
                   prev_token_best_l0=float(prev[0].max()), prefix_matching_best=float(prefix.max()),
                   prefix_matching_best_last=float(prefix[-1].max()))
    model.train()
    return row


@torch.enable_grad()  # callers (the book's notebooks) may have switched gradients off
def train(model_cfg: ModelConfig, train_cfg: TrainConfig, tokens: dict[str, np.ndarray],
          run_dir: str | Path, data_cfg: DataConfig | None = None, resume: bool = True,
          progress: bool = True, stop_at_step: int | None = None,
          model_meta: dict[str, str] | None = None) -> AttnOnlyTransformer:
    """Train an attention-only model on ``tokens['train']``, evaluating on ``tokens['validation']``.

    Resumes from ``run_dir/checkpoint.safetensors`` when it exists (and ``resume``). Under
    torchrun each rank draws ``batch_size / world_size`` sequences. ``stop_at_step`` ends the
    run early after checkpointing (tests use it to simulate an interruption). ``model_meta``
    (e.g. the tokenizer's sha256) is stored in the final model and the snapshots.
    """
    rank, world = distributed_setup()
    if train_cfg.batch_size % world:
        raise ValueError(f"batch_size {train_cfg.batch_size} is not divisible by world size {world}")
    main = rank == 0
    device = pick_device(rank)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for each step's fresh tensors (kernels/memory.py)
    run_dir = Path(run_dir)
    ckpt_path, log_path = run_dir / "checkpoint.safetensors", run_dir / "log.jsonl"
    total_steps = max(1, train_cfg.total_tokens // (train_cfg.batch_size * model_cfg.n_ctx))
    for split in ("train", "validation"):
        if len(tokens[split]) < model_cfg.n_ctx + 2:
            raise ValueError(f"{split} split has {len(tokens[split])} tokens, fewer than n_ctx + 2")
        # the first 20 M ids, as token_counts reads below: tokens from another tokenizer show up at once,
        # and a full scan of a paper-size stream would cost minutes at every start
        check_token_range(tokens[split][:20_000_000], model_cfg.d_vocab, what=f"{split} split")

    torch.manual_seed(train_cfg.seed)
    model = AttnOnlyTransformer(model_cfg)
    opt = make_optimizer(model, train_cfg)
    state = {"step": 0, "elapsed_s": 0.0}
    if resume and ckpt_path.exists():
        state = resume_state(ckpt_path, model, opt, model_cfg, train_cfg)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_log(log_path, state["step"])
    model.to(device)
    for s in opt.state.values():
        for k, v in s.items():
            s[k] = v.to(device)
    precision = effective_precision(device, train_cfg.precision, warn=main)
    fwd = model
    if dist.is_initialized():
        fwd = torch.nn.parallel.DistributedDataParallel(model)
    fwd = maybe_compile(fwd, train_cfg, device)

    counts = token_counts(tokens["train"][:20_000_000], model_cfg.d_vocab)
    repeated = repeated_random_tokens(counts, seed=train_cfg.seed, n_ctx=model_cfg.n_ctx)
    snaps = set(snapshot_steps(total_steps, train_cfg.n_snapshots))
    local_batch = train_cfg.batch_size // world
    # train losses since the last log row travel in the checkpoint, so a resumed log is identical
    t0, losses, rows = time.time() - state["elapsed_s"], state.get("pending_losses", []), []
    bar = tqdm(total=total_steps, initial=state["step"], disable=not (main and progress),
               desc=f"train {model_cfg.n_layers}L", unit="step")
    for step in range(state["step"], total_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total_steps, train_cfg)
        gen = torch.Generator().manual_seed(train_cfg.seed * 1_000_003 + rank * 10_007 + step)
        batch = sample_batch(tokens["train"], local_batch, model_cfg.n_ctx, gen).to(device)
        losses.append(training_step(fwd, model, opt, batch, train_cfg, device, step=step + 1))
        bar.update(1)
        done = step + 1
        is_eval = done % train_cfg.eval_every == 0 or done == total_steps
        if main and (done % LOG_EVERY == 0 or is_eval):
            row = {"step": done, "tokens": done * train_cfg.batch_size * model_cfg.n_ctx,
                   "elapsed_s": round(time.time() - t0, 2), "lr": lr_at(step, total_steps, train_cfg),
                   "train_loss": float(np.mean(losses))}
            losses = []
            if is_eval:
                row.update(evaluate(model, tokens["validation"], train_cfg, repeated, device),
                           precision=precision, data=data_label(data_cfg))
                bar.set_postfix(val=f"{row['val_loss']:.3f}",
                                pm=f"{row.get('prefix_matching_best', 0):.2f}")
            rows.append(row)
        if main and done in snaps:
            save_model(model, run_dir / "snapshots" / f"step_{done:06d}.safetensors", torch.bfloat16,
                       extra={**(model_meta or {}), "step": str(done),
                              "tokens": str(done * train_cfg.batch_size * model_cfg.n_ctx)})
        if main and (done % train_cfg.checkpoint_every == 0 or done == total_steps or done == stop_at_step):
            append_rows(log_path, rows)
            rows = []
            save_resume(ckpt_path, model, opt, model_cfg, train_cfg, data_cfg,
                        {"step": done, "elapsed_s": time.time() - t0, "pending_losses": losses})
        if done == stop_at_step:
            break
    bar.close()
    if main and state["step"] < total_steps and (stop_at_step is None or stop_at_step >= total_steps):
        save_model(model, run_dir / "model.safetensors", extra=model_meta)
    if dist.is_initialized():
        dist.barrier()
    return model.cpu().eval()
