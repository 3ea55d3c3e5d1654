"""Training throughput of our model against TransformerLens's HookedTransformer, same run, same shapes.

Measures tokens/s of a full training step (forward, backward, AdamW step; warm-up excluded; the
median of several repeats, the contenders taking turns within each repeat) for:
  ours     - circuits.train.training_step as `train` runs it (bf16 autocast where bf16 is fast, the unembedding and loss
             fused in row chunks (circuits.unembed_loss), on CPUs the C attention kernel (circuits.cpu_attention)
             and freed memory kept in the process (circuits.kernels.memory, process-wide: TransformerLens too),
             fused AdamW)
  TL fp32  - HookedTransformer as it runs by default (fp32, torch's default AdamW)
  TL bf16  - HookedTransformer under the same bf16 autocast
and this machine's matmul peak (a large square matmul timed in the same run, once a repeat in turn with the
contenders, the best kept), giving our model-FLOPs utilisation. Each contender's line gives the range of its
repeats too, and a ``ceiling:`` line divides the peak by the FLOPs our step computes (the attention's causal
half): the tokens/s a step at the whole peak would reach, and its multiple of TransformerLens's fastest repeat,
the most a kernel could make the first ratio read in that run. The peak is taken in the precision training
computes in: bf16, or fp32 on CPUs without native bf16 (AVX2 only), where torch's bf16 matmul is ~100x slower
than fp32 and ``train`` runs in fp32 (``circuits.kernels.precision``); there "same precision" is fp32 for both models.
By default the process keeps freed blocks of up to 32 MB (as ``train`` does, process-wide), but glibc maps
larger ones fresh and faults their pages in: ours allocates nothing that large, TransformerLens does (its fp32
logits and log-softmax, 134 MB each at the cpu preset). ``--heap-only`` keeps those too, for every contender,
which times TransformerLens without that cost: its fp32 step ran 2.2x faster so on a 2-core AMD EPYC.
Needs transformer-lens 3.x (requirements-dev.txt). ``--device cuda`` measures the same on a GPU
(our step torch.compiled as the paper preset trains; TransformerLens only where it is installed).

    python benchmarks/train_throughput.py [--preset cpu] [--layers 2] [--steps 4] [--repeats 3]
    python benchmarks/train_throughput.py --device cuda --preset paper --steps 20
    python benchmarks/train_throughput.py --set d_model=512 n_heads=16     # another shape
    python benchmarks/train_throughput.py --heap-only     # TransformerLens without its page faults (below)

Last line: ratio_vs_transformerlens=<x> ratio_same_precision=<y> mfu=<z>
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from circuits.config import ModelConfig, add_overrides_argument, preset_from_args
from circuits.kernels import cpu_attention
from circuits.kernels import unembed_loss
from circuits.kernels.memory import keep_all_in_heap, keep_freed_memory
from circuits.model.transformer import AttnOnlyTransformer
from circuits.train.loop import training_step
from circuits.train.setup import effective_precision, make_optimizer, maybe_compile


def model_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (PaLM's count): 6 N for the N matmul weights (W_E is a lookup)
    plus 12 n_layers n_ctx (n_heads d_head) for attention scores and mixing (no causal discount)."""
    n_matmul = cfg.d_model * cfg.d_vocab + cfg.n_layers * 4 * cfg.d_model * cfg.n_heads * cfg.d_head
    return 6 * n_matmul + 12 * cfg.n_layers * cfg.n_ctx * cfg.n_heads * cfg.d_head


def computed_flops_per_token(cfg: ModelConfig) -> float:
    """FLOPs our step computes a token: ``model_flops_per_token`` with the attention's causal half only
    (query i meets keys 0..i: (n_ctx + 1) / 2 of n_ctx on average), which our kernels and torch's flash
    attention skip. Divided into the peak it bounds our tokens/s (``ceiling_line``)."""
    attention = 12 * cfg.n_layers * cfg.n_ctx * cfg.n_heads * cfg.d_head
    return model_flops_per_token(cfg) - attention + attention * (cfg.n_ctx + 1) / (2 * cfg.n_ctx)


def spread(rates: list[float]) -> str:
    """The repeats' range: TransformerLens's memory-bound step moves more between repeats than ours."""
    return f"repeats {min(rates):,.0f}-{max(rates):,.0f}"


def ceiling_line(cfg: ModelConfig, peak: float, tl_rates: list[float]) -> str:
    """Our tokens/s if the whole step ran at the matmul peak, and that as a multiple of TransformerLens's
    fastest repeat: the most any kernel could make the ratio read in this run."""
    flops = computed_flops_per_token(cfg)
    top = peak / flops
    return (f"ceiling: ours at the whole peak would train {top:,.0f} tokens/s "
            f"({flops / 1e6:.1f} M FLOPs computed a token), "
            f"{top / max(tl_rates):.2f}x TransformerLens fp32's fastest repeat")


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


def interleaved_rates(steps: dict, batch: torch.Tensor, n_steps: int, repeats: int,
                      between=lambda: None) -> dict[str, list[float]]:
    """Tokens/s of each ``step(batch)`` in ``repeats`` timed blocks of ``n_steps`` calls, after 3
    warm-up calls each (the first compiles, where a step is compiled). The contenders take turns within
    every repeat, so a slow spell of a shared machine hits all of them alike; ``between()`` runs once a
    repeat, in turn with them (the matmul peak)."""
    for step in steps.values():
        for _ in range(3):
            step(batch)
    rates = {name: [] for name in steps}
    tokens = n_steps * batch.shape[0] * (batch.shape[1] - 1)
    for _ in range(repeats):
        between()
        for name, step in steps.items():
            sync(batch.device)
            t0 = time.perf_counter()
            for _ in range(n_steps):
                step(batch)
            sync(batch.device)
            rates[name].append(tokens / (time.perf_counter() - t0))
    return rates


def ours_step(cfg: ModelConfig, train_cfg, device: torch.device):
    if device.type == "cpu":
        keep_freed_memory()  # as train() does (process-wide, so TransformerLens gains it too)
    model = AttnOnlyTransformer(cfg).to(device)
    opt = make_optimizer(model, train_cfg)
    fwd = maybe_compile(model, train_cfg, device)  # as train() does
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


def transformerlens_steps(cfg, train_cfg, device: torch.device, precision: str) -> dict:
    """TransformerLens's step in fp32 and, where ours runs in bf16, under the same autocast; empty where
    TransformerLens is not installed (GPU boxes)."""
    try:
        import transformer_lens  # noqa: F401
    except ImportError:
        if device.type == "cuda":
            return {}
        raise
    steps = {"tl_fp32": transformerlens_step(cfg, train_cfg, False, device)}
    if precision == "bf16":
        steps["tl_bf16"] = transformerlens_step(cfg, train_cfg, True, device)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    add_overrides_argument(parser)
    parser.add_argument("--heap-only", action="store_true",
                        help="serve every allocation from the heap, for all contenders (kernels.memory.keep_all_in_heap): "
                             "TransformerLens's large tensors are then reused instead of page-faulted every step")
    parser.add_argument("--eager-loss", action="store_true",
                        help="the fused loss's per-chunk chain eagerly on GPU too (default: compiled, unembed_loss.COMPILED_ON)")
    args = parser.parse_args()
    if args.eager_loss:
        unembed_loss.COMPILED_ON = ()
    device = torch.device(args.device)
    preset = preset_from_args(parser, args)
    cfg, train_cfg = preset.model_config(args.layers), preset.train_config(args.layers)
    precision = effective_precision(device, train_cfg.precision)
    torch.manual_seed(0)
    batch = torch.randint(0, cfg.d_vocab, (train_cfg.batch_size, cfg.n_ctx + 1), device=device)
    if args.heap_only and device.type == "cpu":
        print(f"every allocation from the heap (glibc M_MMAP_MAX=0): {'yes' if keep_all_in_heap() else 'not here (no glibc)'}")
    print(f"{cfg}; batch {train_cfg.batch_size}; {device.type}; threads {torch.get_num_threads()}; "
          f"training precision {precision} (asked: {train_cfg.precision}; "
          f"{torch.backends.cpu.get_cpu_capability() if device.type == 'cpu' else torch.cuda.get_device_name()})")
    if device.type == "cpu":
        kernel = cpu_attention.available(cfg.d_head)
        print(f"our attention: {f'C kernel ({cpu_attention.isa()})' if kernel else 'torch fused (no C kernel here)'}"
              "; $CIRCUITS_C_KERNELS=0 times torch's instead")

    # the peak is timed once a repeat, in turn with the contenders, and the best kept: timed once, a slow
    # spell of a shared machine during those 10 products lowered it by up to a third and inflated the MFU
    peak_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peaks = [matmul_peak(peak_dtype, device)]
    steps = {"ours": ours_step(cfg, train_cfg, device), **transformerlens_steps(cfg, train_cfg, device, precision)}
    repeats = interleaved_rates(steps, batch, args.steps, args.repeats,
                                between=lambda: peaks.append(matmul_peak(peak_dtype, device)))
    rates = {name: statistics.median(r) for name, r in repeats.items()}  # the median of each contender's repeats
    peak = max(peaks)
    ours = rates["ours"]
    mfu = ours * model_flops_per_token(cfg) / peak
    print(f"{precision} matmul peak: {peak / 1e12:.3f} TFLOP/s (best of {len(peaks)} timings: "
          f"{', '.join(f'{p / 1e12:.2f}' for p in peaks)}); model FLOPs/token: {model_flops_per_token(cfg) / 1e6:.1f} M")
    print(f"ours ({precision}, fused loss and AdamW):  {ours:,.0f} tokens/s ({spread(repeats['ours'])})")
    if "tl_fp32" not in rates:
        print("TransformerLens is not installed here: no ratios")
        print(f"ratio_vs_transformerlens=n/a ratio_same_precision=n/a mfu={mfu:.2f}")
        return
    same = "tl_bf16" if "tl_bf16" in rates else "tl_fp32"  # TransformerLens in our precision
    tl_fp32, tl_same = rates["tl_fp32"], rates[same]
    print(f"TransformerLens fp32 (default):    {tl_fp32:,.0f} tokens/s ({spread(repeats['tl_fp32'])})")
    print(f"TransformerLens {precision} (same as ours):  {tl_same:,.0f} tokens/s ({spread(repeats[same])})")
    print(ceiling_line(cfg, peak, repeats["tl_fp32"]))
    if device.type == "cpu" and not args.heap_only:
        print("(glibc maps blocks above 32 MB fresh each time: TransformerLens's larger tensors, such as the cpu "
              "preset's 134 MB logits, fault their pages in every step; --heap-only times every contender without that)")
    print(f"ratio_vs_transformerlens={ours / tl_fp32:.2f} ratio_same_precision={ours / tl_same:.2f} mfu={mfu:.2f}")


if __name__ == "__main__":
    main()
