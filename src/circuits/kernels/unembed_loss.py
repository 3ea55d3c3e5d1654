"""Training loss through the unembedding without materialising the logits.

    loss = mean_i [ logsumexp_v (x_i W_U)_v - (x_i W_U)_{t_i} ]          (next-token cross-entropy)
    d loss / d logits_i = (softmax(x_i W_U) - onehot(t_i)) / N

With an 8k vocabulary and a 256-wide residual stream the unembedding is ~3/4 of the model's FLOPs,
and the plain route (bf16 logits [N, d_vocab] -> fp32 copy -> log_softmax -> its backward) spends
more time moving those N x d_vocab tensors than multiplying. Here the logits of ``chunk_rows`` rows
at a time are formed, reduced to the loss, turned straight into their gradient and multiplied back
into dL/dx and dL/dW_U, so the full logits never exist and backward is only a scale. This is the
"fused linear cross-entropy" of Liger-Kernel and Apple's cut-cross-entropy, in plain torch.
``reference_unembed_cross_entropy`` (the logits, then ``F.cross_entropy``) is what it computes; tests check
loss and gradients against it. At the ``cpu`` preset's shapes (8,192 rows, d_model 256, d_vocab 4,096, bf16
autocast) forward and backward took 0.18 s here against 0.32 s for the reference and 0.34 s (0.38 s with
``LinearCrossEntropyOptions``) for torch 2.13's own ``F.linear_cross_entropy``, on a 2-core AMD EPYC
(benchmarks/HISTORY.md, 2026-12-07). A C kernel for the chunk's softmax saved 9 % of a training step there and
was removed (a kernel must save 15 %).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .precision import autocast_dtype

# CPU chunks hold 16 MB of logits: 2,048 rows at the cpu preset's 4,096 tokens in bf16, 1,024 in fp32, 512 at
# 8,192 in fp32. The larger products ran faster than 512-row chunks on both 2-core CPUs measured: on a Xeon with
# AMX, bf16 2,048 rows (a cpu-preset step 0.168 against 0.175 s, in turns); on an AMD EPYC (Zen 4) held to AVX2,
# fp32 1,024 rows (about 2 % a step, in turns; the run-to-run spread is about as large). 16 MB stays under the
# 32 MB that kernels/memory.py keeps in the heap (a larger buffer would page-fault). A floor of rows holds at large
# vocabularies: each chunk adds its product into W_U's gradient, a pass over [d_model, d_vocab] in fp32, and the
# faster the products (bf16), the more rows a pass must serve to stay small beside them (at GPT-2's 50,257 tokens
# 16 MB would be 83 fp32 rows: 99 passes over 154 MB a step). GPU: larger chunks keep the kernels busy
# (4096 x 50257 fp32 = 0.8 GB)
CPU_CHUNK_BYTES = 16 << 20
CPU_CHUNK_FLOOR = {torch.float32: 512, torch.bfloat16: 2048}
GPU_CHUNK_ROWS = 4096


def default_chunk_rows(device_type: str, dtype: torch.dtype, d_vocab: int) -> int:
    """Rows per chunk of [rows, d_vocab] logits in ``dtype`` on ``device_type``, where the caller names none."""
    if device_type == "cpu":
        return max(CPU_CHUNK_FLOOR.get(dtype, 1), CPU_CHUNK_BYTES // (d_vocab * dtype.itemsize))
    return GPU_CHUNK_ROWS


def _loss_and_grad(logits: torch.Tensor, t: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the rows' cross-entropies and ``scale * (softmax - onehot)``, in ``logits``' dtype.

    logits [chunk, d_vocab], t [chunk, 1]. The route for devices named in ``COMPILED_ON`` (CUDA), which
    run it compiled: eagerly it makes about ten passes over the chunk, compiled about three, and on a
    GPU those passes, not the matmuls, bound the loss.
    """
    lf = logits.float()
    top = lf.amax(dim=-1, keepdim=True)
    expd = (lf - top).exp()
    norm = expd.sum(dim=-1, keepdim=True)
    loss = (top + norm.log() - lf.gather(1, t)).sum()
    grad = (expd * (scale / norm)).scatter_add(1, t, torch.full(t.shape, -scale, device=t.device))
    return loss, grad.to(logits.dtype)


# Device types whose chunk loss runs through torch.compile (set to () for the eager chain). On an H200
# it made the paper-preset step 17 % faster (444k against 380k tokens/s). Trained with it, cpu-preset
# runs of seeds 0-7 grew induction heads for the same seeds as the eager runs (7 of 8, both missing
# seed 4; median final val 3.339 against 3.336; benchmarks/logs/h200_seed_sweep.jsonl),
# so the single failed run that kept it opt-in before was run-to-run variation.
COMPILED_ON: tuple[str, ...] = ("cuda",)


@functools.cache
def _compiled_loss_and_grad():
    return torch.compile(_loss_and_grad, dynamic=True)


def _chunk_fn(device_type: str):
    return _compiled_loss_and_grad() if device_type in COMPILED_ON else None


def _chunks_compiled(fn, xc, wc, targets, chunk_rows, grad_x, grad_w) -> torch.Tensor:
    """The ``COMPILED_ON`` route: ``fn`` (compiled ``_loss_and_grad``) reads each chunk's matmul output."""
    n, total = xc.shape[0], torch.zeros((), dtype=torch.float64, device=xc.device)
    for i in range(0, n, chunk_rows):
        rows = slice(i, i + chunk_rows)
        loss, grad = fn(xc[rows] @ wc, targets[rows, None], 1.0 / n)
        total += loss.double()
        grad_x[rows] = grad @ wc.T
        grad_w += (xc[rows].T @ grad).float()
    return total


def _torch_chunk(logits: torch.Tensor, t: torch.Tensor, scale: float, need_grad: bool) -> torch.Tensor:
    """The chunk's summed loss (fp64), turning fp32 ``logits`` in place into ``scale * (softmax - onehot)``."""
    top, picked = logits.amax(dim=-1, keepdim=True), logits.gather(1, t)
    # one exp pass serves both the loss and its gradient (logsumexp would make a second);
    # in place, because the logits are not needed again
    expd = logits.sub_(top).exp_()
    norm = expd.sum(dim=-1, keepdim=True)
    total = (top + norm.log() - picked).sum().double()
    if need_grad:
        expd.mul_(norm.reciprocal_().mul_(scale))  # softmax * scale
        expd.scatter_add_(1, t, torch.full(t.shape, -scale, device=t.device))
    return total


def _chunks_eager(xc, wc, targets, chunk_rows, grad_x, grad_w, need_grad: bool) -> torch.Tensor:
    """The default route: each chunk's logits in one reused fp32 buffer (on CPU a fresh 16 MB tensor per
    chunk costs page faults, ~20 % of the fp32 matmul time on 2 cores), the loss and its gradient from
    them in place (``_torch_chunk``)."""
    n, total = xc.shape[0], torch.zeros((), dtype=torch.float64, device=xc.device)
    buf = torch.empty(min(chunk_rows, n), wc.shape[1], dtype=torch.float32, device=xc.device)
    for i in range(0, n, chunk_rows):
        rows = slice(i, i + chunk_rows)
        t = targets[rows, None]
        if xc.dtype == torch.float32:
            logits = torch.mm(xc[rows], wc, out=buf[: min(chunk_rows, n - i)])  # [chunk, d_vocab]
        else:
            logits = buf[: min(chunk_rows, n - i)].copy_(xc[rows] @ wc)
        total += _torch_chunk(logits, t, 1.0 / n, need_grad)
        if not need_grad:
            continue
        if xc.dtype == torch.float32:
            torch.mm(logits, wc.T, out=grad_x[rows])
            grad_w.addmm_(xc[rows].T, logits)
        else:
            grad = logits.to(xc.dtype)
            grad_x[rows] = grad @ wc.T
            grad_w += xc[rows].T @ grad
    return total


class _UnembedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, W_U: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None,
                need_grad: bool):
        # x [N, d_model], W_U [d_model, d_vocab], targets [N]; without need_grad only the loss is computed
        dtype = autocast_dtype(x.device.type, x.dtype)
        chunk_rows = chunk_rows or default_chunk_rows(x.device.type, dtype, W_U.shape[1])
        n = x.shape[0]
        compiled = _chunk_fn(x.device.type) if need_grad else None
        with torch.autocast(x.device.type, enabled=False):
            xc, wc = x.detach().to(dtype), W_U.detach().to(dtype)
            grad_x = torch.empty(n, x.shape[1], dtype=dtype, device=x.device)
            grad_w = torch.zeros(W_U.shape, dtype=torch.float32, device=x.device)
            if compiled is not None:
                total = _chunks_compiled(compiled, xc, wc, targets, chunk_rows, grad_x, grad_w)
            else:
                total = _chunks_eager(xc, wc, targets, chunk_rows, grad_x, grad_w, need_grad)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.dtypes = (x.dtype, W_U.dtype)
        return (total / n).float()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_x, grad_w = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        return (grad_x.to(x_dtype) * grad_out, (grad_w * grad_out).to(w_dtype), None, None, None)


@torch.compiler.disable  # a graph break: torch.compile (paper preset) compiles the model around it
def unembed_cross_entropy(resid: torch.Tensor, W_U: torch.Tensor, targets: torch.Tensor,
                          chunk_rows: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of ``resid @ W_U`` (nats), gradients computed in row chunks.

    resid [batch, pos, d_model], W_U [d_model, d_vocab], targets [batch, pos] -> scalar; ``chunk_rows`` rows of
    logits at a time (default: ``default_chunk_rows``: on CPUs 16 MB of logits, or a floor of rows).
    Equal to ``reference_unembed_cross_entropy``; use it when the loss is all you need (training).
    """
    if resid.shape[:-1] != targets.shape:
        raise ValueError(f"resid {tuple(resid.shape)} and targets {tuple(targets.shape)} disagree on [batch, pos]")
    # the gradients cost twice the loss: skip them where nothing will call backward (evaluation)
    need_grad = torch.is_grad_enabled() and (resid.requires_grad or W_U.requires_grad)
    return _UnembedCrossEntropy.apply(resid.flatten(0, -2), W_U, targets.flatten().long(), chunk_rows, need_grad)


def reference_unembed_cross_entropy(resid: torch.Tensor, W_U: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What ``unembed_cross_entropy`` computes, written plainly: the logits ``resid @ W_U`` [batch, pos, d_vocab],
    then their mean next-token cross-entropy (in fp32)."""
    logits = resid @ W_U
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten())
