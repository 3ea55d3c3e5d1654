"""The induction chapter's shared results and findings rows: on tiny random models with synthetic training logs
(the whole pipeline runs, every row is well formed, a knock-out is the model with those heads' W_O zeroed), and
on hand-made results (each verdict follows its stated rule)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits.findings import icl_knockouts, induction
from circuits.metrics.losses import per_token_loss
from circuits.metrics.olsson import ICL_WINDOWS, in_context_learning_score

from ..analysis.models import make_model
from . import books
from ..train.test_phase_change import log_rows

VERDICTS = {"reproduced", "partly", "not reproduced"}
NOTEBOOK = Path(__file__).parents[2] / "book" / "06_induction.ipynb"


def synthetic_logs() -> dict[int, list[dict]]:
    two = log_rows([0.02, 0.03, 0.1, 0.3, 0.45, 0.6, 0.6, 0.6], by_position=True)
    for row, icl in zip([r for r in two if "val_loss" in r], [0.0, -0.02, -0.03, -0.1, -0.25, -0.3, -0.32, -0.33]):
        row["icl_score"] = icl
    one = log_rows([0.01] * 4, layers=1, by_position=True)
    zero = [{k: v for k, v in row.items() if k not in ("prev_token", "prefix_matching")}
            for row in log_rows([0.0] * 2, layers=1)]
    return {0: zero, 1: one, 2: two}


@pytest.fixture
def tiny_book(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    book = books.tiny_book(tiny_cfg, "test-induction", layers=(0, 1, 2))
    logs = synthetic_logs()
    book.log = lambda n: logs[n]
    return book


def test_results_and_rows_on_tiny_models(tiny_book):
    r = induction.results(tiny_book)
    H = tiny_book.preset.n_heads
    assert np.asarray(r["prefix_2"]).shape == (2, H) and np.asarray(r["copying_1"]).shape == (1, H)
    assert np.all(np.abs(np.asarray(r["copying_2"])) <= 1 + 1e-6)
    assert len(r["repeat_loss_2"]) == 2 * r["repeat_len"] and len(r["position_loss_1"]) == tiny_book.preset.n_ctx
    sets = {(k["set"], k["mode"]) for k in r["knockouts"]}
    assert {("none", "none"), ("induction", "zero"), ("induction", "mean"), ("control", "zero"),
            ("previous", "zero"), ("previous", "mean"), ("control 0", "zero")} <= sets
    assert len(sets) == 7 + icl_knockouts.N_RANDOM_CONTROLS
    assert induction.results(tiny_book)["icl_2"] == r["icl_2"]  # read back from the cache
    assert r["knockouts"][0]["icl"] == pytest.approx(r["icl_2"], abs=1e-4)  # the same windows as the ICL score
    for n in (1, 2):  # the final model on the training log's own windows
        loss = per_token_loss(tiny_book.model(n), induction.log_windows(tiny_book, n))
        assert r[f"log_icl_{n}"] == pytest.approx(in_context_learning_score(loss), abs=1e-4)
    assert r["log_windows"] == len(induction.log_windows(tiny_book, 2))
    assert 0 <= r["repeat_rank_repeat"] < tiny_book.preset.d_vocab and 0 <= r["repeat_heads_top"] <= 1
    assert np.asarray(r["own_top_2"]).shape == (2, tiny_book.preset.n_heads)
    rows = induction.findings_rows(tiny_book)
    assert len(rows) == 6
    for row in rows:
        assert set(row) == {"claim", "paper", "ours", "verdict", "rule", "section"}
        assert row["verdict"] in VERDICTS and row["section"].startswith("06_induction#") and row["rule"]


def test_a_zero_knockout_is_the_model_with_those_heads_w_o_zeroed(tiny_book):
    r = induction.results(tiny_book)
    windows = tiny_book.windows(ICL_WINDOWS)
    positions = r["knockout_positions"]
    assert positions == icl_knockouts.knockout_positions(tiny_book.preset.n_ctx)
    for k in r["knockouts"]:
        if k["mode"] != "zero":
            continue
        zeroed = make_model(tiny_book.model(2).cfg, init_std=0.1)
        for l, h in k["heads"]:
            zeroed.blocks[l].attn.W_O[h] = 0
        loss = per_token_loss(zeroed, windows)
        assert k["icl"] == pytest.approx(in_context_learning_score(loss), abs=1e-4)
        assert k["mean"] == pytest.approx(float(loss[:, positions].mean()), abs=1e-4)
        assert k["by_position"] == pytest.approx(loss[:, positions].mean(0).tolist(), abs=1e-4)


def test_the_icl_score_of_the_mean_loss_by_position_is_the_score():
    loss = torch.rand(16, 40)
    assert in_context_learning_score(loss.mean(0)[None]) == pytest.approx(in_context_learning_score(loss), abs=1e-6)


def test_repeat_halves_skip_the_unpredictable_first_token_of_the_repeat():
    loss = np.array([9.0, 9, 9, 9, 7, 1, 1, 1])  # L = 4: positions 0-3 the first copy, 4 its first repeat token
    assert induction.repeat_halves(loss) == (9.0, 1.0)


def made_up(removed_ind=0.8, removed_control=0.1, removed_random=0.1, removed_prev=0.7, removed_control0=0.1,
            icl1=-0.05, icl2=-0.4, induction_heads=(1, 3), one_layer_copying=-0.6):
    """Results as ``induction.results`` returns them (the parts the rows read), with the wanted properties."""
    H, n_ctx, intact = 6, 32, -0.4
    prefix = np.zeros((2, H))
    prefix[1, list(induction_heads)] = 0.7
    copying = np.full((2, H), -0.5)
    copying[1, list(induction_heads)] = 0.9
    positivity = np.zeros((2, H))
    prev = np.zeros((2, H))
    prev[0, 2] = 0.9
    ko = lambda name, mode, removed: {"set": name, "mode": mode, "heads": [], "icl": intact * (1 - removed),
                                      "icl_se": 0.01, "change": -intact * removed, "change_se": 0.01, "mean": 4.0,
                                      "by_position": [4.0] * n_ctx}
    knockouts = [ko("none", "none", 0.0), ko("induction", "zero", removed_ind), ko("induction", "mean", removed_ind),
                 ko("control", "zero", removed_control), ko("previous", "zero", removed_prev),
                 ko("previous", "mean", removed_prev), ko("control 0", "zero", removed_control0)]
    knockouts += [ko(f"random {i + 1}", "zero", removed_random) for i in range(icl_knockouts.N_RANDOM_CONTROLS)]
    return {"prefix_2": prefix, "copying_2": copying, "prev_2": prev, "icl_1": icl1, "icl_2": icl2, "icl_se_1": 0.01,
            "copying_1": np.full((1, H), one_layer_copying), "positivity_2": positivity, "sample_len": 25,
            "icl_se_2": 0.01, "icl_windows": 1024, "knockouts": knockouts, "knockout_windows": 256, "n_ctx": n_ctx,
            "knockout_positions": list(range(n_ctx))}


def phase(found=True, abrupt=True, share=0.8, excess=-0.01, rise=-0.02):
    if not found:
        return {"window": None, "icl_final": {1: -0.1, 2: -0.4}, "icl_last": {0: 0.1, 1: -0.1, 2: -0.4}}
    return {"window": {"start_tokens": 8e6, "end_tokens": 9.6e6}, "abrupt": abrupt, "drop_share": share,
            "prefix_start": 0.1, "prefix_end": 0.45, "icl_before": -0.1, "icl_after": -0.3,
            "icl_final": {1: -0.1, 2: -0.4}, "icl_last": {0: 0.1, 1: -0.1, 2: -0.4}, "bump": {"excess": excess, "rise": rise, "tokens": 9e6, "line": []},
            "fall_per_doubling": {"before": 0.1, "during": 0.2, "after": 0.1}}


ROWS = ("evaluators", "icl", "phase change", "bump", "knock-outs", "previous-token head")


def verdicts(monkeypatch, results, summary) -> dict[str, str]:
    """The verdict of each row (in the order of ``ROWS``) for hand-made results and phase-change summary."""
    monkeypatch.setattr(induction, "results", lambda book: results)
    monkeypatch.setattr(induction, "phase_change_summary", lambda book: summary)
    rows = induction.findings_rows(None)
    assert len(rows) == len(ROWS)
    return {name: row["verdict"] for name, row in zip(ROWS, rows)}


def test_verdicts_follow_the_stated_rules(monkeypatch):
    good = verdicts(monkeypatch, made_up(), phase())
    assert good == {**{name: "reproduced" for name in ROWS}, "bump": "not reproduced"}  # a smooth loss: no bump
    bump = lambda **kw: verdicts(monkeypatch, made_up(), phase(**kw))["bump"]
    assert bump(excess=0.01) == "reproduced" and bump(rise=0.001) == "reproduced" and bump(excess=0.004) != "reproduced"
    ko = lambda **kw: verdicts(monkeypatch, made_up(**kw), phase())["knock-outs"]
    assert ko() == "reproduced"
    assert ko(removed_random=0.4) == "partly"  # a random control removes more than a quarter
    assert ko(removed_ind=0.3, removed_control=0.1) == "partly"
    assert ko(removed_ind=0.1, removed_control=0.2) == "not reproduced"
    assert ko(induction_heads=()) == "not reproduced"
    prev = lambda **kw: verdicts(monkeypatch, made_up(**kw), phase())["previous-token head"]
    assert prev(removed_control0=0.3) == "partly" and prev(removed_prev=0.05) == "not reproduced"
    pc = lambda **kw: verdicts(monkeypatch, made_up(), phase(**kw))["phase change"]
    assert pc() == "reproduced" and pc(abrupt=False) == "partly" and pc(share=0.2) == "partly"
    assert pc(abrupt=False, share=0.2) == "not reproduced" and pc(found=False) == "not reproduced"
    assert verdicts(monkeypatch, made_up(), phase(found=False))["bump"] == "not reproduced"
    icl = lambda **kw: verdicts(monkeypatch, made_up(**kw), phase())["icl"]
    assert icl() == "reproduced" and icl(icl1=-0.2) == "partly" and icl(icl1=-0.35, icl2=-0.4) == "not reproduced"
    heads = lambda **kw: verdicts(monkeypatch, made_up(**kw), phase())["evaluators"]
    assert heads() == "reproduced" and heads(induction_heads=()) == "not reproduced"
    assert heads(one_layer_copying=0.95) == "partly"  # a one-layer head copies more than the induction heads


def test_every_section_label_is_in_the_chapter(monkeypatch):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    labels = set(re.findall(r"^\(([\w-]+)\)=$", "\n".join("".join(c["source"]) for c in cells), re.M))
    monkeypatch.setattr(induction, "results", lambda book: made_up())
    monkeypatch.setattr(induction, "phase_change_summary", lambda book: phase())
    for row in induction.findings_rows(None):
        assert row["section"].split("#")[1] in labels
