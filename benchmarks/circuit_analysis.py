"""The one-layer circuit analysis at the paper's size, on a random model: time and peak memory.

A 1-layer attention-only model with GPT-2's vocabulary (d_vocab 50257, d_model 768, 12 heads x 64;
n_ctx 64 to save memory, irrelevant here). For every head:
  - eigenvalue summary sum(λ)/sum(|λ|) of its OV circuit W_U W_OV W_E (from the 64 x 64 cyclic product)
  - top-k entries of its OV circuit (source -> output) and of its QK circuit (destination, source)
  - the fraction of source tokens whose top-1 / top-5 OV output is themselves
Each d_vocab x d_vocab circuit (10 GB in fp32) is scanned in blocks, never built. Then, timed
apart (the goal covers the part above), the per-token dump of the one-layer chapter over the whole
vocabulary: every token's top-5 OV outputs, top-5 QK sources and top-5 QK destinations in every
head (``skip_trigrams.token_dump``: 36 per-row top-k passes over 50257 x 50257 products).

Every top-k needs all 50257^2 entries of a rank-64 product: 2 * 50257^2 * 64 = 0.32 TFLOP per
circuit, 7.8 TFLOP for 24 circuits. Where it can, the scan runs in a C kernel that keeps only group
maxima (circuits/kernels/group_max.py: AMX for the bf16 scan; compiled on first use;
the first line says which one runs and how long the build took); elsewhere in torch tiles. Results
are exact either way.

    python benchmarks/circuit_analysis.py [--vocab 50257] [--k 100] [--chunk-rows N] [--chunk-cols N]
                                          [--threads N] [--heads N] [--no-dump] [--device cuda]

Peak memory is the growth of the process's max RSS over its value after the model was built; on CUDA
it is the GPU's peak allocation (torch.cuda.max_memory_allocated) beyond the model's.
Last line (eigen-positivity, top-k and copying rates of every head; not the dump):
seconds=<s> peak_gb=<g>
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from circuits.kernels import group_max
from circuits.analysis.scan.tables import scan_ov_circuit, topk_circuit_entries
from circuits.analysis.circuits import eigen_positivity, ov_circuit, qk_circuit
from circuits.config import ModelConfig
from circuits.model.transformer import AttnOnlyTransformer
from circuits.analysis.skip_trigrams import token_dump
from circuits.kernels.precision import bf16_is_fast


def peak_gb(device: torch.device) -> float:
    """The process's max RSS (Linux reports KiB), or on CUDA the peak of torch's GPU allocations."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--chunk-rows", type=int, default=None, help="rows per block (default: the scan's)")
    ap.add_argument("--chunk-cols", type=int, default=None, help="columns per tile on the torch path")
    ap.add_argument("--heads", type=int, default=0, help="analyse only the first N heads (0: all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-dump", action="store_true", help="skip the per-token dump")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the scan runs where the factors are)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    dtype = torch.bfloat16 if bf16_is_fast(device.type) else torch.float32
    kind = group_max.kind_for(dtype, 64) if device.type == "cpu" else None
    kernel = f"C kernel {kind!r}" if kind else f"torch tiles on {device} (no C kernel for it here)"
    print(f"scan in {dtype}: {kernel}; ready in {time.perf_counter() - t:.2f} s (a first build compiles it)",
          flush=True)
    cfg = ModelConfig(n_layers=1, d_model=768, n_heads=12, d_head=64, n_ctx=64, d_vocab=args.vocab)
    model = AttnOnlyTransformer(cfg).requires_grad_(False).to(device)
    base = peak_gb(device)
    print(f"model: {cfg}; threads={torch.get_num_threads()}; rss after build {base:.2f} GB", flush=True)

    with torch.inference_mode():
        t0 = time.perf_counter()
        ov, qk = ov_circuit(model, 0), qk_circuit(model, 0)
        positivity = eigen_positivity(ov)  # [heads]
        t_eig = time.perf_counter() - t0
        print(f"factors of all OV and QK circuits, eigen-positivity of the OV circuits: {t_eig:.2f} s", flush=True)
        for h in range(args.heads or cfg.n_heads):
            th = time.perf_counter()
            vals, out, src, top1, top5 = scan_ov_circuit(ov[h], k=args.k, chunk_rows=args.chunk_rows,
                                                         chunk_cols=args.chunk_cols)
            qvals, dst, qsrc = topk_circuit_entries(qk[h], args.k, chunk_rows=args.chunk_rows,
                                                         chunk_cols=args.chunk_cols)
            print(f"head {h:2d}: eig+ {float(positivity[h]):+.3f}  copy top1 {float(top1):.4f} top5 {float(top5):.4f}"
                  f"  OV max {float(vals[0]):.3e} at (out {int(out[0])}, src {int(src[0])})"
                  f"  QK max {float(qvals[0]):.3e} at (dst {int(dst[0])}, src {int(qsrc[0])})"
                  f"  {time.perf_counter() - th:.2f} s", flush=True)
        seconds = time.perf_counter() - t0
        sync(device)
        peak = max(0.0, peak_gb(device) - base)
        flops = 2 * 2 * (args.heads or cfg.n_heads) * cfg.d_vocab ** 2 * cfg.d_head
        print(f"{flops / 1e12:.2f} TFLOP of circuit entries in {seconds:.1f} s = {flops / seconds / 1e9:.0f} GFLOP/s",
              flush=True)
        if not args.no_dump:
            heads = slice(0, args.heads or cfg.n_heads)
            t1 = time.perf_counter()
            dump = token_dump(ov[heads], qk[heads], torch.arange(cfg.d_vocab, device=device), k=5)
            print(f"per-token dump (top-5 OV outputs, QK sources, QK destinations of all {cfg.d_vocab} tokens in "
                  f"{dump['ov_out'].shape[0]} heads): {time.perf_counter() - t1:.1f} s, peak "
                  f"{max(0.0, peak_gb(device) - base):.2f} GB", flush=True)
    print(f"seconds={seconds:.2f} peak_gb={peak:.2f}")


if __name__ == "__main__":
    main()
