"""The attention-only transformer of the paper ("Model simplifications", Elhage et al. 2021).

    x_0      = W_E[t]                                      the residual stream starts as the token embeddings
    x_{l+1}  = x_l + Σ_h h(x_l)                            each layer adds the sum of its heads' outputs
    h(x)     = A^h · x W_V^h W_O^h                         a head moves information between positions...
    A^h      = softmax*((x + p) W_Q^h ((x + p) W_K^h)ᵀ / √d_head)     ...where its pattern says
    logits   = x_L W_U

Positions p = W_pos[:n] enter only the inputs of W_Q and W_K (Shortformer), so every OV path carries token
identity only. No LayerNorm, no biases, W_E and W_U untied: every decomposition in ``circuits.analysis`` is
then exact. Weights have TransformerLens's names and shapes (``circuits/__init__.py``), so a state dict loads
into ``HookedTransformer`` (``model.interop``).

Each attention layer computes its heads one of two ways, with the same maths (tests compare them):
- plain ``model(tokens)``: the pattern is never written out; ``kernels.causal_attention`` does
  softmax*(q kᵀ/√d_head) v in one fused call (a C kernel on CPUs, torch's flash attention on GPUs);
- while a hook is attached (``run_with_cache``, ``run_with_hooks``): explicitly, head by head, with the scores,
  the pattern A^h and each head's output passing through named hook points.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from einops import einsum
from torch import nn

from circuits import kernels
from circuits.config import ModelConfig

from .hooks import HookFn, HookPoint, name_hook_points


class Attention(nn.Module):
    """One attention layer: n_heads heads reading the residual stream and writing the sum of their outputs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(h, d, e))  # [n_heads, d_model, d_head]
        self.W_K = nn.Parameter(torch.empty(h, d, e))  # [n_heads, d_model, d_head]
        self.W_V = nn.Parameter(torch.empty(h, d, e))  # [n_heads, d_model, d_head]
        self.W_O = nn.Parameter(torch.empty(h, e, d))  # [n_heads, d_head, d_model]
        self.hook_attn_scores = HookPoint()  # [batch, head, dst, src], scaled and masked
        self.hook_pattern = HookPoint()  # [batch, head, dst, src]: A^h, rows sum to 1
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]: what each head read, A^h x W_V^h
        self.hook_result = HookPoint()  # [batch, pos, head, d_model]: each head's output h(x) = z^h W_O^h

    def forward(self, x: torch.Tensor, pos: torch.Tensor, v_input: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_h h(x) [batch, pos, d_model] from the residual stream x [batch, pos, d_model] and positions
        pos [pos, d_model]; the values read ``v_input`` (default: x; the frozen-pattern passes feed others)."""
        explicit = self._explicit()  # head by head, with the scores, pattern and outputs as tensors
        v = einsum(x if v_input is None else v_input, self.W_V,
                   "batch pos d_model, head d_model d_head -> batch head pos d_head")
        if explicit:
            pattern = self.hook_pattern(self.hook_attn_scores(self.scores(x, pos)).softmax(dim=-1))
            z = pattern @ v  # [batch, head, dst, d_head]: each destination's mix of the sources' values
        else:
            q, k = self.queries_keys(x, pos)
            z = kernels.causal_attention(q, k, v)  # softmax*(q kᵀ/√d_head) v: the pattern is never formed
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]
        if explicit:
            result = einsum(z, self.W_O, "batch pos head d_head, head d_head d_model -> batch pos head d_model")
            return self.hook_result(result).sum(dim=2)
        return einsum(z, self.W_O, "batch pos head d_head, head d_head d_model -> batch pos d_model")

    def queries_keys(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every head's queries and keys, [batch, head, pos, d_head] each, read from x + p (Shortformer: positions
        only where queries and keys are read)."""
        y = x + pos
        q = einsum(y, self.W_Q, "batch pos d_model, head d_model d_head -> batch head pos d_head")
        k = einsum(y, self.W_K, "batch pos d_model, head d_model d_head -> batch head pos d_head")
        return q, k

    def scores(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Attention scores [batch, head, dst, src]: (x + p) W_Q ((x + p) W_K)ᵀ / √d_head, src > dst set to -inf."""
        q, k = self.queries_keys(x, pos)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_head)
        n = x.shape[1]
        return s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1), float("-inf"))

    def head_outputs(self, x: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """Each head's write to the residual stream, A^h x W_V^h W_O^h: [batch, pos, head, d_model] from
        x [batch, pos, d_model] and a pattern [batch, head, dst, src]."""
        v = einsum(x, self.W_V, "batch pos d_model, head d_model d_head -> batch head pos d_head")
        z = pattern @ v  # [batch, head, dst, d_head]: each destination's mix of the sources' values
        return einsum(z, self.W_O, "batch head dst d_head, head d_head d_model -> batch dst head d_model")

    def _explicit(self) -> bool:
        """Whether anything is attached to the hook points that need the pattern or each head's output; a hook on
        ``hook_z`` (a knock-out, say) keeps the fused path."""
        return bool(self.hook_attn_scores.fns or self.hook_pattern.fns or self.hook_result.fns)


class Block(nn.Module):
    """A residual block, named ``blocks.{l}`` as in TransformerLens: x_{l+1} = x_l + Σ_h h(x_l)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]: x_l
        self.hook_v_input = HookPoint()  # [batch, pos, d_model]: what the values read (x_l unless changed)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]: Σ_h h(x_l)
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]: x_{l+1}

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)  # x_l
        out = self.attn(x, pos, v_input=self.hook_v_input(x))  # Σ_h h(x_l)
        return self.hook_resid_post(x + self.hook_attn_out(out))  # x_{l+1}


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))  # [d_vocab, d_model]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # the rows W_E[tokens]; F.embedding's backward sums them into W_E's gradient 5x faster on CPU than indexing's
        return F.embedding(tokens, self.W_E)  # [batch, pos, d_model]


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))  # [n_ctx, d_model]

    def forward(self, n: int) -> torch.Tensor:
        return self.W_pos[:n]  # [pos, d_model]


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))  # [d_model, d_vocab]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_U  # [batch, pos, d_vocab]


class AttnOnlyTransformer(nn.Module):
    """Attention-only transformer with any number of layers (0 gives the bigram model W_U W_E)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.unembed = Unembed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]: x_0
        self.hook_pos_embed = HookPoint()  # [pos, d_model]: p
        self.hook_resid_final = HookPoint()  # [batch, pos, d_model]: x_L, what W_U reads
        self.hook_points = name_hook_points(self)
        self.reset_parameters()

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] of tokens [batch, pos]; with ``targets`` [batch, pos], the mean
        next-token cross-entropy instead, computed without forming the logits."""
        x = self.residual_stream(tokens)  # x_L: [batch, pos, d_model]
        if targets is None:
            return self.unembed(x)  # logits x_L W_U: [batch, pos, d_vocab]
        return kernels.unembed_cross_entropy(x, self.unembed.W_U, targets)

    def residual_stream(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream after the last layer, x_L [batch, pos, d_model], of tokens [batch, pos]."""
        tokens = self.check_tokens(tokens)
        x = self.hook_embed(self.embed(tokens))  # x_0 = W_E[t]: [batch, pos, d_model]
        pos = self.hook_pos_embed(self.pos_embed(tokens.shape[1]))  # p: [pos, d_model]
        for block in self.blocks:
            x = block(x, pos)  # x_{l+1} = x_l + Σ_h h(x_l)
        return self.hook_resid_final(x)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, HookFn]] = ()):
        """Attach each (hook point name, fn) of ``fwd_hooks`` while the block runs; fn(value, name) may return
        a replacement value. Names: ``hook_embed``, ``hook_pos_embed``, ``blocks.{l}.hook_resid_pre``,
        ``blocks.{l}.hook_v_input``, ``blocks.{l}.attn.hook_attn_scores``, ``blocks.{l}.attn.hook_pattern``,
        ``blocks.{l}.attn.hook_z``, ``blocks.{l}.attn.hook_result``, ``blocks.{l}.hook_attn_out``,
        ``blocks.{l}.hook_resid_post``,
        ``hook_resid_final`` (``hook_points``)."""
        attached = []
        try:
            for name, fn in fwd_hooks:
                if name not in self.hook_points:
                    raise KeyError(f"no hook point {name!r}; this model has {sorted(self.hook_points)}")
                self.hook_points[name].fns.append(fn)
                attached.append((name, fn))
            yield self
        finally:
            for name, fn in attached:
                self.hook_points[name].fns.remove(fn)

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: list[tuple[str, HookFn]] = ()) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] with ``fwd_hooks`` attached (``hooks``)."""
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(self, tokens: torch.Tensor, fwd_hooks: list[tuple[str, HookFn]] = ()
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and every hook point's value, by name, after ``fwd_hooks`` had their say (an ablated head's
        ``hook_result`` holds what it wrote in the end). Runs the explicit path."""
        cache: dict[str, torch.Tensor] = {}

        def save(value: torch.Tensor, name: str) -> None:
            cache[name] = value

        with self.hooks([*fwd_hooks, *((name, save) for name in self.hook_points)]):
            return self(tokens), cache

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


def sinusoidal_positions(n_ctx: int, d_model: int, rms: float) -> torch.Tensor:
    """Vaswani et al.'s table [n_ctx, d_model], scaled so its entries have root mean square ``rms``:
    columns 2k and 2k+1 are sin and cos of pos / 10000^(2k / d_model) (odd d_model drops the last cos)."""
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).reshape(n_ctx, -1)[:, :d_model]
    return (table * (rms / table.pow(2).mean().sqrt())).float()
