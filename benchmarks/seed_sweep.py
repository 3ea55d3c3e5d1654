"""Seed sweep of the cpu preset: how often, and how early, a 2-layer model grows induction heads.

Runs are named ``h<n_heads>[x<d_head>][c]-s<seed>`` (d_head 32 unless named; ``c``: the compiled loss
chain), as ``scripts/device_seeds.sh`` makes them. Reads every run's ``log.jsonl`` under a folder, or a compact file written earlier, and prints one
line per run and one per group (heads, compiled): runs with both induction thresholds within the run, and
within ``--by`` tokens (default 13,107,200 = step 1,600, where the published 8-head seed-0 run had them).

    python benchmarks/seed_sweep.py runs/seeds --write benchmarks/logs/h200_seed_sweep.jsonl
    python benchmarks/seed_sweep.py benchmarks/logs/h200_seed_sweep.jsonl

Last line: one ``h<heads>[x<d_head>][c]=<induced>/<runs>`` per group.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from circuits.trainlog import eval_rows, first_induction, read_log

NAME = re.compile(r"h(\d+)(?:x(\d+))?(c?)-s(\d+)$")  # heads, d_head (default 32), compiled, seed


def compact_run(name: str, rows: list[dict]) -> dict:
    """The run's settings (from its name), first induction and the per-evaluation curve."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"run folder {name!r} is not named h<heads>[x<d_head>][c]-s<seed>")
    found = first_induction(rows)
    return {"run": name, "n_heads": int(match[1]), "d_head": int(match[2] or 32), "compiled_loss": bool(match[3]),
            "seed": int(match[4]),
            "induction_tokens": found["tokens"] if found else None,
            "curve": [[r["tokens"], round(r["val_loss"], 4), round(r["prev_token_best_l0"], 3),
                       round(r["prefix_matching_best_last"], 3)] for r in eval_rows(rows)]}


def load_runs(source: Path) -> list[dict]:
    if source.is_dir():
        logs = sorted(source.glob("*/log.jsonl"))
        if not logs:
            raise FileNotFoundError(f"no */log.jsonl under {source}")
        return [compact_run(log.parent.name, read_log(log)) for log in logs]
    return [json.loads(line) for line in source.read_text().splitlines() if line.strip()]


def summarise(runs: list[dict], by_tokens: float) -> list[str]:
    lines, totals = [], []
    key = lambda r: (r["n_heads"], r.get("d_head", 32), r["compiled_loss"])  # noqa: E731
    for heads, d_head, compiled in sorted({key(r) for r in runs}):
        group = sorted((r for r in runs if key(r) == (heads, d_head, compiled)), key=lambda r: r["seed"])
        label = f"h{heads}{f'x{d_head}' if d_head != 32 else ''}{'c' if compiled else ''}"
        for r in group:
            when = f"{r['induction_tokens'] / 1e6:.1f} M" if r["induction_tokens"] else "never"
            tokens, val, prev, prefix = r["curve"][-1]
            lines.append(f"{label} seed {r['seed']:2d}: induction {when:>6}; at {tokens / 1e6:.1f} M val {val:.3f} "
                         f"prev {prev:.2f} prefix {prefix:.2f}")
        hit = [r["induction_tokens"] for r in group if r["induction_tokens"]]
        early = sum(t <= by_tokens for t in hit)
        vals = [r["curve"][-1][1] for r in group]
        lines.append(f"{label}: {len(hit)}/{len(group)} induced, {early}/{len(group)} by {by_tokens / 1e6:.1f} M; "
                     f"median tokens {statistics.median(hit) / 1e6 if hit else float('nan'):.1f} M, "
                     f"median final val {statistics.median(vals):.3f}")
        totals.append(f"{label}={len(hit)}/{len(group)}")
    return lines + [" ".join(totals)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="folder of run folders, or a compact .jsonl")
    ap.add_argument("--write", type=Path, default=None, help="write the compact .jsonl here")
    ap.add_argument("--by", type=float, default=13_107_200, help="tokens for the 'early' count")
    args = ap.parse_args()
    runs = load_runs(args.source)
    if args.write:
        args.write.write_text("".join(json.dumps(r) + "\n" for r in runs))
    print("\n".join(summarise(runs, args.by)))


if __name__ == "__main__":
    main()
