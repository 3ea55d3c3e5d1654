"""Does each hand-written kernel still earn its place? A training step (and a circuit scan) with the kernel and
with its plain-torch path, in turns, in one process on this CPU.

A kernel stays only where it saves at least 15 % of the step (or scan) on the CPUs it targets (issue 21; the
table of 2026-12-07 in benchmarks/HISTORY.md). Kept today: the C attention (``circuits.kernels.cpu_attention``,
AVX-512 and AMX) and the AMX group-maximum scan (``circuits.kernels.group_max``, only on CPUs with AMX).

    python benchmarks/kernel_value.py [--preset cpu] [--rounds 6] [--steps 3] [--set KEY=VALUE ...] [--no-scan]

Held to AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
CIRCUITS_CPU_BF16=0``, the fp32-only CPUs' class) no C kernel runs any more and both contenders are torch's.
Last line: ``attention_saves=<fraction> scan_saves=<fraction or n/a>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from circuits.analysis.circuits import ov_circuit, qk_circuit
from circuits.analysis.scan.tables import scan_ov_circuit, topk_circuit_entries
from circuits.config import ModelConfig, add_overrides_argument, preset_from_args
from circuits.kernels import cpu_attention, group_max
from circuits.kernels.memory import keep_freed_memory
from circuits.kernels.precision import bf16_is_fast
from circuits.model.transformer import AttnOnlyTransformer
from circuits.train.loop import training_step
from circuits.train.setup import effective_precision, make_optimizer


def in_turns(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each contender's call, ``rounds`` times in turns after one warm-up each."""
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return times


def step_contenders(preset, steps: int) -> dict:
    """A training step of the preset's 2-layer model with the C attention and with torch's attention."""
    mcfg, tcfg = preset.model_config(2), preset.train_config(2)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = AttnOnlyTransformer(mcfg)
    opt = make_optimizer(model, tcfg)
    batch = torch.randint(0, mcfg.d_vocab, (tcfg.batch_size, mcfg.n_ctx + 1), generator=torch.Generator().manual_seed(0))
    original = cpu_attention.available

    def run(kernel: bool):
        def call():
            cpu_attention.available = original if kernel else (lambda d_head: False)
            try:
                for _ in range(steps):
                    training_step(model, model, opt, batch, tcfg, device)
            finally:
                cpu_attention.available = original
        return call

    print(f"training step: 2L, d_model {mcfg.d_model}, {mcfg.n_heads} heads x {mcfg.d_head}, batch "
          f"{tcfg.batch_size} x {mcfg.n_ctx}, {effective_precision(device, tcfg.precision)}; C attention: "
          f"{cpu_attention.isa() if cpu_attention.available(mcfg.d_head) else 'does not run here'}", flush=True)
    return {"with the C attention": run(True), "torch's attention": run(False)}


def scan_contenders() -> dict | None:
    """The exact scan of two paper-size heads' OV and QK circuits with the AMX kernel and with torch's tiles."""
    if group_max.kind_for(torch.bfloat16, 64) is None:
        return None
    cfg = ModelConfig(n_layers=1, d_model=768, n_heads=2, d_head=64, n_ctx=64, d_vocab=50257)
    torch.manual_seed(0)
    model = AttnOnlyTransformer(cfg).requires_grad_(False)
    ov, qk, original = ov_circuit(model, 0), qk_circuit(model, 0), group_max.kind_for

    def run(kernel: bool):
        def call():
            group_max.kind_for = original if kernel else (lambda dtype, inner_dim: None)
            try:
                scan_ov_circuit(ov, 100)
                topk_circuit_entries(qk, 100)
            finally:
                group_max.kind_for = original
        return call

    return {"with the AMX scan kernel": run(True), "torch's tiles": run(False)}


def report(times: dict[str, list[float]], unit: float = 1.0) -> float:
    """Print each contender's median and range; return the share of time the first saves against the second."""
    medians = {name: statistics.median(t) / unit for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:28s} median {medians[name]:.3f} s  (range {min(t) / unit:.3f}-{max(t) / unit:.3f})")
    fast, slow = medians.values()
    return 1 - fast / slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed call")
    parser.add_argument("--no-scan", action="store_true", help="skip the circuit scan")
    add_overrides_argument(parser)
    args = parser.parse_args()
    preset = preset_from_args(parser, args)
    keep_freed_memory()
    step = report(in_turns(step_contenders(preset, args.steps), args.rounds), unit=args.steps)
    scan = "n/a"
    contenders = None if args.no_scan else scan_contenders()
    if contenders is None:
        print(f"circuit scan: {'skipped' if args.no_scan else 'no AMX here, so no scan kernel runs: torch tiles only'}"
              f" (bf16 matmuls fast here: {bf16_is_fast('cpu')})")
    else:
        print("circuit scan: OV (with copying rates) and QK top-100 of two heads at d_vocab 50,257")
        scan = f"{report(in_turns(contenders, max(1, args.rounds // 2))):.3f}"
    print(f"attention_saves={step:.3f} scan_saves={scan}")


if __name__ == "__main__":
    main()
