"""The one-layer chapter's shared results and findings rows, on a stand-in book with a toy vocabulary."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from circuits.analysis.circuits import score_terms
from circuits.findings import one_layer
from circuits.findings.one_layer_skip_trigrams import CARRY_SHARE, KEEP_BUG, N_SPLIT, raised, verdict
from circuits.findings.table import check_row
from tests.analysis.models import make_model

# a toy vocabulary holding the paper's examples (" bay", " forth", " Ralph" = "R" + "alph" ...) and filler
WORDS = [" keep", " in", " mind", " at", " bay", " def", "(", "self", " open", '","', ' "', "r", "w", "rb", "wb",
         " back", " and", " forth", " Ralph", "R", "alph", " the", " of", " a", " to", " is", " it", "\n", ".", ",",
         " was", " he", " she", " we", " you", " they", " on", " for", " with", " as", " be", " Emma", "Em", "ma",
         " under", " wraps", " difficult", " not", " impossible", " range", " enumerate", " sorted", " zip", " tqdm"]


class ToyTokenizer:
    """Greedy longest match over WORDS (enough for token_id, split_words and decode)."""

    eos_token_id = WORDS.index("\n")

    def encode(self, text, add_special_tokens=False):
        out = []
        while text:
            piece = max((w for w in WORDS if text.startswith(w)), key=len, default=None)
            if piece is None:
                return [0, 0]  # not spelled by this vocabulary: never a single token
            out.append(WORDS.index(piece))
            text = text[len(piece):]
        return out

    def decode(self, ids):
        return "".join(WORDS[i] for i in ids)


@pytest.fixture
def book(tiny_cfg, monkeypatch):
    import dataclasses

    monkeypatch.setattr(one_layer, "BUG_STREAM", 20_000)
    V = len(WORDS)
    cfg = dataclasses.replace(tiny_cfg, d_vocab=V)
    model = make_model(cfg, n_layers=1, init_std=0.3)
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, V, 30_000), rng.integers(0, V, 6_000)
    tok = ToyTokenizer()

    def token_id(text):
        ids = tok.encode(text)
        return ids[0] if len(ids) == 1 else None

    def windows(n):
        starts = np.linspace(0, len(val) - cfg.n_ctx - 2, n).astype(int)
        return torch.as_tensor(np.stack([val[s:s + cfg.n_ctx + 1] for s in starts]))

    return SimpleNamespace(
        preset=SimpleNamespace(name="test", d_vocab=V, n_ctx=cfg.n_ctx), tokens={"train": train, "validation": val},
        tokenizer=tok, counts=np.bincount(train, minlength=V), model=lambda n: model,
        decode=lambda i: WORDS[int(i)], show=lambda i: WORDS[int(i)].replace(" ", "·"), token_id=token_id,
        windows=windows, cache=lambda name, layers, compute: compute())


def test_score_term_spread_matches_a_loop(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=1, init_std=0.3)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (2, 9))
    got = one_layer.score_term_spread(model, tokens)
    terms = score_terms(model, 0, model.embed.W_E[tokens], model.pos_embed.W_pos[:9])
    for i in range(4):
        for h in range(tiny_cfg.n_heads):
            stds = [float(terms[i, b, h, t, :t + 1].std(unbiased=False)) for b in range(2) for t in range(1, 9)]
            assert float(got[i, h]) == pytest.approx(np.mean(stds), rel=1e-4, abs=1e-6)


def test_results_and_findings_on_a_stand_in_book(book):
    r = one_layer.results(book)
    H = r["n_heads"]
    assert r["expansion_error"] <= 1e-4 * r["logit_max"]
    assert len(r["loss_heads"]) == H and r["loss_all"] == pytest.approx(r["loss_model"], rel=1e-5)
    assert len(r["table"]) == 5 * H
    # every named example is tried: the toy vocabulary spells them all as single tokens
    ex = r["examples"]
    assert [e["out"] for e in ex] == [" mind", " bay", " wraps", " impossible", "self", "rb", "wb", "r", "w",
                                      " range", " enumerate", " sorted", " zip", " tqdm", " forth", "alph"]
    assert all(e["verdict"] in ("reproduced", "partly", "not reproduced") for e in ex)
    assert {e["dest"] for e in ex if e["source"] == " open"} == {'","'}  # the paper's own destination exists
    for e in ex:
        supported = max(e["ov rank"], e["qk rank"]) <= r["top_rank"]
        assert e["verdict"] == verdict(supported, raised(e["change"], e["se"]))
        assert e["se"] > 0 and 0 <= e["share"] <= 1
        c = e["corpus"]  # corpus counts, also for words this vocabulary splits
        assert 0 <= c["source … dest → out"] <= c["source … dest"] <= c["dest"] and c["dest → out"] <= c["dest"]
        # a one-layer model: the rise of the output's logit splits exactly over the heads
        assert len(e["head logit change"]) == H and sum(e["head logit change"]) == pytest.approx(e["logit change"],
                                                                                                 abs=1e-4)
    keep = r["keep_bug"]
    assert keep["missing"] == [] and [(k["dest"], k["out"]) for k in keep["rows"]] == \
        [(d, o) for d, o, _ in KEEP_BUG] and all("change" in k for k in keep["rows"])
    assert 0 <= keep["head"] < H and keep["bay ov rank"] >= 1
    named = {(e["dest"], e["out"]): e for e in ex if e["source"] == " keep"}
    for k in keep["rows"]:  # the same contexts as the named examples: the intended rows agree
        if (k["dest"], k["out"]) in named:
            assert k["change"] == pytest.approx(named[(k["dest"], k["out"])]["change"])
    assert (18, 19, 20) in {(w["word"], w["first"], w["second"]) for w in r["split"]["rows"]}  # · Ralph … R → alph
    split = r["split"]
    assert split["tested"] == min(split["n"], N_SPLIT)
    for w in split["rows"][:split["tested"]]:
        assert w["carried"] == (w["raised"] and w["carrier share"] >= CARRY_SHARE)
        assert w["carrier"] == int(np.argmax(w["head logit change"]))
    assert split["carried"] == sum(w["carried"] for w in split["rows"][:split["tested"]]) <= split["raised"]
    assert set(np.asarray(r["word_ids"]).tolist()) <= set(range(len(WORDS)))
    assert {t["source"] for t in r["word_table"]} <= set(np.asarray(r["word_ids"]).tolist())
    for b in r["bugs"]:
        assert b["raised"] == raised(b["bug"]["change"], b["bug"]["se"])
    assert np.all((0 <= np.asarray(r["top1"])) & (np.asarray(r["top1"]) <= np.asarray(r["top5"])))
    assert set(r["copying"]) == {h for h in range(H) if r["positivity"][h] > 0.5}
    assert np.asarray(r["attn_uniform"]).shape == (H,)
    shown = r["pos_heads_shown"]  # the two most local heads, then those the position·position term leads
    assert np.asarray(r["score_spread"]).shape == (4, H) and np.asarray(r["pos_pattern"]).shape[0] == len(shown)
    assert set(shown[2:]) == set(r["pp_largest"]) - set(shown[:2]) and len(set(shown)) == len(shown)
    assert set(r["pp_largest"]) == {h for h in range(H) if np.argmax(np.asarray(r["score_spread"])[:, h]) == 3}
    np.testing.assert_allclose(r["prev_token"], r["attn_previous"], atol=1e-6)  # the same mean A[t, t-1]
    assert np.all(np.asarray(r["attn_recent"]) <= 1 + 1e-6) and 0 < r["uniform_recent"] < 1
    assert all(b["kind"] in ("inside a word", "whole words", "symbols", "mixed") for b in r["bugs"])
    assert np.asarray(r["dump_ov_out"]).shape == (H, len(r["browser_tokens"]), 5)
    json.dumps({k: v for k, v in r.items() if not isinstance(v, np.ndarray)})  # the cache stores it as JSON

    rows = one_layer.findings_rows(book)
    assert len(rows) == 5
    notebook = json.loads((Path(__file__).parents[2] / "book" / "04_one_layer.ipynb").read_text())
    labels = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    for row in rows:
        assert set(row) == {"claim", "paper", "ours", "verdict", "rule", "section"}
        check_row(row)
        assert row["rule"].endswith(".") and "circuits." not in row["rule"]  # one plain sentence, no code
        assert row["verdict"] in ("reproduced", "partly", "not reproduced")
        page, label = row["section"].split("#")
        assert page == "04_one_layer" and f"({label})=" in labels


def test_a_missing_token_makes_an_example_not_testable(book):
    words = {" bay", " forth"}
    real = book.token_id
    book.token_id = lambda text: None if text in words else real(text)
    r = one_layer.results(book)
    by_out = {e["out"]: e for e in r["examples"]}
    assert by_out[" bay"]["verdict"] == by_out[" forth"]["verdict"] == "not testable"
    assert by_out[" bay"]["not tokens"] == [" bay"] and by_out[" mind"]["verdict"] != "not testable"
    keep = {(k["dest"], k["out"]): k for k in r["keep_bug"]["rows"]}
    assert r["keep_bug"]["missing"] == [" bay"] and "head" not in r["keep_bug"]
    assert "change" in keep[(" in", " mind")] and keep[(" in", " bay")]["missing"] == [" bay"]
    assert "not testable" in one_layer.findings_rows(book)[2]["ours"]  # the skip-trigram bugs row
