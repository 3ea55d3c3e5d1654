"""The JSONL training log: one row per log step; evaluation rows add the validation loss, the loss by position,
the in-context-learning score and every head's previous-token and prefix-matching scores. Read from the rows:
the first evaluation with both halves of the induction circuit, the phase change's window, the loss's bump
around it, and the loss by position over training."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from circuits.metrics.heads import INDUCTION_THRESHOLD, has_induction


def read_log(path: str | Path) -> list[dict]:
    """All rows of a ``log.jsonl``, in order; a missing file gives a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n} is not valid JSON: {err}") from err
    return rows


def eval_rows(rows: list[dict]) -> list[dict]:
    """The rows that carry a validation evaluation."""
    return [r for r in rows if "val_loss" in r]


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append rows and flush them to disk (called just before each checkpoint)."""
    if not rows:
        return
    with open(path, "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())


def truncate_log(path: str | Path, step: int) -> None:
    """Keep only rows up to ``step`` (the checkpoint a run resumes from), atomically."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_log(path) if r["step"] <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    os.replace(tmp, path)


def first_induction(rows: list[dict]) -> dict | None:
    """The first eval row at which the model has both a previous-token head in layer 0 and an induction head
    in its last layer (``metrics.heads.has_induction``); None if none has."""
    for row in eval_rows(rows):
        if row.get("prev_token") is not None and has_induction(row["prev_token"], row["prefix_matching"]):
            return row
    return None


# Olsson et al.'s phase change, read from the evaluation rows: the window of training in which the best
# prefix-matching score of the last layer climbs from well below the induction threshold to above it.
PHASE_ONSET = 0.5  # the window starts at the last evaluation below PHASE_ONSET x INDUCTION_THRESHOLD


def phase_change(rows: list[dict], threshold: float = INDUCTION_THRESHOLD, onset: float = PHASE_ONSET
                 ) -> dict | None:
    """The window of training in which the model's first induction head forms, from its evaluation rows.

    It ends at the first evaluation where the best prefix-matching score of the last layer reaches
    ``threshold`` (an induction head, ``metrics.heads``) and starts at the last evaluation before it where that
    score is below ``onset * threshold`` (or at the first evaluation, if none is). Returns ``start`` and
    ``end`` (the two rows), their ``start_tokens`` and ``end_tokens`` and their indices among the evaluation
    rows (``start_index``, ``end_index``); None for a one-layer model (no induction head can form there) or
    when the threshold is never reached.
    """
    ev = [r for r in eval_rows(rows) if r.get("prefix_matching") is not None and len(r["prefix_matching"]) >= 2]
    best = [max(r["prefix_matching"][-1]) for r in ev]
    end = next((i for i, b in enumerate(best) if b >= threshold), None)
    if end is None:
        return None
    start = max((i for i in range(end) if best[i] < onset * threshold), default=0)
    return {"start": ev[start], "end": ev[end], "start_tokens": ev[start]["tokens"],
            "end_tokens": ev[end]["tokens"], "start_index": start, "end_index": end}


def loss_bump(rows: list[dict], start_tokens: float, end_tokens: float, lookback: int = 3) -> dict | None:
    """How far the validation loss rises above its own earlier trend during a window of training (the loss
    "bump" Olsson et al. see at the phase change).

    The trend is the straight line, in log(tokens), through the evaluation ``lookback`` evaluations before the
    window's first and that first evaluation, extended to the first evaluation after the window; a bump or a
    plateau lifts the loss above it, a faster fall keeps it below. Returns ``excess`` (the largest val_loss
    minus trend over the evaluations after the window's first, up to the first after it, in nats: > 0 means
    a bump or a plateau), ``tokens`` (where it is largest), ``rise`` (the largest increase of val_loss between
    consecutive evaluations from the one before the window to the one after it: > 0 means the loss went up)
    and ``line`` (the trend's two ends, [[tokens, loss], [tokens, loss]]); None when the window lacks
    ``lookback`` evaluations before it or one after it.
    """
    ev = eval_rows(rows)
    first = next((i for i, r in enumerate(ev) if r["tokens"] >= start_tokens), None)
    after = next((i for i, r in enumerate(ev) if r["tokens"] > end_tokens), None)
    if first is None or after is None or first < lookback:
        return None
    a, s = ev[first - lookback], ev[first]
    slope = (s["val_loss"] - a["val_loss"]) / (math.log(s["tokens"]) - math.log(a["tokens"]))
    trend = lambda t: s["val_loss"] + slope * (math.log(t) - math.log(s["tokens"]))
    excess = [(r["val_loss"] - trend(r["tokens"]), r["tokens"]) for r in ev[first + 1: after + 1]]
    span = ev[first - 1: after + 1]
    rise = max(y["val_loss"] - x["val_loss"] for x, y in zip(span, span[1:]))
    top = max(excess)
    return {"excess": top[0], "tokens": top[1], "rise": rise,
            "line": [[a["tokens"], a["val_loss"]], [ev[after]["tokens"], trend(ev[after]["tokens"])]]}


def position_loss_grid(rows: list[dict]) -> dict | None:
    """The loss by position in the context over training: ``tokens`` [n_eval] (training tokens of each
    evaluation that logged it), ``edges`` [n_bins + 1] (the position bins, ``metrics.losses.position_bins``)
    and ``loss`` [n_eval][n_bins] (mean loss in each bin); None when no evaluation logged it."""
    ev = [r for r in eval_rows(rows) if r.get("loss_by_position") is not None]
    if not ev:
        return None
    return {"tokens": [r["tokens"] for r in ev], "edges": ev[-1]["position_bins"],
            "loss": [r["loss_by_position"] for r in ev]}
