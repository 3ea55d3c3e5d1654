"""Seed sweep of the cpu preset: how often, and how early, a 2-layer model grows induction heads.

Runs are named ``h<n_heads>[x<d_head>][c]-s<seed>`` (d_head 32 unless named; ``c``: the compiled loss
chain), as ``scripts/device_seeds.sh`` makes them. Reads every run's ``log.jsonl`` under a folder, or a compact
file written earlier (``circuits.train.sweep.read_sweep``), and prints one line per run and one per setting: runs
with both induction thresholds within the run, and within ``--by`` tokens (default ``EARLY_TOKENS``, 13,107,200 = step 1,600,
where the 8-head seed-0 run of trial 13 had them).

    python benchmarks/seed_sweep.py runs/seeds --write benchmarks/logs/h200_seed_sweep.jsonl
    python benchmarks/seed_sweep.py benchmarks/logs/h200_seed_sweep.jsonl

Last line: one ``h<heads>[x<d_head>][c]=<induced>/<runs>`` per setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from circuits.train.sweep import EARLY_TOKENS, read_sweep, sweep_label, sweep_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="folder of run folders, or a compact .jsonl")
    ap.add_argument("--write", type=Path, default=None, help="write the compact .jsonl here")
    ap.add_argument("--by", type=float, default=EARLY_TOKENS, help="tokens for the 'early' count")
    args = ap.parse_args()
    runs = sorted(read_sweep(args.source), key=lambda r: (sweep_label(r), r["seed"]))
    if args.write:
        args.write.write_text("".join(json.dumps(r) + "\n" for r in runs))
    for r in runs:
        when = f"{r['induction_tokens'] / 1e6:.1f} M" if r["induction_tokens"] else "never"
        tokens, val, prev, prefix = r["curve"][-1]
        print(f"{sweep_label(r)} seed {r['seed']:2d}: induction {when:>6}; at {tokens / 1e6:.1f} M val {val:.3f} "
              f"prev {prev:.2f} prefix {prefix:.2f}")
    summary = sweep_summary(runs, args.by)
    for s in summary:
        median = f"{s['median_tokens'] / 1e6:.1f} M" if s["median_tokens"] else "-"
        print(f"{s['setting']}: {s['induced']}/{s['runs']} induced, {s['induced_by']}/{s['runs']} by "
              f"{args.by / 1e6:.1f} M; median tokens {median}, median final val {s['median_final_val']:.3f}")
    print(" ".join(f"{s['setting']}={s['induced']}/{s['runs']}" for s in summary))


if __name__ == "__main__":
    main()
