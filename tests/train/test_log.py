"""The training log: the first evaluation with both halves of the induction circuit."""

import pytest

from circuits.train.log import first_induction


def eval_row(step: int, prev: list[float], prefix: list[list[float]], val: float = 4.0) -> dict:
    return {"step": step, "tokens": step * 1000, "val_loss": val, "prev_token": [prev, [0.0] * len(prev)],
            "prefix_matching": prefix, "prev_token_best_l0": max(prev), "prefix_matching_best_last": max(prefix[-1])}


def two_layer_log(prev_at: int | None, prefix_at: int | None, steps=range(100, 1100, 100)) -> list[dict]:
    """Eval rows whose layer-0 previous-token score passes 0.5 from ``prev_at`` and layer-1 prefix
    matching passes 0.4 from ``prefix_at`` (None: never), with train-only rows between."""
    rows = []
    for s in steps:
        rows.append({"step": s - 50, "tokens": (s - 50) * 1000, "train_loss": 5.0})
        prev = [0.1, 0.9 if prev_at is not None and s >= prev_at else 0.3]
        late = [0.05, 0.6 if prefix_at is not None and s >= prefix_at else 0.2]
        rows.append(eval_row(s, prev, [[0.7, 0.1], late], val=5.0 - s / 1000))
    return rows


@pytest.mark.parametrize("prev_at, prefix_at, expected", [
    (300, 600, 600), (700, 200, 700), (400, 400, 400), (None, 300, None), (300, None, None)])
def test_first_induction_needs_both_heads_at_one_evaluation(prev_at, prefix_at, expected):
    found = first_induction(two_layer_log(prev_at, prefix_at))
    assert (found["step"] if found else None) == expected


def test_first_induction_ignores_layer_zero_prefix_matching_and_one_layer_logs():
    # a high prefix-matching score in layer 0 is not an induction head, and a 1-layer model has none
    assert first_induction(two_layer_log(100, None)) is None
    one_layer = [eval_row(100, [0.9], [[0.9]])]
    assert first_induction(one_layer) is None
