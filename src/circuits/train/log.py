"""The JSONL training log: one row per log step; evaluation rows add the validation loss, the loss by position,
the in-context-learning score and every head's previous-token and prefix-matching scores."""

from __future__ import annotations

import json
import os
from pathlib import Path

from circuits.metrics.heads import has_induction


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
