"""The residual stream's reads in the training forward: one fused pass each way on CPUs.

The residual stream after layer l-1 is x_l = x_{l-1} + out_{l-1} (paper, "Residual stream"), kept in fp32
while the attention computes in bf16 under autocast. Layer l reads it twice: queries and keys from
x_l + W_pos (Shortformer: positions are added only where queries and keys are read) and values from x_l,
each cast to the compute dtype; the unembedding reads the last one. ``read`` and ``final`` return these:

    read(x_prev, out, pos)  ->  x = x_prev + out,  (x + pos).to(dtype),  x.to(dtype)
    final(x_prev, out)      ->  (x_prev + out).to(dtype)

dtype is autocast's (bf16 under autocast, else the stream's). Written with torch ops, a cpu-preset layer
spends about ten passes over [batch, pos, d_model] tensors here (the mixed-dtype add, the positional add,
two casts; then their gradients widened to fp32, summed, the positional gradient summed over the batch),
which on a 2-core CPU took about a tenth of a bf16 training step. On CPUs with the C kernels
(``residual_body.h``, built with ``cpu_attention``'s) each direction is one pass; elsewhere (GPUs, where
torch.compile fuses them, or without the kernels) the torch ops run. Tests compare both.
"""

from __future__ import annotations

import torch

from . import cpu_attention
from .precision import autocast_dtype


def _kernel_runs(x: torch.Tensor, out: torch.Tensor | None, dtype: torch.dtype) -> bool:
    ok_types = (torch.float32, torch.bfloat16)
    return (x.device.type == "cpu" and x.dtype == torch.float32 and dtype in ok_types
            and (out is None or (out.dtype in ok_types and out.shape == x.shape))
            and cpu_attention.isa() is not None and cpu_attention.library() is not None)


def _call(kind: str, *args) -> None:
    fn = getattr(cpu_attention.library(), f"residual_{kind}_{cpu_attention.vector_isa()}")
    code = fn(*args)
    if code:
        raise RuntimeError(f"residual {kind} kernel failed with code {code} (-1: shape, -2: out of memory)")


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


class _Read(torch.autograd.Function):
    """Outputs, in order: x (fp32; only where ``out`` is given and not ``final``), a = (x + pos) in ``dtype``
    (x alone where ``pos`` is None), c = x in bf16 (only for bf16 and not ``final``)."""

    @staticmethod
    def forward(ctx, x_prev, out, pos, dtype, final):
        b, n, d = x_prev.shape
        x_prev, out = x_prev.contiguous(), None if out is None else out.contiguous()
        pos = None if pos is None else pos.contiguous()
        x = torch.empty_like(x_prev) if out is not None and not final else None
        a = torch.empty(b, n, d, dtype=dtype)
        c = torch.empty(b, n, d, dtype=torch.bfloat16) if dtype == torch.bfloat16 and not final else None
        _call("forward", x_prev.data_ptr(), _ptr(out), int(out is not None and out.dtype == torch.bfloat16),
              _ptr(pos), b * n, n, d, _ptr(x), a.data_ptr(), int(dtype == torch.bfloat16), _ptr(c))
        ctx.shape, ctx.out_dtype, ctx.has_pos = (b, n, d), None if out is None else out.dtype, pos is not None
        ctx.kept = (x is not None, c is not None)
        return tuple(t for t in (x, a, c) if t is not None)

    @staticmethod
    def backward(ctx, *grads):
        b, n, d = ctx.shape
        grads = list(grads)
        gx = grads.pop(0) if ctx.kept[0] else None
        ga = grads.pop(0)
        gc = grads.pop(0) if ctx.kept[1] else None
        gx, ga, gc = (None if g is None else g.contiguous() for g in (gx, ga, gc))
        dx = torch.empty(b, n, d, dtype=torch.float32)
        # out's gradient equals dx: a copy only where out is bf16
        dout = torch.empty(b, n, d, dtype=torch.bfloat16) if ctx.out_dtype == torch.bfloat16 else None
        dpos = torch.empty(n, d, dtype=torch.float32) if ctx.has_pos and ga is not None else None
        _call("backward", _ptr(gx), _ptr(ga), int(ga is not None and ga.dtype == torch.bfloat16), _ptr(gc),
              b * n, n, d, dx.data_ptr(), _ptr(dout), 1, _ptr(dpos))
        if ctx.out_dtype is not None and dout is None:
            dout = dx
        return dx, dout, dpos, None, None


def read(x_prev: torch.Tensor, out: torch.Tensor | None, pos: torch.Tensor) -> tuple:
    """(x, a, c): the residual stream x = x_prev + out (x_prev where ``out`` is None) [batch, pos, d_model],
    the queries' and keys' input a = x + pos and the values' input c = x, both in autocast's dtype."""
    dtype = autocast_dtype(x_prev.device.type, x_prev.dtype)
    if not _kernel_runs(x_prev, out, dtype) or pos.shape != x_prev.shape[1:]:
        x = x_prev if out is None else x_prev + out
        return x, (x + pos).to(dtype), x.to(dtype)
    outs = list(_Read.apply(x_prev, out, pos, dtype, False))
    x = x_prev if out is None else outs.pop(0)
    a = outs.pop(0)
    return x, a, outs.pop(0) if outs else x  # fp32 training reads values from x itself


def final(x_prev: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The residual stream after the last layer, x_prev + out, in autocast's dtype (the unembedding's input)."""
    dtype = autocast_dtype(x_prev.device.type, x_prev.dtype)
    if out is None:
        return x_prev
    if not _kernel_runs(x_prev, out, dtype):
        return (x_prev + out).to(dtype)
    return _Read.apply(x_prev, out, None, dtype, True)[0]
