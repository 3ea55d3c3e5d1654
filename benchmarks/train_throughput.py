"""Training throughput of our model against TransformerLens's HookedTransformer, same run, same shapes.

Measures tokens/s of a full training step (forward, backward, AdamW step; warm-up excluded; the
median of several repeats) for:
  ours     - circuits.train.training_step as `train` runs it (bf16 autocast, the unembedding and loss
             fused in row chunks (circuits.unembed_loss), fused AdamW)
  TL fp32  - HookedTransformer as it runs by default (fp32, torch's default AdamW)
  TL bf16  - HookedTransformer under the same bf16 autocast
and this machine's bf16 matmul peak (a large square matmul timed in the same run), giving our
model-FLOPs utilisation. Needs transformer-lens 3.x (requirements-dev.txt).

    python benchmarks/train_throughput.py [--preset cpu] [--layers 2] [--steps 4] [--repeats 3]

Last line: ratio_vs_transformerlens=<x> ratio_same_precision=<y> mfu=<z>
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from circuits.config import ModelConfig, get_preset
from circuits.model import AttnOnlyTransformer
from circuits.train import make_optimizer, training_step


def model_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (PaLM's count): 6 N for the N matmul weights (W_E is a lookup)
    plus 12 n_layers n_ctx (n_heads d_head) for attention scores and mixing (no causal discount)."""
    n_matmul = cfg.d_model * cfg.d_vocab + cfg.n_layers * 4 * cfg.d_model * cfg.n_heads * cfg.d_head
    return 6 * n_matmul + 12 * cfg.n_layers * cfg.n_ctx * cfg.n_heads * cfg.d_head


def bf16_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n bf16 matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def tokens_per_second(step, batch: torch.Tensor, steps: int, repeats: int) -> float:
    """Median over ``repeats`` of tokens/s for ``steps`` calls of ``step(batch)``, after 2 warm-up steps."""
    for _ in range(2):
        step(batch)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step(batch)
        rates.append(steps * batch.shape[0] * (batch.shape[1] - 1) / (time.perf_counter() - t0))
    return statistics.median(rates)


def ours_step(cfg: ModelConfig, train_cfg):
    model = AttnOnlyTransformer(cfg)
    opt = make_optimizer(model, train_cfg)
    device = torch.device("cpu")
    return lambda batch: training_step(model, model, opt, batch, train_cfg, device)


def transformerlens_step(cfg: ModelConfig, train_cfg, bf16: bool):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tl_cfg = HookedTransformerConfig(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
                                     d_head=cfg.d_head, n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, attn_only=True,
                                     positional_embedding_type="shortformer", normalization_type=None,
                                     act_fn="relu", device="cpu", seed=0)
    model = HookedTransformer(tl_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, betas=train_cfg.betas,
                            weight_decay=train_cfg.weight_decay)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step(batch):
        with ctx():
            loss = model(batch, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
    # TL's loss predicts every next token of its input, so it gets the full n_ctx + 1 window cut to n_ctx
    return lambda batch: step(batch[:, :-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    preset = get_preset(args.preset)
    cfg, train_cfg = preset.model_config(args.layers), preset.train_config(args.layers)
    torch.manual_seed(0)
    batch = torch.randint(0, cfg.d_vocab, (train_cfg.batch_size, cfg.n_ctx + 1))
    print(f"{cfg}; batch {train_cfg.batch_size}; threads {torch.get_num_threads()}")

    peak = bf16_matmul_peak()
    ours = tokens_per_second(ours_step(cfg, train_cfg), batch, args.steps, args.repeats)
    tl_fp32 = tokens_per_second(transformerlens_step(cfg, train_cfg, bf16=False), batch, args.steps, args.repeats)
    tl_bf16 = tokens_per_second(transformerlens_step(cfg, train_cfg, bf16=True), batch, args.steps, args.repeats)
    mfu = ours * model_flops_per_token(cfg) / peak
    print(f"bf16 matmul peak: {peak / 1e12:.3f} TFLOP/s; model FLOPs/token: {model_flops_per_token(cfg) / 1e6:.1f} M")
    print(f"ours (bf16, fused loss and AdamW):  {ours:,.0f} tokens/s")
    print(f"TransformerLens fp32 (default):    {tl_fp32:,.0f} tokens/s")
    print(f"TransformerLens bf16 autocast:     {tl_bf16:,.0f} tokens/s")
    print(f"ratio_vs_transformerlens={ours / tl_fp32:.2f} ratio_same_precision={ours / tl_bf16:.2f} mfu={mfu:.2f}")


if __name__ == "__main__":
    main()
