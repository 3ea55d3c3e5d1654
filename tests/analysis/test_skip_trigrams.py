"""Skip-trigram tables, support, copying variants and the per-token dump (``analysis.skip_trigrams``) against
dense matrices and explicit loops, on small sizes."""

import numpy as np
import pytest
import torch

from circuits.analysis.circuits import ov_circuit, qk_circuit
from circuits.analysis.factored import FactoredMatrix
from circuits.analysis.scan.tables import copying_rates
from circuits.analysis.skip_trigrams import (attention_preference, centered, column_maxima, column_top,
                                             eigenvalue_radius, frequent_token_ids, restrict, self_ranks,
                                             skip_trigram_support, skip_trigram_table, split_words,
                                             strongest_sources, token_dump, whole_words)
from tests.analysis.models import sharp_model


def random_fm(batch=(3,), m=40, k=5, n=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return FactoredMatrix(torch.randn(*batch, m, k, generator=g), torch.randn(*batch, k, n, generator=g))


# ---- subsets and transformations of circuits -----------------------------------------------------------

def test_frequent_token_ids_and_restrict():
    ids = frequent_token_ids(np.array([0, 5, 50, 49, 51]), 50)
    assert ids.tolist() == [2, 4]
    fm = random_fm()
    rows, cols = torch.tensor([3, 0, 7]), torch.tensor([5, 1])
    torch.testing.assert_close(restrict(fm, rows, cols).dense(), fm.dense()[:, rows][:, :, cols])
    torch.testing.assert_close(restrict(fm, cols=cols).dense(), fm.dense()[..., cols])


@pytest.mark.parametrize("over", [None, torch.tensor([1, 4, 8, 20, 30])])
def test_centered_matches_dense(over):
    fm = random_fm()
    M = fm.dense()
    o = slice(None) if over is None else over
    torch.testing.assert_close(centered(fm, -1, over).dense(), M - M[..., :, o].mean(-1, keepdim=True))
    torch.testing.assert_close(centered(fm, -2, over).dense(), M - M[..., o, :].mean(-2, keepdim=True))
    with pytest.raises(ValueError):
        centered(fm, 0)


def test_attention_preference_of_some_rows_only():
    fm = random_fm(m=30, n=30, seed=3)
    w = torch.rand(30)
    w /= w.sum()
    rows = torch.tensor([4, 0, 17, 29])
    full = attention_preference(fm, w).dense()
    part = attention_preference(fm, w, chunk_rows=3, rows=rows).dense()
    torch.testing.assert_close(part[:, rows], full[:, rows], rtol=1e-5, atol=1e-5)
    others = torch.tensor([i for i in range(30) if i not in rows.tolist()])
    torch.testing.assert_close(part[:, others], fm.dense()[:, others])  # raw scores elsewhere


def test_attention_preference_matches_dense():
    fm = random_fm(m=30, n=30)
    w = torch.rand(30)
    w[[2, 9]] = 0
    w /= w.sum()
    got = attention_preference(fm, w, chunk_rows=7).dense()
    S = fm.dense()
    keep = w > 0
    want = S - torch.logsumexp(S[..., keep] + w[keep].log(), dim=-1, keepdim=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the attention one source gets among many background tokens, relative to them: exp(P) = p(s)/p(typical)
    p = (S + w.log()).softmax(-1)
    torch.testing.assert_close(got[..., keep].exp() * w[keep], p[..., keep], rtol=1e-5, atol=1e-6)


# ---- skip-trigram tables -------------------------------------------------------------------------------

def test_strongest_sources_column_top_and_ranks_match_dense():
    fm = random_fm(m=40, n=40)
    M = fm.dense()
    allowed = torch.tensor([0, 3, 4, 10, 11, 17, 25, 39])
    torch.testing.assert_close(column_maxima(fm, chunk_rows=6), M.max(-2).values)
    src, vals = strongest_sources(fm, allowed, 3)
    sub = M[:, allowed][:, :, allowed].max(-2).values  # [H, n_allowed] column maxima
    top = sub.topk(3, dim=-1)
    assert torch.equal(src, allowed[top.indices])
    torch.testing.assert_close(vals, top.values)
    ids, v = column_top(fm[1], 10, allowed, 4)
    want = M[1, allowed, 10].topk(4)
    assert torch.equal(ids, allowed[want.indices])
    torch.testing.assert_close(v, want.values)
    candidates = torch.tensor([4, 11, 25])  # sources among these only, outputs still among allowed
    src, vals = strongest_sources(fm, allowed, 2, candidates)
    top = M[:, allowed][:, :, candidates].max(-2).values.topk(2, dim=-1)
    assert torch.equal(src, candidates[top.indices])
    torch.testing.assert_close(vals, top.values)


def test_skip_trigram_table_lists_each_sources_top_entries():
    ov, qk = random_fm(m=30, n=30, seed=1), random_fm(m=30, n=30, seed=2)
    allowed = torch.arange(0, 30, 2)
    table = skip_trigram_table(ov, qk, allowed, n_sources=2, k=3)
    assert len(table) == 3 * 2 and table["head"].tolist() == [0, 0, 1, 1, 2, 2]
    row = table.iloc[3]
    s = int(row["source"])
    assert s in allowed.tolist()
    assert row["max OV"] == pytest.approx(float(ov.dense()[1, allowed, s].max()), rel=1e-5)
    assert row["outputs"] == allowed[ov.dense()[1, allowed, s].topk(3).indices].tolist()
    assert row["destinations"] == allowed[qk.dense()[1, allowed, s].topk(3).indices].tolist()
    given = strongest_sources(ov, allowed, 4)  # the first n_sources of sources computed beforehand
    assert skip_trigram_table(ov, qk, allowed, n_sources=2, k=3, sources=given).equals(table)


def test_skip_trigram_support_matches_dense():
    ov, qk = random_fm(m=30, n=30, seed=5), random_fm(m=30, n=30, seed=6)
    allowed = torch.tensor([1, 2, 4, 8, 9, 15, 16, 23, 29])
    source, dest, out = 9, 4, 16
    got = skip_trigram_support(ov, qk, source, dest, out, allowed)
    OV, QK = ov.dense(), qk.dense()
    for h in range(3):
        col = OV[h, allowed, source]
        assert int(got["ov rank"][h]) == 1 + int((col > OV[h, out, source]).sum())
        assert float(got["ov logit"][h]) == pytest.approx(float(OV[h, out, source] - col.mean()), abs=1e-5)
        qcol = QK[h, allowed, source]
        assert int(got["qk rank"][h]) == 1 + int((qcol > QK[h, dest, source]).sum())
        assert float(got["qk value"][h]) == pytest.approx(float(QK[h, dest, source]), abs=1e-5)
    # several skip-trigrams in one pass: column i is the single call for trigram i
    sources, dests, outs = torch.tensor([9, 2, 23]), torch.tensor([4, 29, 1]), torch.tensor([16, 8, 23])
    batch = skip_trigram_support(ov, qk, sources, dests, outs, allowed)
    for i in range(3):
        one = skip_trigram_support(ov, qk, int(sources[i]), int(dests[i]), int(outs[i]), allowed)
        for key in one:
            assert batch[key].shape == (3, 3)
            torch.testing.assert_close(batch[key][:, i], one[key])


def test_split_words_finds_words_that_split_without_their_space():
    vocab = {1: " Ralph", 2: "R", 3: "alph", 4: " the", 5: " Ann", 6: " Emma", 7: "Emma", 8: " wombat", 9: " Wo1f"}
    ids = {t: i for i, t in vocab.items()}

    def encode(text):  # greedy longest match over the toy vocabulary
        out = []
        while text:
            piece = max((t for t in vocab.values() if text.startswith(t)), key=len)
            out.append(ids[piece])
            text = text[len(piece):]
        return out

    # " Ralph" splits as "R", "alph"; " Emma" has "Emma"; " Ann" is short; " wombat" is lower case; " Wo1f" not alpha
    assert split_words(list(vocab), vocab.__getitem__, encode) == [(1, 2, 3)]


# ---- the per-token dump and copying --------------------------------------------------------------------

def test_token_dump_matches_dense_topk(tiny_cfg):
    model = sharp_model(tiny_cfg)
    cand = torch.tensor(sorted(set(range(0, tiny_cfg.d_vocab, 3)) | {5, 8}))
    dump = token_dump(ov_circuit(model, 0), qk_circuit(model, 0), cand, k=4, chunk_rows=7)
    OV, QK = ov_circuit(model, 0).dense(), qk_circuit(model, 0).dense()  # [H, out, src], [H, dst, src]
    want = {"ov_out": OV[:, cand, :].transpose(-1, -2),  # [H, token (src), candidate out]
            "qk_src": QK[:, :, cand],  # [H, token (dst), candidate src]
            "qk_dst": QK[:, cand, :].transpose(-1, -2)}  # [H, token (src), candidate dst]
    for name, M in want.items():
        top = M.topk(4, dim=-1)
        assert dump[name].shape == (tiny_cfg.n_heads, tiny_cfg.d_vocab, 4)
        torch.testing.assert_close(dump[f"{name}_value"], top.values)
        assert torch.equal(dump[name], cand[top.indices])
    some = torch.tensor([9, 2, 5])
    part = token_dump(ov_circuit(model, 0), qk_circuit(model, 0), cand, k=4, chunk_rows=2, tokens=some)
    for name in want:
        assert part[name].shape == (tiny_cfg.n_heads, 3, 4)
        assert torch.equal(part[name], dump[name][:, some])
        torch.testing.assert_close(part[f"{name}_value"], dump[f"{name}_value"][:, some])


def test_eigenvalue_radius():
    lam = torch.tensor([1 + 0j, -2 + 0j, 3j, 0.5 + 0.5j], dtype=torch.complex128)
    mags = lam.abs()
    torch.testing.assert_close(eigenvalue_radius(lam), torch.log1p(mags / mags.median()))
    torch.testing.assert_close(eigenvalue_radius(lam, 2.0), torch.log1p(mags / 2.0))


def test_whole_words_keeps_words_that_end_where_they_end():
    vocab = [" the", " tw", "el", "ve", ".", " Emma", " a", "\n", " ok"]
    # " tw" always goes on with letters ("el"); " the" and " Emma" end at a space, "." or newline; " a" is short
    stream = np.array([0, 1, 2, 3, 4, 5, 7, 0, 6, 1, 2, 3, 0, 5, 4, 8, 2], dtype=np.int64)
    got = whole_words(range(len(vocab)), vocab.__getitem__, stream, len(vocab))
    assert got.tolist() == [0, 5]  # " ok" ends its only occurrence with "el" (a letter): not a word
    assert whole_words([5, 0], vocab.__getitem__, stream, len(vocab)).tolist() == [5, 0]  # in the given order


def test_self_ranks_give_the_copying_rates():
    fm = random_fm(batch=(3,), m=30, k=4, n=30, seed=7)
    M = fm.dense()
    got = self_ranks(fm, chunk_cols=7)  # chunks that do not divide 30
    for h in range(3):
        want = [(M[h, :, s] > M[h, s, s]).sum() for s in range(30)]
        assert got[h].tolist() == [int(w) for w in want]
    top1, top5 = copying_rates(fm, ks=(1, 5))
    torch.testing.assert_close((got < 1).float().mean(-1), top1.float())
    torch.testing.assert_close((got < 5).float().mean(-1), top5.float())
