"""Seed sweeps (benchmarks/HISTORY.md, trials 19-20): many runs of one preset, each reduced to its evaluation
curve, and how often (and how soon) they grew induction heads."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from .log import eval_rows, first_induction, read_log

# A run folder is named h<n_heads>[x<d_head>][c]-s<seed> (d_head 32 unless named; c: compiled loss chain).
SWEEP_NAME = re.compile(r"h(\d+)(?:x(\d+))?(c?)-s(\d+)$")
# step 1,600 of the cpu preset: where the 8-head seed-0 run of trial 13 first had both heads
EARLY_TOKENS = 13_107_200


def compact_run(name: str, rows: list[dict]) -> dict:
    """One sweep run: its settings (from ``name``), first induction and curve [[tokens, val, prev, prefix]]."""
    match = SWEEP_NAME.match(name)
    if match is None:
        raise ValueError(f"sweep run {name!r} is not named h<heads>[x<d_head>][c]-s<seed>")
    found = first_induction(rows)
    return {"run": name, "n_heads": int(match[1]), "d_head": int(match[2] or 32), "compiled_loss": bool(match[3]),
            "seed": int(match[4]), "induction_tokens": found["tokens"] if found else None,
            "curve": [[r["tokens"], round(r["val_loss"], 4), round(r["prev_token_best_l0"], 3),
                       round(r["prefix_matching_best_last"], 3)] for r in eval_rows(rows)]}


def read_sweep(source: str | Path) -> list[dict]:
    """The runs of a sweep: from a folder of run folders (each with a log.jsonl) or a compact .jsonl."""
    source = Path(source)
    if source.is_dir():
        logs = sorted(source.glob("*/log.jsonl"))
        if not logs:
            raise FileNotFoundError(f"no */log.jsonl under {source}")
        return [compact_run(log.parent.name, read_log(log)) for log in logs]
    return read_log(source)


def sweep_label(run: dict) -> str:
    """``h12``, ``h12c``, ``h16x16c``: heads, d_head where not 32, c for the compiled loss chain."""
    d_head = f"x{run['d_head']}" if run["d_head"] != 32 else ""
    return f"h{run['n_heads']}{d_head}{'c' if run['compiled_loss'] else ''}"


def _by_setting(runs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(sweep_label(r), []).append(r)
    return dict(sorted(groups.items()))


def sweep_summary(runs: list[dict], by_tokens: float) -> list[dict]:
    """Per setting: runs, how many reached both induction thresholds at all and by ``by_tokens``,
    the median tokens to get there (of those that did) and the median final validation loss."""
    out = []
    for label, group in _by_setting(runs).items():
        hit = [r["induction_tokens"] for r in group if r["induction_tokens"] is not None]
        out.append({"setting": label, "n_heads": group[0]["n_heads"], "d_head": group[0]["d_head"],
                    "compiled_loss": group[0]["compiled_loss"], "runs": len(group), "induced": len(hit),
                    "induced_by": sum(t <= by_tokens for t in hit),
                    "median_tokens": statistics.median(hit) if hit else None,
                    "median_final_val": statistics.median(r["curve"][-1][1] for r in group)})
    return out


def induction_fraction(runs: list[dict], tokens: list[int]) -> dict[str, list[float]]:
    """Per setting, the share of its runs that had reached both thresholds by each of ``tokens``."""
    out = {}
    for label, group in _by_setting(runs).items():
        hit = [r["induction_tokens"] for r in group]
        out[label] = [sum(h is not None and h <= t for h in hit) / len(hit) for t in tokens]
    return out
