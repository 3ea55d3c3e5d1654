"""The phase change, the loss bump and the loss by position, read from synthetic training logs."""

import math

import pytest

from circuits.train.log import loss_bump, phase_change, position_loss_grid


def log_rows(best_last: list[float], val: list[float] | None = None, layers: int = 2, step_tokens: int = 1000,
             by_position: bool = False) -> list[dict]:
    """Eval rows (with a train-only row before each) whose last layer's best prefix matching follows
    ``best_last`` and whose validation loss follows ``val`` (default: a smooth power law)."""
    rows = []
    for i, best in enumerate(best_last, 1):
        tokens = i * step_tokens
        prefix = [[0.9, 0.0]] * (layers - 1) + [[0.01, best]]  # a high layer-0 score never counts
        rows.append({"step": 10 * i - 5, "tokens": tokens - step_tokens // 2, "train_loss": 5.0})
        row = {"step": 10 * i, "tokens": tokens, "val_loss": val[i - 1] if val else 3 + 2 * i ** -0.5,
               "icl_score": 0.0, "prev_token": [[0.9, 0.1]] * layers, "prefix_matching": prefix}
        if by_position:
            row.update(position_bins=[0, 1, 3, 8], loss_by_position=[6.0, 5.0 - i / 10, 4.0 - i / 10])
        rows.append(row)
    return rows


@pytest.mark.parametrize("best, start, end", [
    ([0.02, 0.03, 0.1, 0.3, 0.45, 0.6], 3, 5),   # below 0.2 until 3, first >= 0.4 at 5
    ([0.02, 0.41, 0.6], 1, 2),                     # a jump between two evaluations
    ([0.25, 0.3, 0.35, 0.5], 1, 4),               # never below the onset level: starts at the first evaluation
    ([0.1, 0.5, 0.1, 0.15, 0.6], 1, 2),           # the first crossing counts
    ([0.5, 0.6], 1, 1),                            # already there at the first evaluation
])
def test_phase_change_window_follows_the_rule(best, start, end):
    found = phase_change(log_rows(best))
    assert (found["start_tokens"], found["end_tokens"]) == (start * 1000, end * 1000)
    assert found["start"]["step"] == 10 * start and found["end"]["step"] == 10 * end
    assert (found["start_index"], found["end_index"]) == (start - 1, end - 1)


def test_no_phase_change_without_a_crossing_or_with_one_layer():
    assert phase_change(log_rows([0.01, 0.2, 0.39])) is None
    assert phase_change(log_rows([0.01, 0.9], layers=1)) is None  # layer 0 has no induction heads
    assert phase_change(log_rows([0.1, 0.5]), threshold=0.6) is None
    assert phase_change(log_rows([0.1, 0.35, 0.5]), onset=0.95)["start_tokens"] == 2000


def power_law(i: int) -> float:
    return 3 + 2 * i ** -0.5


def test_a_steady_or_faster_fall_has_no_bump_and_a_stall_has_one():
    best = [0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.5, 0.6, 0.6]  # the window: evaluations 5 to 7
    faster = [power_law(i) - (0.05 * (i - 5) if i > 5 else 0) for i in range(1, 10)]
    bump = loss_bump(log_rows(best, faster), 5000, 7000)
    assert bump["excess"] < 0 and bump["rise"] < 0 and bump["tokens"] in (6000, 7000, 8000)
    stalled = [power_law(i) for i in range(1, 10)]
    stalled[5] = stalled[4] + 0.01  # evaluation 6 rises above evaluation 5
    bump = loss_bump(log_rows(best, stalled), 5000, 7000)
    assert bump["rise"] == pytest.approx(0.01) and bump["tokens"] == 6000
    # the looped definition: the line through evaluations 2 and 5 in log tokens, extended to evaluation 6
    trend = power_law(5) + (power_law(5) - power_law(2)) * math.log(6 / 5) / math.log(5 / 2)
    assert bump["excess"] == pytest.approx(stalled[5] - trend)
    assert bump["line"][0] == [2000, power_law(2)] and bump["line"][1][0] == 8000


def test_no_bump_measure_without_evaluations_on_both_sides():
    rows = log_rows([0.0, 0.0, 0.0, 0.0, 0.5, 0.6])
    assert loss_bump(rows, 2000, 3000) is None  # two evaluations before the window, three needed
    assert loss_bump(rows, 5000, 6000) is None  # none after it
    assert loss_bump(rows, 4000, 5000)["tokens"] in (5000, 6000)
    assert loss_bump(rows, 3000, 4000, lookback=2)["line"][0][0] == 1000


def test_position_loss_grid_collects_the_logged_bins():
    rows = log_rows([0.0, 0.5, 0.6], by_position=True)
    grid = position_loss_grid(rows)
    assert grid["tokens"] == [1000, 2000, 3000] and grid["edges"] == [0, 1, 3, 8]
    assert grid["loss"][1] == [6.0, 4.8, 3.8]
    assert position_loss_grid(log_rows([0.0, 0.5])) is None  # an old log without the field
