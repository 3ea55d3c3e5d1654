"""The two-layer chapter's shared results and findings rows: on a tiny random model (the whole pipeline runs and
every row is well formed), and on hand-made results (each verdict follows its stated rule)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from circuits.findings import two_layer
from circuits.findings.table import check_row

from . import books

VERDICTS = {"reproduced", "partly", "not reproduced"}
NOTEBOOK = Path(__file__).parents[2] / "book" / "05_two_layer.ipynb"


@pytest.fixture
def tiny_book(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    return books.tiny_book(tiny_cfg, "test-two-layer")


def test_results_and_rows_on_a_tiny_model(tiny_book):
    r = two_layer.results(tiny_book)
    H = tiny_book.preset.n_heads
    assert np.asarray(r["comp_K"]).shape == (H, H) and np.asarray(r["ablated"]).shape == (H, H)
    assert np.asarray(r["eig_qk"]).shape == (H, tiny_book.preset.d_head) and np.iscomplexobj(r["eig_qk"])
    assert sum(r["shares"]) == pytest.approx(1.0, abs=1e-6)
    assert np.asarray(r["profile"]).sum(1) == pytest.approx(np.ones(H), abs=1e-5)
    assert two_layer.results(tiny_book)["prev_head"] == r["prev_head"]  # read back from the cache
    assert np.asarray(r["const_share"]).shape == (2, H) and 0 <= r["focus"] < H
    assert np.all((np.asarray(r["ov_top1"]) >= 0) & (np.asarray(r["ov_top1"]) <= np.asarray(r["ov_top5"])))
    assert r["focus_ablated_mean"] == pytest.approx(r["focus_ablated_mean"])  # a number, not nan
    assert np.asarray(r["q_tv_zero"]).shape == (H,)
    assert 0 <= r["outlier"] < H and np.all((np.asarray(r["peak"]) > 0) & (np.asarray(r["peak"]) <= 1 + 1e-6))
    top = [tuple(p) for p in r["virtual_top"]]
    assert len(top) == len(r["virtual_top_all"]) == min(two_layer.N_VIRTUAL_SHOWN, H * H)
    if (r["focus"], r["v_partner"]) in top:  # the same removal on the same windows gives the same cost
        assert r["virtual_top_all"][top.index((r["focus"], r["v_partner"]))] == pytest.approx(r["v_effect"])
    rows = two_layer.findings_rows(tiny_book)
    assert len(rows) == 11
    for row in rows:
        assert check_row(row) is row
        assert set(row) == {"claim", "paper", "ours", "verdict", "rule", "section"}
        assert row["verdict"] in VERDICTS
        assert row["rule"].endswith(".") and "circuits." not in row["rule"]
        assert row["section"].startswith("05_two_layer#")


def test_every_section_label_is_in_the_chapter(tiny_book):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    labels = set(re.findall(r"^\(([\w-]+)\)=$", "\n".join("".join(c["source"]) for c in cells), re.M))
    for row in two_layer.findings_rows(tiny_book):
        assert row["section"].split("#")[1] in labels


def made_up(H=6, previous=(2,), induction=(1, 3), several=4, k_prev=(1, 3), k_several=(3,), q_several=(),
            ablated_to=0.02, qk=0.8, ov=0.9, marginal=(1.8, 5.2, 0.3), single=(0.01, 0.1), q_focus=(),
            top1=(0.3, 0.3)):
    """Results as ``two_layer.results`` returns them, with the wanted properties and everything else at chance."""
    base = 0.1
    comp = {k: np.full((H, H), base) for k in "QKV"}
    for h in k_prev:
        comp["K"][previous[0] if previous else 0, h] = 3 * base
    for h in k_several:
        comp["K"][several, h] = 2.5 * base
    for h in q_several:
        comp["Q"][several, h] = 2.5 * base
    focus = 0
    for h in q_focus:  # a layer-0 head whose Q-composition is the strongest pair of the figure
        comp["Q"][focus, h] = 3.5 * base
    ov_top1 = np.full(H, 0.01)
    ov_top1[list(induction)] = top1[:len(induction)]
    prefix = np.zeros((2, H))
    prefix[1, list(induction)] = 0.7
    ablated = np.tile(prefix[1], (H, 1))
    if previous:
        ablated[previous[0], list(induction)] = ablated_to  # a number, or one per induction head
    prev = np.full((2, H), 0.1)
    prev[0, list(previous)] = 0.9
    uniform = 8.0
    return {"n_heads": H, "prev_scores": prev, "prefix": prefix, "previous": list(previous),
            "prev_head": previous[0] if previous else 0, "induction": list(induction), "max_offset": 8,
            "several": [] if several is None else [several], "several_candidate": 5 if several is None else several,
            "baseline": base,
            **{f"comp_{k}": v for k, v in comp.items()}, "ablated": ablated,
            "qk_positivity": np.full(H, qk), "ov_positivity": np.full(H, ov), "marginal": list(marginal),
            "shares": [m / sum(marginal) for m in marginal], "single": np.array([[single[0]] * H, [single[1]] * H]),
            "uniform": uniform, "model_loss": uniform - sum(marginal), "focus": focus,
            "const_share": np.full((2, H), 0.02), "ov_top1": ov_top1, "ov_tokens": 1000, "windows": 16}


def verdicts(monkeypatch, **kw):
    monkeypatch.setattr(two_layer, "results", lambda book: made_up(**kw))
    return {row["section"].split("#")[1] + ":" + row["claim"][:12]: row["verdict"]
            for row in two_layer.findings_rows(None)}


def verdict(v, section):
    """The one verdict of ``section`` in ``v``, or of the row whose claim starts as ``section``'s part after ":"."""
    found = [x for k, x in v.items() if k.startswith(section + ":") or k == section]
    assert len(found) == 1, (section, v)
    return found[0]


def test_the_papers_picture_is_reproduced(monkeypatch):
    v = verdicts(monkeypatch, q_several=(1,))
    assert set(v.values()) == {"reproduced"}, v


def test_each_rule_can_fail(monkeypatch):
    ind, wide = "two-layer-composition:The inductio", "two-layer-erratum:Across all p"
    erratum, corner, top1 = "two-layer-erratum:Two inductio", "two-layer-circuits:Induction he", \
        "two-layer-circuits:An induction"
    v = lambda **kw: verdicts(monkeypatch, **kw)
    assert v(k_prev=(1,))[ind] == "partly"
    assert v(k_prev=())[ind] == "not reproduced"
    assert v(k_prev=(1,))[wide] == "reproduced"  # the strongest pair is still K from the previous-token head
    assert v(q_several=tuple(range(6)))[wide] == "partly"  # more pairs Q-compose than K-compose
    assert v(q_focus=(1,))[wide] == "partly"  # a Q pair is the strongest of the figure
    assert v(q_focus=(1,))[ind] == "reproduced"  # ... which does not change the induction heads' picture
    assert v(k_prev=())[wide] == "not reproduced"
    assert v(k_several=(), q_several=())[erratum] == "not reproduced"
    assert v(k_several=(3,))[erratum] == "partly"
    assert v(several=None)[erratum] == "not reproduced"
    assert verdict(v(previous=(2, 5)), "two-layer-layer-0") == "partly"
    assert verdict(v(induction=(1,), k_prev=(1,)), "two-layer-induction") == "partly"
    assert verdict(v(ablated_to=0.5), "two-layer-ablation") == "not reproduced"
    assert verdict(v(ablated_to=(0.02, 0.5)), "two-layer-ablation") == "partly"
    assert v(qk=-0.2)[corner] == "not reproduced"
    assert v(top1=(0.3, 0.05))[top1] == "partly"
    assert v(top1=(0.05, 0.05))[top1] == "not reproduced"
    assert verdict(v(marginal=(2.4, 1.9, 0.1)), "two-layer-terms") == "partly"
    assert verdict(v(marginal=(2.0, 5.0, 0.3)), "two-layer-terms") == "reproduced"
    assert verdict(v(marginal=(3.0, 4.0, 0.3)), "two-layer-terms") == "partly"  # shares too far off
    assert verdict(v(marginal=(2.4, 1.9, 3.0)), "two-layer-terms") == "not reproduced"
    assert verdict(v(single=(0.1, 0.15)), "two-layer-head-terms") == "partly"
    assert verdict(v(marginal=(2.0, 3.0, 1.0)), "two-layer-virtual") == "partly"
