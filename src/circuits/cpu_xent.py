"""The per-row cross-entropy and its gradient for the fused unembedding loss on CPUs, in C
(``cross_entropy_body.h``, built into ``training_kernels.c`` with the attention kernel).

    loss_i = logsumexp_v x_iv - x_{i t_i},      grad_i = scale * (softmax(x_i) - onehot(t_i))

``unembed_loss`` forms the logits of a chunk of rows with one matmul and needs both of these from it.
torch's eager route makes about ten passes over the chunk (widen bf16 to fp32, max, subtract, exp, sum,
scale, scatter, narrow back to bf16), each a pass over megabytes; this kernel makes three over each row
while it sits in L1 or L2, reading bf16 or fp32 and writing the gradient over the logits in their own
dtype. Same conditions as ``cpu_attention`` (x86-64 Linux, AVX2 at least, a C compiler with OpenMP,
``$CIRCUITS_C_KERNELS`` not 0); elsewhere ``unembed_loss`` keeps torch's route. Tests compare the two.
"""

from __future__ import annotations

import torch

from . import cpu_attention


def available() -> bool:
    return cpu_attention.isa() is not None and cpu_attention.library() is not None


def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor, scale: float, grad: bool) -> torch.Tensor:
    """Each row's cross-entropy [rows] (fp32) of ``logits`` [rows, V] (contiguous CPU fp32 or bf16) at
    ``targets`` [rows] (int64). With ``grad``, ``scale * (softmax - onehot)`` is written over ``logits``."""
    if logits.dtype not in (torch.float32, torch.bfloat16) or logits.dim() != 2 or not logits.is_contiguous() \
            or logits.device.type != "cpu":
        raise ValueError(f"logits: expected a contiguous [rows, V] fp32 or bf16 CPU tensor, got {logits.dtype} "
                         f"{tuple(logits.shape)} on {logits.device}")
    targets = targets.reshape(-1).to(torch.int64).contiguous()
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"{targets.shape[0]} targets for {logits.shape[0]} rows of logits")
    if not available():
        raise RuntimeError("the C cross-entropy kernel does not run here (see circuits.cpu_xent.available)")
    loss = torch.empty(logits.shape[0], dtype=torch.float32)
    fn = getattr(cpu_attention.library(), f"cross_entropy_rows_{cpu_attention.vector_isa()}")
    code = fn(logits.data_ptr(), int(logits.dtype == torch.bfloat16), logits.shape[0], logits.shape[1],
              targets.data_ptr(), scale, loss.data_ptr(), logits.data_ptr() if grad else None)
    if code:
        raise ValueError({-3: f"a target is outside the vocabulary [0, {logits.shape[1]})",
                          -2: "out of memory"}.get(code, f"unsupported shape {tuple(logits.shape)}"))
    return loss


def accumulate(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst += src`` for a contiguous fp32 CPU ``dst`` and a contiguous ``src`` of its shape, bf16 or fp32, in one
    pass (torch's mixed-dtype ``add_`` first copies ``src`` to fp32: three passes)."""
    if dst.dtype != torch.float32 or src.dtype not in (torch.float32, torch.bfloat16) or dst.shape != src.shape \
            or not (dst.is_contiguous() and src.is_contiguous()) or {dst.device.type, src.device.type} != {"cpu"}:
        raise ValueError(f"accumulate: expected a contiguous fp32 CPU dst and a src of its shape (bf16 or fp32), "
                         f"got {dst.dtype} {tuple(dst.shape)} and {src.dtype} {tuple(src.shape)}")
    if not available():
        raise RuntimeError("the C kernels do not run here (see circuits.cpu_xent.available)")
    fn = getattr(cpu_attention.library(), f"accumulate_{cpu_attention.vector_isa()}")
    fn(dst.data_ptr(), src.data_ptr(), int(src.dtype == torch.bfloat16), dst.numel())
