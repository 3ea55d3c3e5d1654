"""The JSONL training log: one row per log step, eval rows carry validation loss and scores."""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def first_induction(rows: list[dict], prev_threshold: float = 0.5, prefix_threshold: float = 0.4) -> dict | None:
    """The first eval row with a layer-0 head of previous-token score >= ``prev_threshold`` and a
    head in the last layer (layer >= 1) with prefix-matching score >= ``prefix_threshold``."""
    for row in eval_rows(rows):
        prev, prefix = row.get("prev_token"), row.get("prefix_matching")
        if prev is None or len(prefix) < 2:
            continue
        if max(prev[0]) >= prev_threshold and max(prefix[-1]) >= prefix_threshold:
            return row
    return None
