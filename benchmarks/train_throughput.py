"""Training throughput of our model against TransformerLens's HookedTransformer, same run, same shapes.

Measures tokens/s of a full training step (forward, backward, AdamW step; warm-up excluded; the
median of several repeats) for:
  ours     - circuits.train.training_step as `train` runs it (bf16 autocast, the unembedding and loss
             fused in row chunks (circuits.unembed_loss), fused AdamW)
  TL fp32  - HookedTransformer as it runs by default (fp32, torch's default AdamW)
  TL bf16  - HookedTransformer under the same bf16 autocast
and this machine's matmul peak (a large square matmul timed in the same run), giving our
model-FLOPs utilisation. The peak is taken in the precision training computes in: bf16, or fp32 on
CPUs without native bf16 (AVX2 only), where torch's bf16 matmul is ~100x slower than fp32 and
``train`` runs in fp32 (``circuits.precision``); there "same precision" is fp32 for both models.
Needs transformer-lens 3.x (requirements-dev.txt). ``--device cuda`` measures the same on a GPU
(our step torch.compiled as the paper preset trains; TransformerLens only where it is installed).

    python benchmarks/train_throughput.py [--preset cpu] [--layers 2] [--steps 4] [--repeats 3]
    python benchmarks/train_throughput.py --device cuda --preset paper --steps 20

Last line: ratio_vs_transformerlens=<x> ratio_same_precision=<y> mfu=<z>
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from circuits.config import ModelConfig, get_preset
from circuits import unembed_loss
from circuits.model import AttnOnlyTransformer
from circuits.train import effective_precision, make_optimizer, training_step


def model_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (PaLM's count): 6 N for the N matmul weights (W_E is a lookup)
    plus 12 n_layers n_ctx (n_heads d_head) for attention scores and mixing (no causal discount)."""
    n_matmul = cfg.d_model * cfg.d_vocab + cfg.n_layers * 4 * cfg.d_model * cfg.n_heads * cfg.d_head
    return 6 * n_matmul + 12 * cfg.n_layers * cfg.n_ctx * cfg.n_heads * cfg.d_head


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype`` (best of ``repeats``; n = 2048 on CPU, 8192 on GPU)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def tokens_per_second(step, batch: torch.Tensor, steps: int, repeats: int) -> float:
    """Median over ``repeats`` of tokens/s for ``steps`` calls of ``step(batch)``, after 3 warm-up steps
    (the first compiles, where the step is compiled)."""
    for _ in range(3):
        step(batch)
    rates = []
    for _ in range(repeats):
        sync(batch.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(batch)
        sync(batch.device)
        rates.append(steps * batch.shape[0] * (batch.shape[1] - 1) / (time.perf_counter() - t0))
    return statistics.median(rates)


def ours_step(cfg: ModelConfig, train_cfg, device: torch.device):
    model = AttnOnlyTransformer(cfg).to(device)
    opt = make_optimizer(model, train_cfg)
    fwd = torch.compile(model) if train_cfg.compile and device.type == "cuda" else model  # as train() does
    return lambda batch: training_step(fwd, model, opt, batch, train_cfg, device)


def transformerlens_step(cfg: ModelConfig, train_cfg, bf16: bool, device: torch.device):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tl_cfg = HookedTransformerConfig(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
                                     d_head=cfg.d_head, n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, attn_only=True,
                                     positional_embedding_type="shortformer", normalization_type=None,
                                     act_fn="relu", device=device.type, seed=0)
    model = HookedTransformer(tl_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, betas=train_cfg.betas,
                            weight_decay=train_cfg.weight_decay)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step(batch):
        with ctx():
            loss = model(batch, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
    # TL's loss predicts every next token of its input, so it gets the full n_ctx + 1 window cut to n_ctx
    return lambda batch: step(batch[:, :-1])


def transformerlens_rates(cfg, train_cfg, batch, precision: str, args) -> tuple[float, float] | None:
    """(fp32, same precision as ours) tokens/s of TransformerLens; None where it is not installed (GPU boxes)."""
    try:
        import transformer_lens  # noqa: F401
    except ImportError:
        if batch.device.type == "cuda":
            return None
        raise
    rate = lambda bf16: tokens_per_second(transformerlens_step(cfg, train_cfg, bf16, batch.device), batch,
                                          args.steps, args.repeats)
    fp32 = rate(False)
    return fp32, (rate(True) if precision == "bf16" else fp32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compiled-loss", action="store_true",
                        help="run the fused loss's per-chunk chain through torch.compile on GPU (unembed_loss.COMPILED_ON)")
    args = parser.parse_args()
    if args.compiled_loss:
        unembed_loss.COMPILED_ON = ("cuda",)
    device = torch.device(args.device)
    preset = get_preset(args.preset)
    cfg, train_cfg = preset.model_config(args.layers), preset.train_config(args.layers)
    precision = effective_precision(device, train_cfg.precision)
    torch.manual_seed(0)
    batch = torch.randint(0, cfg.d_vocab, (train_cfg.batch_size, cfg.n_ctx + 1), device=device)
    print(f"{cfg}; batch {train_cfg.batch_size}; {device.type}; threads {torch.get_num_threads()}; "
          f"training precision {precision} (asked: {train_cfg.precision}; "
          f"{torch.backends.cpu.get_cpu_capability() if device.type == 'cpu' else torch.cuda.get_device_name()})")

    peak = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32, device)
    ours = tokens_per_second(ours_step(cfg, train_cfg, device), batch, args.steps, args.repeats)
    tl = transformerlens_rates(cfg, train_cfg, batch, precision, args)
    mfu = ours * model_flops_per_token(cfg) / peak
    print(f"{precision} matmul peak: {peak / 1e12:.3f} TFLOP/s; model FLOPs/token: {model_flops_per_token(cfg) / 1e6:.1f} M")
    print(f"ours ({precision}, fused loss and AdamW):  {ours:,.0f} tokens/s")
    if tl is None:
        print("TransformerLens is not installed here: no ratios")
        print(f"ratio_vs_transformerlens=n/a ratio_same_precision=n/a mfu={mfu:.2f}")
        return
    tl_fp32, tl_same = tl
    print(f"TransformerLens fp32 (default):    {tl_fp32:,.0f} tokens/s")
    print(f"TransformerLens {precision} (same as ours):  {tl_same:,.0f} tokens/s")
    print(f"ratio_vs_transformerlens={ours / tl_fp32:.2f} ratio_same_precision={ours / tl_same:.2f} mfu={mfu:.2f}")


if __name__ == "__main__":
    main()
