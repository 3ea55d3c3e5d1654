"""Causal attention, one call for every device: ``causal_attention(q, k, v)``.

    z = softmax*(q kᵀ / √d_head) v        q, k, v, z [batch, head, pos, d_head]; softmax* masks src > dst

This is the middle of the paper's head, A^h = softmax*(x W_Q^h (x W_K^h)ᵀ) applied to x W_V^h, without the
pattern A^h ever being written out. ``reference_causal_attention`` computes the same thing in four plain
lines; tests compare every path with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import cpu_attention


def reference_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax*(q kᵀ / √d_head) v, written plainly: the scores, the causal mask, the softmax, the mix."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [batch, head, dst, src]
    n = q.shape[-2]
    mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)  # src after dst
    return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax*(q kᵀ / √d_head) v for q, k, v [batch, head, pos, d_head] of one dtype; [batch, head, pos, d_head].

    GPUs: torch's fused kernel (``scaled_dot_product_attention``, flash where it applies). x86-64 CPUs: the C
    kernel of ``cpu_attention`` where it runs (fp32 arithmetic even for bf16 inputs, which it reads as they
    are); other CPUs: torch's fused kernel on fp32 copies (its bf16 path was slower than its fp32 path at
    d_head 32, 82 against 49 ms for a [32, 8, 256, 32] batch on a Xeon, and fp32 is the more precise).
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", enabled=False):  # CPU autocast would cast fp32 inputs back to bf16
        if q.dtype in (torch.float32, torch.bfloat16) and cpu_attention.available(q.shape[-1]):
            return cpu_attention.causal_attention(q, k, v)
        z = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    return z.to(q.dtype)
