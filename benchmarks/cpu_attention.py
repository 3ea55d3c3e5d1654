"""Causal attention of one training layer on CPU: our C kernels against torch's fused attention, same run.

Times forward and backward (the median of several repeats, the contenders taking turns within each) at the
shape of one layer of a preset's batch, with q and k laid out as the model makes them (views of one
[batch, pos, 2, heads, d_head] matmul output):
  ours <isa>   - circuits.cpu_attention on every instruction set this CPU has ("amx": bf16 only)
  torch fp32   - F.scaled_dot_product_attention(is_causal=True) on fp32 tensors (what training used before)
  torch bf16   - the same on bf16 tensors
Each of ours runs in the precision training would use it in: bf16 where bf16 is fast here, else fp32.

    python benchmarks/cpu_attention.py [--preset cpu] [--repeats 5]

Last line: attention_speedup_vs_torch=<x> (torch's best time over ours at the training precision, forward
plus backward)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from circuits.config import get_preset
from circuits.kernels import cpu_attention
from circuits.kernels.precision import bf16_is_fast


def layer_inputs(batch: int, heads: int, n: int, e: int, dtype: torch.dtype):
    """q, k, v [b, h, n, e] (views of [b, n, h, e] tensors, as the model's projections make them) and an
    output gradient."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, n, heads, e, generator=g).to(dtype).transpose(1, 2).requires_grad_()
               for _ in range(3))
    dz = torch.randn(batch, heads, n, e, generator=g).to(dtype)
    return q, k, v, dz


def ours(isa: str, inputs):
    def step():
        cpu_attention.isa = lambda: isa  # the instruction set under test (restored by main)
        q, k, v, dz = inputs
        q.grad = k.grad = v.grad = None  # no accumulation into earlier gradients
        z = cpu_attention.causal_attention(q, k, v)
        t = time.perf_counter()
        z.backward(dz)
        return t
    return step


def torch_sdpa(inputs):
    def step():
        q, k, v, dz = inputs
        q.grad = k.grad = v.grad = None
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        t = time.perf_counter()
        z.backward(dz)
        return t
    return step


def timed(steps: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median forward and backward seconds of each step, the contenders in turns, after one warm-up each."""
    for step in steps.values():
        step()
    times = {name: ([], []) for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            t1 = step()
            t2 = time.perf_counter()
            times[name][0].append(t1 - t0)
            times[name][1].append(t2 - t1)
    return {name: (statistics.median(f), statistics.median(b)) for name, (f, b) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    preset = get_preset(args.preset)
    cfg, train_cfg = preset.model_config(2), preset.train_config(2)
    shape = (train_cfg.batch_size, cfg.n_heads, cfg.n_ctx, cfg.d_head)
    dtype = torch.bfloat16 if bf16_is_fast() else torch.float32
    isas = list(cpu_attention._allowed()) if cpu_attention.available(cfg.d_head) else []
    if dtype == torch.float32 and "amx" in isas:
        isas.remove("amx")  # bf16 only
    print(f"one layer: batch {shape[0]} x {shape[1]} heads x {shape[2]} positions x d_head {shape[3]}; "
          f"{torch.get_num_threads()} threads; training precision here: {dtype}; our kernels: {isas or 'none'}")
    inputs = {dt: layer_inputs(*shape, dt) for dt in (torch.float32, torch.bfloat16)}
    steps = {f"ours {isa}": ours(isa, inputs[dtype]) for isa in isas}
    steps.update({"torch fp32": torch_sdpa(inputs[torch.float32]), "torch bf16": torch_sdpa(inputs[torch.bfloat16])})
    saved = cpu_attention.isa
    try:
        results = timed(steps, args.repeats)
    finally:
        cpu_attention.isa = saved
    for name, (f, b) in results.items():
        print(f"{name:12s} forward {f * 1e3:7.1f} ms  backward {b * 1e3:7.1f} ms  total {(f + b) * 1e3:7.1f} ms")
    torch_best = min(sum(results[name]) for name in ("torch fp32", "torch bf16"))
    if not isas:
        print("no C attention kernel runs here: attention_speedup_vs_torch=n/a")
        return
    ours_best = sum(results[f"ours {cpu_attention.isa() if dtype == torch.bfloat16 else cpu_attention.vector_isa()}"])
    print(f"attention_speedup_vs_torch={torch_best / ours_best:.2f}")


if __name__ == "__main__":
    main()
