"""Training: AdamW, linear warmup + cosine decay, gradient clipping, bf16 autocast, DDP.

bf16 runs where the device multiplies fast in it (``precision.bf16_is_fast``), else fp32.

``train`` is the one entry point notebooks and scripts import. A run lives in a folder:

    run_dir/checkpoint.safetensors   weights + AdamW moments + progress (resume point)
    run_dir/model.safetensors        final weights (fp32, TransformerLens names)
    run_dir/log.jsonl                one row per log step; eval rows add scores
    run_dir/snapshots/step_*.safetensors   log-spaced bf16 snapshots (phase change)

Determinism: the batch of step s on rank r is drawn from a generator seeded by (seed, r, s),
so a run resumed from any checkpoint replays exactly the batches it would have seen.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .checkpoint import atomic_save, check_shapes, save_model, verified_load
from .config import DataConfig, ModelConfig, TrainConfig, from_json, to_json
from .corpus_stats import token_counts
from .cpu_memory import keep_freed_memory
from .induction import (in_context_learning_score, per_token_loss, prefix_matching_scores,
                        previous_token_scores, repeated_random_tokens)
from .model import AttnOnlyTransformer
from .precision import bf16_is_fast
from .batches import check_token_range, iter_eval_batches, sample_batch
from .trainlog import append_rows, truncate_log

LOG_EVERY = 10  # steps between train-loss rows in log.jsonl


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


def distributed_setup() -> tuple[int, int]:
    """(rank, world_size); joins the process group when launched by torchrun, even with one process
    (``--nproc_per_node 1`` then runs DDP over NCCL on one GPU, the same code path as eight)."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched and not dist.is_initialized():
        if torch.cuda.is_available():  # binding the rank's GPU up front lets NCCL set up its communicator now
            dist.init_process_group("nccl", device_id=local_gpu(int(os.environ["RANK"])))
        else:
            dist.init_process_group("gloo")
        # leave the group at exit, as NCCL asks, also when training raises
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def local_gpu(rank: int) -> torch.device:
    """This process's GPU: ``cuda:LOCAL_RANK`` (torchrun sets it; ``rank`` without it)."""
    local = int(os.environ.get("LOCAL_RANK", rank))
    if local >= torch.cuda.device_count():
        # NCCL cannot put two ranks on one GPU: more processes per node than GPUs is a launch error
        raise ValueError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                         "start torchrun with --nproc_per_node at most that")
    return torch.device("cuda", local)


def pick_device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        device = local_gpu(rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return device
    return torch.device("cpu")


def effective_precision(device: torch.device, precision: str, warn: bool = False) -> str:
    """The precision training runs in: ``precision``, except that a bf16 request on a device without
    fast bf16 matmuls (``precision.bf16_is_fast``, e.g. an AVX2-only CPU) runs in fp32."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    if precision == "bf16" and not bf16_is_fast(device.type):
        if warn:
            warnings.warn(f"bf16 matmuls are ~100x slower than fp32 on this {device.type} "
                          f"({torch.backends.cpu.get_cpu_capability()}, no native bf16): training in fp32",
                          stacklevel=2)
        return "fp32"
    return precision


def maybe_compile(fwd: torch.nn.Module, train_cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``fwd`` through ``torch.compile`` where the config asks for it and the device is CUDA (on CPU it
    gained 5 %, not worth the compile time), else ``fwd`` itself."""
    return torch.compile(fwd) if train_cfg.compile and device.type == "cuda" else fwd


def autocast(device: torch.device, precision: str):
    """bf16 autocast where ``effective_precision`` is bf16, else a no-op."""
    if effective_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # every parameter is a matrix (no biases, no gains), so all take weight decay;
    # the fused kernel makes one pass over each tensor (the unfused one makes ~8 on CPU)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                             weight_decay=cfg.weight_decay, fused=True)


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


def training_step(fwd, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor,
                  cfg: TrainConfig, device: torch.device) -> float:
    """One optimiser step on ``batch`` [batch, n_ctx + 1]; returns the loss. ``fwd`` may wrap
    ``model`` (DDP, torch.compile); gradients are clipped on ``model``'s parameters."""
    with autocast(device, cfg.precision):
        loss = fwd(batch[:, :-1], batch[:, 1:])  # fused unembed + cross-entropy (unembed_loss.py)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate(model: AttnOnlyTransformer, val_tokens: np.ndarray, cfg: TrainConfig,
             repeated: torch.Tensor, device: torch.device) -> dict:
    """Validation loss, in-context-learning score, per-head previous-token and prefix-matching."""
    model.eval()
    n_ctx = model.cfg.n_ctx
    losses = [per_token_loss(model, b.to(device)).cpu()
              for b in iter_eval_batches(val_tokens, cfg.batch_size, n_ctx, cfg.eval_batches)]
    losses = torch.cat(losses)
    row = {"val_loss": float(losses.mean()), "icl_score": in_context_learning_score(losses)}
    if model.cfg.n_layers:
        text = next(iter(iter_eval_batches(val_tokens, 8, n_ctx, 1)))[:, :-1].to(device)
        prev = previous_token_scores(model, text)
        prefix = prefix_matching_scores(model, repeated.to(device))
        row.update(prev_token=prev.tolist(), prefix_matching=prefix.tolist(),
                   prev_token_best_l0=float(prev[0].max()), prefix_matching_best=float(prefix.max()),
                   prefix_matching_best_last=float(prefix[-1].max()))
    model.train()
    return row


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
        keep_freed_memory()  # no page faults for each step's fresh tensors (cpu_memory.py)
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
        losses.append(training_step(fwd, model, opt, batch, train_cfg, device))
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
                           precision=precision)
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
