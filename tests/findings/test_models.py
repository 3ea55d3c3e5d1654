"""The corpus-and-models chapter: equal-token comparisons read from training logs (interpolated in log tokens),
its findings row following its stated rule, and the departures table."""

import math

import pytest

from circuits.findings import models
from circuits.findings.table import check_row

from . import books


def log(points: list[tuple[int, float]], icl: float = 0.0) -> list[dict]:
    """A training log with one evaluation row per (tokens, val_loss) and a plain row between."""
    rows = []
    for step, (tokens, loss) in enumerate(points):
        rows.append({"step": 2 * step, "tokens": tokens - 1, "train_loss": loss + 0.1})
        rows.append({"step": 2 * step + 1, "tokens": tokens, "train_loss": loss, "val_loss": loss, "icl_score": icl})
    return rows


def test_at_tokens_is_exact_on_an_evaluation_and_linear_in_log_tokens_between():
    rows = log([(100, 5.0), (400, 3.0)])
    assert models._at_tokens(rows, 100, "val_loss") == 5.0
    assert models._at_tokens(rows, 200, "val_loss") == pytest.approx(4.0)  # halfway in log(tokens)
    with pytest.raises(ValueError, match="outside the log"):
        models._at_tokens(rows, 800, "val_loss")


class LogBook:
    def __init__(self, logs):
        self.logs = logs

    def log(self, n):
        return self.logs[n]


LOGS = {0: log([(100, 6.0), (400, 5.0)]), 1: log([(100, 5.5), (400, 4.5), (1600, 4.0)], icl=-0.1),
        2: log([(100, 5.6), (400, 4.6), (1600, 3.9), (6400, 3.5)], icl=-0.3)}


def test_equal_token_losses_compare_each_model_with_the_next_at_the_end_of_its_run():
    rows = models.equal_token_losses(LogBook(LOGS))
    assert [(r["shallow"], r["deep"], r["tokens"]) for r in rows] == [(0, 1, 400), (1, 2, 1600)]
    assert (rows[0]["shallow_loss"], rows[0]["deep_loss"]) == (5.0, 4.5)
    assert (rows[1]["shallow_loss"], rows[1]["deep_loss"], rows[1]["deep_icl"]) == (4.0, 3.9, -0.3)


def test_crossings_lists_where_the_deeper_model_is_behind():
    assert models.crossings(LOGS[1], LOGS[2]) == [100, 400]


@pytest.mark.parametrize("held, deep_behind, verdict", [((3.0, 4.0, 5.0), False, "reproduced"),
                                                       ((3.0, 4.0, 5.0), True, "partly"),
                                                       ((4.5, 4.0, 5.0), False, "partly"),
                                                       ((4.5, 4.0, 5.0), True, "not reproduced")])
def test_findings_row_follows_its_rule(monkeypatch, held, deep_behind, verdict):
    """held: the held-out losses of 2L, 1L, 0L."""
    logs = dict(LOGS)
    if deep_behind:
        logs[2] = log([(100, 5.6), (400, 4.6), (1600, 4.1), (6400, 3.5)])
    monkeypatch.setattr(models, "validation_losses", lambda book, n: {"mean": held[::-1][n]})
    (row,) = models.findings_rows(LogBook(logs))
    check_row(row)
    assert row["verdict"] == verdict
    assert f"{held[0]:.3f}" in row["ours"] and "at 0 M tokens 1L 4.500 against 0L 5.000" in row["ours"]


def test_departures_have_both_sides_of_every_line(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    book = books.tiny_book(tiny_cfg, "test-models")
    rows = models.departures(book)
    assert [r[""] for r in rows] == list(models.PAPER_MODEL)
    assert all(r["paper"] and r["ours"] for r in rows)
    by = {r[""]: r["ours"] for r in rows}
    assert f"{tiny_cfg.n_ctx:,} tokens" == by["context"]


def test_boundary_fraction_counts_windows_holding_an_end_of_text(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    book = books.tiny_book(tiny_cfg, "test-models")
    windows = book.windows(8)
    expected = sum(bool((w[1:] == book.bos).any()) for w in windows) / 8
    assert models.boundary_fraction(book, 8) == pytest.approx(expected)
    assert not math.isnan(expected)
