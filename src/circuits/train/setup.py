"""Where and how a run computes: the process group under torchrun, the device, the precision, the optimizer.

bf16 autocast runs where the device multiplies fast in it (``kernels.bf16_is_fast``), else fp32; DDP is
detected from the environment that torchrun sets (``RANK``, ``WORLD_SIZE``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import warnings

import torch
import torch.distributed as dist

from circuits.config import TrainConfig
from circuits.kernels.precision import bf16_is_fast


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
