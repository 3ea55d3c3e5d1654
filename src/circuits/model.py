"""The attention-only transformer of the paper ("Model simplifications", Elhage et al. 2021).

    x_0      = W_E[t]                                   (no positions in the residual stream)
    x_{l+1}  = x_l + sum_h  A^h(x_l + p) . x_l W_V^h W_O^h
    A^h(y)   = softmax_causal( (y W_Q^h)(y W_K^h)^T / sqrt(d_head) )
    logits   = x_L W_U

Positions ``p = W_pos[:n]`` enter only the inputs of W_Q and W_K (Shortformer), so every OV
path carries token identity only. No LayerNorm, no biases, W_E and W_U untied: every
decomposition in this package is then exact. Parameter names and shapes follow
TransformerLens (see ``circuits/__init__.py``), so a state dict loads into ``HookedTransformer``.

Two attention paths: ``forward`` (training; fused matmuls + scaled_dot_product_attention,
per-head parameters untouched) and ``run_with_cache`` (analysis; explicit patterns and
per-head outputs). Tests check that they agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_attention, residual
from .config import ModelConfig
from .unembed_loss import unembed_cross_entropy


class Attention(nn.Module):
    """One attention layer; ``h`` indexes heads, ``d`` d_model, ``e`` d_head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(h, d, e))  # [n_heads, d_model, d_head]
        self.W_K = nn.Parameter(torch.empty(h, d, e))  # [n_heads, d_model, d_head]
        self.W_V = nn.Parameter(torch.empty(h, d, e))  # [n_heads, d_model, d_head]
        self.W_O = nn.Parameter(torch.empty(h, e, d))  # [n_heads, d_head, d_model]

    def scores(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Causally masked attention scores [batch, head, dst, src] (before softmax)."""
        y = x + pos  # Shortformer: positions only where queries and keys are read
        q = torch.einsum("bpd,hde->bhpe", y, self.W_Q)
        k = torch.einsum("bpd,hde->bhpe", y, self.W_K)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_head)
        n = x.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        return s.masked_fill(mask, float("-inf"))

    def pattern(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Attention pattern A [batch, head, dst, src]; rows sum to 1."""
        return self.scores(x, pos).softmax(dim=-1)

    def head_outputs(self, x: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """Each head's write to the residual stream [batch, pos, head, d_model]: A^h x W_V^h W_O^h."""
        v = torch.einsum("bpd,hde->bhpe", x, self.W_V)
        z = pattern @ v  # [b, h, dst, e]
        return torch.einsum("bhpe,hed->bphd", z, self.W_O)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Fast path: the same sum over heads, as three large matmuls and one fused attention."""
        return self.forward_from(x + pos, x)

    def forward_from(self, qk_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """``forward`` from its two reads of the residual stream: x + pos for queries and keys, x for values
        (``residual.read`` makes both in one pass)."""
        b, n, d = v_in.shape
        h, e = self.cfg.n_heads, self.cfg.d_head
        # [h, d, e] -> [d, h*e] keeps per-head parameters while the matmul runs wide
        w_qk = torch.cat([self.W_Q, self.W_K], dim=0).permute(1, 0, 2).reshape(d, 2 * h * e)
        qk = qk_in @ w_qk
        v = v_in @ self.W_V.permute(1, 0, 2).reshape(d, h * e)
        qk = qk.view(b, n, 2, h, e).permute(2, 0, 3, 1, 4)  # [2, b, h, n, e]: queries, keys
        v = v.view(b, n, h, e).transpose(1, 2)
        z = causal_attention(qk, v)  # [b, h, n, e]
        return z.transpose(1, 2).reshape(b, n, h * e) @ self.W_O.reshape(h * e, d)


def causal_attention(qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax_causal(q k^T / sqrt(d_head)) v, [b, h, n, e] in and out (q, k = qk [2, b, h, n, e]), in the
    inputs' dtype.

    GPUs: torch's fused kernel. CPUs: fp32 accuracy even under bf16 autocast, in the C kernel of
    ``cpu_attention`` where it runs (reading and writing bf16 itself, so no casts around it; on AMX, bf16
    tile products with P and dS carried as two bf16 each), else in
    torch's fused kernel on fp32 copies: its bf16 path is slower than its fp32 path at d_head 32 (82
    against 49 ms for a [32, 8, 256, 32] batch on an AMX Xeon), and fp32 is the more precise."""
    if qk.device.type == "cpu" and qk.dtype in (torch.float32, torch.bfloat16) \
            and cpu_attention.available(qk.shape[-1]):
        with torch.autocast("cpu", enabled=False):
            return cpu_attention.causal_attention_qk(qk, v)
    q, k = qk
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with torch.autocast("cpu", enabled=False):  # CPU autocast would cast fp32 inputs back to bf16
        z = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    return z.to(q.dtype)


def sinusoidal_positions(n_ctx: int, d_model: int, rms: float) -> torch.Tensor:
    """Vaswani et al.'s table [n_ctx, d_model], scaled so its entries have root mean square ``rms``:
    columns 2k and 2k+1 are sin and cos of pos / 10000^(2k / d_model) (odd d_model drops the last cos)."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).reshape(n_ctx, -1)[:, :d_model]
    return (table * (rms / table.pow(2).mean().sqrt())).float()


class Block(nn.Module):
    """A residual block's attention, named ``blocks.{l}.attn`` as in TransformerLens. The model's forward adds
    its output to the residual stream (``residual.read``, fused with the next block's reads)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))  # [d_vocab, d_model]


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))  # [n_ctx, d_model]


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))  # [d_model, d_vocab]


class AttnOnlyTransformer(nn.Module):
    """Attention-only transformer with any number of layers (0 gives the bigram model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.unembed = Unembed(cfg)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std) for every weight, W_O scaled by 1/sqrt(2 n_layers) (GPT-2);
        W_E and W_pos use ``embed_init_std`` when it is set, W_pos ``pos_init_std`` when that is;
        ``pos_init="sinusoidal"`` sets W_pos to ``sinusoidal_positions`` at that std instead."""
        for name, p in self.named_parameters():
            std = self.cfg.init_std
            if name.endswith("W_O"):
                std /= math.sqrt(2 * self.cfg.n_layers)
            if name.endswith(("W_E", "W_pos")) and self.cfg.embed_init_std is not None:
                std = self.cfg.embed_init_std
            if name.endswith("W_pos") and self.cfg.pos_init_std is not None:
                std = self.cfg.pos_init_std
            with torch.no_grad():
                if name.endswith("W_pos") and self.cfg.pos_init == "sinusoidal":
                    p.copy_(sinusoidal_positions(*p.shape, std))
                else:
                    p.normal_(0.0, std, generator=generator)

    @torch.compiler.disable  # its range check reads values on the host: run it eagerly, outside the graph
    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate ``tokens`` [batch, pos] (or [pos]) and return them as a 2-D long tensor."""
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.as_tensor(tokens)
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
        if tokens.dim() == 1:
            tokens = tokens[None]
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [batch, pos] or [pos], got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if n == 0:
            raise ValueError("tokens is empty: need at least one position")
        if n > self.cfg.n_ctx:
            raise ValueError(f"sequence of length {n} is longer than the model's context n_ctx={self.cfg.n_ctx}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.cfg.d_vocab:
            bad = hi if hi >= self.cfg.d_vocab else lo
            raise ValueError(f"token id {bad} is outside the vocabulary [0, d_vocab={self.cfg.d_vocab})")
        return tokens.long()

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] through the fast path; with ``targets`` [batch, pos], the
        mean cross-entropy instead, without forming the logits (``unembed_cross_entropy``)."""
        tokens = self.check_tokens(tokens)
        # the same rows as W_E[tokens]; its backward sums them into W_E's gradient 5x faster on CPU
        # (1.4 against 7 ms a cpu-preset step) than indexing's index_put
        x = F.embedding(tokens, self.embed.W_E)
        pos = self.pos_embed.W_pos[: tokens.shape[1]]
        out = None  # the last block's attention output, added to x by the next read (one pass with its casts)
        for block in self.blocks:
            x, qk_in, v_in = residual.read(x, out, pos)  # x + out, then x + pos and x in autocast's dtype
            out = block.attn.forward_from(qk_in, v_in)
        x = residual.final(x, out)
        if targets is not None:
            return unembed_cross_entropy(x, self.unembed.W_U, targets)
        return x @ self.unembed.W_U

    def run_with_cache(self, tokens: torch.Tensor, edit_head_out=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and a cache through the explicit path (for analysis, not training).

        Cache keys (TransformerLens's hook names, shortened):
        ``blocks.{l}.resid_pre`` [batch, pos, d_model], ``blocks.{l}.attn.scores`` and
        ``blocks.{l}.attn.pattern`` [batch, head, dst, src], ``blocks.{l}.attn.head_out``
        [batch, pos, head, d_model], ``resid_final`` [batch, pos, d_model], ``pos`` [pos, d_model].
        ``edit_head_out(layer, out) -> out`` may replace a layer's head outputs before they are
        added to the residual stream (ablations); the cache keeps what the heads actually wrote.
        """
        tokens = self.check_tokens(tokens)
        x = self.embed.W_E[tokens]
        pos = self.pos_embed.W_pos[: tokens.shape[1]]
        cache: dict[str, torch.Tensor] = {"pos": pos}
        for layer, block in enumerate(self.blocks):
            attn = block.attn
            cache[f"blocks.{layer}.resid_pre"] = x
            scores = attn.scores(x, pos)
            pattern = scores.softmax(dim=-1)
            out = attn.head_outputs(x, pattern)
            if edit_head_out is not None:
                out = edit_head_out(layer, out)
            cache[f"blocks.{layer}.attn.scores"] = scores
            cache[f"blocks.{layer}.attn.pattern"] = pattern
            cache[f"blocks.{layer}.attn.head_out"] = out
            x = x + out.sum(dim=2)
        cache["resid_final"] = x
        return x @ self.unembed.W_U, cache


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """Next-token cross-entropy in nats (mean, or [batch, pos] when ``per_token``)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    loss = loss.view(targets.shape)
    return loss if per_token else loss.mean()
