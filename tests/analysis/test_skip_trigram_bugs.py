"""Corpus statistics and the search for skip-trigram bugs (``analysis.skip_trigram_bugs``) against explicit loops,
on small sizes."""

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from circuits.analysis.circuits import ov_circuit, qk_circuit
from circuits.analysis.skip_trigram_bugs import (BigramCounts, crossed_pairs, find_skip_trigram_bugs, phrase_counts,
                                                 positions_after, sequence_starts, skip_trigram_counts)
from circuits.analysis.skip_trigrams import strongest_sources
from tests.analysis.models import sharp_model


def test_bigram_counts_match_a_counter():
    stream = np.random.default_rng(1).integers(0, 12, 500)
    bg = BigramCounts(stream, 12)
    pairs = Counter(zip(stream[:-1].tolist(), stream[1:].tolist()))
    cur, nxt = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    want = np.array([[pairs[(a, b)] for b in range(12)] for a in range(12)])
    assert np.array_equal(bg.count(cur, nxt), want)
    np.testing.assert_allclose(bg.prob(cur, nxt), want / want.sum(1, keepdims=True))


def brute_pairs(p, counts, base, min_p, max_ratio, min_count, min_lift):
    D, O = p.shape
    ok = lambda d, o: p[d, o] >= min_p and counts[d, o] >= min_count and p[d, o] >= min_lift * base[d, o]
    found = set()
    for d1, o1, d2, o2 in itertools.product(range(D), range(O), range(D), range(O)):
        if d1 != d2 and o1 != o2 and ok(d1, o1) and ok(d2, o2) and \
                p[d1, o2] <= max_ratio * p[d2, o2] and p[d2, o1] <= max_ratio * p[d1, o1]:
            found.add(frozenset([(d1, o1), (d2, o2)]))
    return found


def test_crossed_pairs_finds_keep_in_mind_at_bay():
    # destinations (" in", " at", " on") x outputs (" mind", " bay", " the"): P(o | keep … d)
    p = np.array([[0.30, 0.001, 0.2], [0.0, 0.25, 0.3], [0.01, 0.01, 0.5]])
    counts = (p * 1000).astype(int)
    base = np.array([[0.01, 0.001, 0.2], [0.0, 0.01, 0.3], [0.01, 0.01, 0.5]])
    found = crossed_pairs(p, counts, base)
    assert found[0][:4] == (0, 0, 1, 1) and found[0][4] == pytest.approx(0.25)
    assert len(found) == 1  # " the" is common but not raised by "keep" (lift 1)
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = rng.uniform(0, 0.3, (6, 5)) ** 2 * 10
        counts, base = rng.integers(0, 30, (6, 5)), rng.uniform(0, 0.1, (6, 5))
        got = crossed_pairs(p, counts, base, min_p=0.1, max_ratio=0.3, min_count=5, min_lift=1.5)
        assert {frozenset([(a, b), (c, d)]) for a, b, c, d, _ in got} == brute_pairs(p, counts, base, 0.1, 0.3, 5, 1.5)
        assert [s for *_, s in got] == sorted([s for *_, s in got], reverse=True)


@pytest.mark.parametrize("sparse", [True, False, None])
def test_positions_after_and_skip_trigram_counts_match_loops(sparse):
    stream = np.random.default_rng(2).integers(0, 8, 400)
    window, source = 5, 3
    got = positions_after(stream, source, window, sparse=sparse)
    want = [i for i in range(len(stream) - 1) if source in stream[max(0, i - window):i]]
    assert got.tolist() == want
    dests, outs = [1, 3, 6], [0, 2, 3, 7]
    n_dest, n_pair = skip_trigram_counts(stream, source, dests, outs, window)
    for a, d in enumerate(dests):
        at = [i for i in want if stream[i] == d]
        assert n_dest[a] == len(at)
        for b, o in enumerate(outs):
            assert n_pair[a, b] == sum(stream[i + 1] == o for i in at)


def test_sequence_starts_and_phrase_counts_match_loops():
    stream = np.random.default_rng(5).integers(0, 4, 3000)
    for seq in ([2], [1, 3], [0, 2, 1]):
        want = [i for i in range(len(stream) - len(seq) + 1) if list(stream[i:i + len(seq)]) == seq]
        assert sequence_starts(stream, seq).tolist() == want
    source, dest, out, window = [1, 2], [3], [0, 1], 6
    got = phrase_counts(stream, source, dest, out, window)
    n = len(stream)
    d_at = [i for i in range(n - 1) if stream[i] == 3]
    ends = [i + 1 for i in range(n - 1) if list(stream[i:i + 2]) == source]  # where each source ends
    after = [d for d in d_at if any(d - window <= e <= d - 1 for e in ends)]
    follows = lambda d: list(stream[d + 1:d + 3]) == out
    assert got == {"source … dest": len(after), "source … dest → out": sum(map(follows, after)),
                   "dest": len(d_at), "dest → out": sum(map(follows, d_at))}
    adjacent = phrase_counts(stream, source, dest, out, window, adjacent=True)
    assert adjacent["source … dest"] == sum(d - 1 in ends for d in d_at)
    one = phrase_counts(stream, [1], [3], [0], window)  # single tokens: the bug search's counts
    n_dest, n_pair = skip_trigram_counts(stream, 1, [3], [0], window)
    assert (one["source … dest"], one["source … dest → out"]) == (n_dest[0], n_pair[0, 0])


def test_find_skip_trigram_bugs_rows_are_consistent(tiny_cfg):
    model = sharp_model(tiny_cfg)
    stream = np.random.default_rng(4).integers(0, tiny_cfg.d_vocab, 20000)
    allowed = torch.arange(tiny_cfg.d_vocab)
    ov, qk = ov_circuit(model, 0), qk_circuit(model, 0)
    frame = find_skip_trigram_bugs(ov, qk, allowed, stream, BigramCounts(stream, tiny_cfg.d_vocab), window=8,
                                   n_sources=6, n_dest=20, n_out=20, min_p=0.02, min_count=3, min_lift=1.0)
    assert len(frame) > 0 and frame["score"].is_monotonic_decreasing
    for r in frame.head(5).itertuples():
        n_dest, n_pair = skip_trigram_counts(stream, r.source, [r.d1, r.d2], [r.o1, r.o2], 8)
        assert r._7 == pytest.approx(n_pair[0, 0] / n_dest[0])  # P(o1|s…d1)
        assert r._9 == pytest.approx(n_pair[0, 1] / n_dest[0])  # P(o2|s…d1): the crossed one, rare
        assert r._9 <= 0.1 * r._8 and r._7 >= 0.02 and r._8 >= 0.02
        outs = ov.dense()[r.head, :, r.source].topk(20).indices.tolist()
        assert r.o1 in outs and r.o2 in outs
    assert (frame["n s…d1→o2"] == (frame["P(o2|s…d1)"] * frame["n s…d1"]).round()).all()
    given = strongest_sources(ov, allowed, 10)[0]  # strongest sources computed beforehand: the same search
    again = find_skip_trigram_bugs(ov, qk, allowed, stream, BigramCounts(stream, tiny_cfg.d_vocab), window=8,
                                   n_sources=6, n_dest=20, n_out=20, sources=given, min_p=0.02, min_count=3,
                                   min_lift=1.0)
    assert again.equals(frame)
