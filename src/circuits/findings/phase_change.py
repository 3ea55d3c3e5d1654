"""The phase change (Olsson et al. 2022), read from the training logs of the book's models, and the committed seed
sweep of the two-layer recipe. Nothing here runs a model: every number comes from what training logged.

The rules that the findings table applies (``findings.induction.findings_rows``) are stated here beside the
numbers they read: a phase change is *abrupt* when it ends within ``ABRUPT_RATIO`` times the tokens at which it
starts, and the ICL score drops *at the same time* when at least ``DROP_SHARE`` of its later fall happens across
the window.
"""

from __future__ import annotations

import math

import numpy as np

from circuits.config import get_preset
from circuits.paths import project_root
from circuits.train.log import eval_rows, first_induction, loss_bump, phase_change, position_loss_grid
from circuits.train.sweep import EARLY_TOKENS, induction_fraction, read_sweep, sweep_label, sweep_summary

from .context import Book

LAYERS = (1, 2)  # the models whose logs hold head scores
SWEEP_FILE = ("benchmarks", "logs", "h200_seed_sweep.jsonl")  # 48 runs of the cpu preset's 2L model, many seeds
ABRUPT_RATIO = 1.5  # a phase change is abrupt when it ends within 1.5x the tokens at which it starts
DROP_SHARE = 0.5  # the ICL score drops "at the same time" when half its later fall happens across the window
AROUND = 3  # evaluations averaged on each side of the window for the ICL score before and after it


def phase_change_summary(book: Book) -> dict:
    """The phase change read from the 2L model's training log (``train.log.phase_change``), the loss around it
    (``train.log.loss_bump``) and the ICL score before and after it, with the 1L and 0L logs' scores for
    contrast (the 0L model, a bigram table, cannot use the context: its logged score is the text's own)."""
    logs = {n: book.log(n) for n in (0, *LAYERS)}
    window = phase_change(logs[2])
    ev = {n: [r for r in eval_rows(logs[n]) if "icl_score" in r] for n in logs}
    out = {"window": window, "logs": logs, "ev": ev, "first_induction": first_induction(logs[2]),
           "grid": {n: position_loss_grid(logs[n]) for n in LAYERS}, "evaluations": {n: len(ev[n]) for n in LAYERS},
           "best_prefix_1": max((max(r["prefix_matching"][-1]) for r in ev[1]), default=float("nan")),
           "prefix_final": float(max(ev[2][-1]["prefix_matching"][-1])) if ev[2] else float("nan"),  # last layer
           "icl_last": {n: float(ev[n][-1]["icl_score"]) if ev[n] else float("nan") for n in logs},
           "icl_final": {n: float(np.mean([r["icl_score"] for r in ev[n][-AROUND:]])) if ev[n] else float("nan")
                         for n in logs}}
    if window is None:
        return out
    s, e = window["start_tokens"], window["end_tokens"]
    before = [r["icl_score"] for r in ev[2] if r["tokens"] <= s][-AROUND:]
    after = [r["icl_score"] for r in ev[2] if r["tokens"] >= e][:AROUND]
    icl_before, icl_after = float(np.mean(before)), float(np.mean(after))
    fall = icl_before - out["icl_final"][2]
    out.update(icl_before=icl_before, icl_after=icl_after,
               drop_share=(icl_before - icl_after) / fall if fall > 0 else float("nan"),
               abrupt=e <= ABRUPT_RATIO * s, bump=loss_bump(logs[2], s, e),
               prefix_start=max(window["start"]["prefix_matching"][-1]),
               prefix_end=max(window["end"]["prefix_matching"][-1]),
               prefix_share=_share(max(window["start"]["prefix_matching"][-1]),
                                   max(window["end"]["prefix_matching"][-1]), out["prefix_final"]),
               fall_per_doubling=_fall_per_doubling(ev[2], s, e))
    return out


def _share(start: float, end: float, final: float) -> float:
    """The part of a rise from ``start`` to ``final`` made between ``start`` and ``end`` (NaN if none)."""
    return (end - start) / (final - start) if final > start else float("nan")


def _fall_per_doubling(ev: list[dict], start: float, end: float) -> dict[str, float]:
    """How fast the validation loss falls (nats per doubling of training tokens) across the window and over
    the ``AROUND`` evaluations before and after it."""
    idx = [i for i, r in enumerate(ev) if start <= r["tokens"] <= end]
    a, b = idx[0], idx[-1]
    rate = lambda i, j: (ev[i]["val_loss"] - ev[j]["val_loss"]) / math.log2(ev[j]["tokens"] / ev[i]["tokens"]) \
        if j > i else float("nan")
    return {"before": rate(max(0, a - AROUND), a), "during": rate(a, b),
            "after": rate(b, min(len(ev) - 1, b + AROUND))}


def seed_summary() -> dict:
    """The committed seed sweep of the published two-layer recipe (the cpu preset's shape, data and schedule; only
    the seed changes), whatever preset this book is built with: its runs, the share of them with both halves of
    the induction circuit at each evaluation, and how many grew them, by when."""
    cpu = get_preset("cpu")
    label = sweep_label({"n_heads": cpu.n_heads, "d_head": cpu.d_head, "compiled_loss": False})
    runs = [run for run in read_sweep(project_root().joinpath(*SWEEP_FILE)) if sweep_label(run) == label]
    grid = sorted({point[0] for run in runs for point in run["curve"]})
    (summary,) = sweep_summary(runs, EARLY_TOKENS)
    return {"runs": runs, "grid": grid, "fraction": induction_fraction(runs, grid)[label], "summary": summary,
            "early_tokens": EARLY_TOKENS, "total_tokens": cpu.train_config(2).total_tokens}
