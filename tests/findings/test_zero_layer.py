"""The zero-layer chapter's sparse bigram functions against the dense tables, and its findings rows."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from circuits.analysis.bigrams import (counted_top_next, frequent_pairs, model_bigram_logprobs, model_pair_logprobs,
                                       smoothed_pair_logprobs)
from circuits.analysis.skip_trigram_bugs import BigramCounts
from circuits.data.batches import iter_eval_batches
from circuits.findings import zero_layer
from circuits.findings.table import check_row

from ..analysis.models import make_model
from ..analysis.test_bigrams import dense_bigram_counts, dense_bigram_logprobs

V = 13


@pytest.fixture
def stream():
    return np.random.default_rng(0).integers(0, V, size=3000) % np.random.default_rng(1).integers(1, V, size=3000)


def test_smoothed_pair_logprobs_are_the_dense_tables_entries(stream):
    counts = BigramCounts(stream, V)
    dense = dense_bigram_logprobs(dense_bigram_counts(stream, V), alpha=0.3)
    cur, nxt = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
    np.testing.assert_allclose(smoothed_pair_logprobs(counts, cur.ravel(), nxt.ravel(), 0.3), dense.ravel())


def test_frequent_pairs_match_a_loop(stream):
    counts = BigramCounts(stream, V)
    dense = dense_bigram_counts(stream, V)
    sources = np.array([0, 2, 5, 11])
    cur, nxt, n = frequent_pairs(counts, sources, min_count=15)
    expected = [(c, x, dense[c, x]) for c in sources for x in range(V) if dense[c, x] >= 15]
    assert list(zip(cur.tolist(), nxt.tolist(), n.tolist())) == sorted(expected)


def test_counted_top_next_matches_the_dense_row(stream):
    counts = BigramCounts(stream, V)
    dense = dense_bigram_counts(stream, V)
    for c in range(V):
        ids, p = counted_top_next(counts, c, k=4)
        order = np.argsort(-dense[c], kind="stable")[: len(ids)]
        assert ids.tolist() == order.tolist()
        np.testing.assert_allclose(p, dense[c, order] / dense[c].sum())


def test_model_pair_logprobs_gather_the_model_table(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=0)
    rng = np.random.default_rng(2)
    cur, nxt = rng.integers(0, tiny_cfg.d_vocab, 200), rng.integers(0, tiny_cfg.d_vocab, 200)
    table = model_bigram_logprobs(model, np.arange(tiny_cfg.d_vocab)).double().numpy()
    np.testing.assert_allclose(model_pair_logprobs(model, cur, nxt, chunk=7), table[cur, nxt], rtol=1e-5, atol=1e-6)
    # the zero-layer model's own forward pass gives the same log-probabilities
    logp = model(torch.as_tensor(cur)[:, None]).log_softmax(-1)[:, 0]
    np.testing.assert_allclose(logp[np.arange(200), nxt].numpy(), table[cur, nxt], rtol=1e-5, atol=1e-5)


def test_verdict_rules():
    assert zero_layer.verdict(0.9, 0.95) == "reproduced"
    assert zero_layer.verdict(0.9, 1.2) == "reproduced"  # better than the counted table
    assert zero_layer.verdict(0.9, 0.8) == "partly"
    assert zero_layer.verdict(0.6, 0.95) == "partly"
    assert zero_layer.verdict(0.3, 0.95) == "not reproduced"
    assert zero_layer.verdict(0.9, 0.3) == "not reproduced"
    assert zero_layer.verdict(0.9, float("nan")) == "not reproduced"
    assert zero_layer.table_verdict(0.0, 20.0) == "reproduced"
    assert zero_layer.table_verdict(1e-3, 20.0) == "reproduced"
    assert zero_layer.table_verdict(1e-2, 20.0) == "not reproduced"


def test_gain_share():
    losses = {"unigram": 7.0, "counted bigram, same data": 5.0, "zero-layer model": 5.5}
    assert zero_layer.gain_share(losses) == pytest.approx(0.75)
    assert np.isnan(zero_layer.gain_share({**losses, "counted bigram, same data": 7.5}))


def markov_stream(n: int, d_vocab: int, seed: int) -> np.ndarray:
    """Each token followed by one of three fixed successors: a bigram table describes it."""
    successors = np.random.default_rng(1234).integers(0, d_vocab, size=(d_vocab, 3))
    choice = np.random.default_rng(seed).integers(0, 3, size=n)
    out = np.zeros(n, dtype=np.uint16)
    for i in range(1, n):
        out[i] = successors[out[i - 1], choice[i]]
    return out


def test_zero_layer_findings_on_a_stand_in_book(tiny_cfg):
    V = tiny_cfg.d_vocab
    train, val = markov_stream(20_000, V, 0), markov_stream(4_000, V, 1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    model = make_model(tiny_cfg, n_layers=0)
    book = SimpleNamespace(
        preset=SimpleNamespace(name="test", d_vocab=V, n_ctx=tiny_cfg.n_ctx,
                               train_config=lambda n: SimpleNamespace(total_tokens=5_000)),
        tokens={"train": train, "validation": val},
        counts=np.bincount(train, minlength=V), model=lambda n: model,
        windows=lambda n: torch.cat(list(iter_eval_batches(val, 32, tiny_cfg.n_ctx, n // 32))),
        decode=lambda i: " " + letters[i % 26] if i % 3 else str(i), cache=lambda name, layers, compute: compute())
    r = zero_layer.results(book)
    assert r["n_windows"] == 1024 and r["n_val"] == 1024 * tiny_cfg.n_ctx  # the shared validation windows
    # the model's loss as every chapter reports it, and read off its table pair by pair: the same number
    windows = book.windows(1024).numpy()
    from_table = -model_pair_logprobs(model, windows[:, :-1].ravel(), windows[:, 1:].ravel()).mean()
    assert r["losses"]["zero-layer model"] == pytest.approx(from_table, abs=1e-5)
    assert r["table_diff"] <= 1e-5 * r["table_scale"] and r["sources"] == list(np.argsort(-book.counts,
                                                                                       kind="stable")[:500])
    assert r["n_pairs"] > 0 and len(r["pair_current"]) == min(r["n_pairs"], zero_layer.N_SCATTER)
    assert r["losses"]["uniform"] == pytest.approx(np.log(V))
    assert r["losses"]["counted bigram"] < r["losses"]["unigram"] < r["losses"]["uniform"]  # a Markov chain
    assert all(book.decode(t).strip().isalpha() for t in r["examples"])
    assert np.shape(r["model_top"]) == np.shape(r["corpus_top"]) == (len(r["examples"]), zero_layer.TOP_K)
    exact, approximate = zero_layer.findings_rows(book)
    assert 4_900 <= r["n_seen"] <= 5_000
    assert r["losses"]["counted bigram"] <= r["losses"]["counted bigram, same data"]  # more data, better counts
    assert exact["verdict"] == "reproduced"  # a zero-layer model is its table, whatever its weights
    assert approximate["verdict"] == zero_layer.verdict(r["rho"], r["gain_share"])
    assert r["stray_common"] >= 0 and not r["stray_rare"] < 0  # nan: a chain with three successors has no rare pair
    notebook = Path(__file__).parents[2] / "book" / "03_zero_layer.ipynb"
    text = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    labels = re.findall(r"^\(([\w-]+)\)=$", text, re.M)
    for row in (exact, approximate):
        check_row(row)
        assert row["section"].startswith("03_zero_layer#") and row["section"].split("#")[1] in labels
        assert "_U" not in row["claim"]  # words, not TeX
