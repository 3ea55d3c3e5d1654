"""One-layer analysis (skip-trigrams, bugs, copying variants, positional heads, the per-token dump)
against dense matrices, explicit loops and the model's own forward pass, on small sizes."""

import dataclasses
import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from circuits.analysis.circuits import ov_circuit, position_scores, qk_circuit
from circuits.analysis.factored import FactoredMatrix
from circuits.metrics.losses import loss_fn
from circuits.model.transformer import AttnOnlyTransformer
from circuits.analysis.path_expansion import head_term_losses
from circuits.analysis.positional import attention_summary, causal_softmax
from circuits.analysis.scan.tables import copying_rates
from circuits.analysis.skip_trigram_bugs import (BigramCounts, crossed_pairs, find_skip_trigram_bugs,
                                                 last_position_terms, next_token_logprobs, phrase_counts,
                                                 positions_after, sequence_starts, skip_trigram_counts,
                                                 skip_trigram_effect, text_contexts)
from circuits.analysis.skip_trigrams import (attention_preference, centered, column_maxima, column_top, dump_frame,
                                             eigenvalue_radius, frequent_token_ids, restrict, self_ranks,
                                             skip_trigram_support, skip_trigram_table, split_words,
                                             strongest_sources, token_dump, whole_words)


def make_model(cfg, n_layers=1, init_std=0.3, seed=0):
    """Large init so that attention patterns and circuits are far from uniform."""
    cfg = dataclasses.replace(cfg, n_layers=n_layers, init_std=init_std)
    model = AttnOnlyTransformer(cfg)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.requires_grad_(False).eval()


def random_fm(batch=(3,), m=40, k=5, n=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    return FactoredMatrix(torch.randn(*batch, m, k, generator=g), torch.randn(*batch, k, n, generator=g))


def decode(i):
    return f"t{i}"


# ---- subsets and transformations of circuits ---------------------------------------------------------

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


# ---- the path expansion: loss of each term ------------------------------------------------------------

def test_head_term_losses_match_explicit_heads(tiny_cfg):
    model = make_model(tiny_cfg)
    g = torch.Generator().manual_seed(1)
    windows = torch.randint(0, tiny_cfg.d_vocab, (5, tiny_cfg.n_ctx + 1), generator=g)
    got = head_term_losses(model, windows, batch_size=2)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    logits, cache = model.run_with_cache(inputs)
    x = model.embed.W_E[inputs]
    A = cache["blocks.0.attn.hook_pattern"]  # [b, H, dst, src]
    attn = model.blocks[0].attn
    W_U = model.unembed.W_U
    assert got["direct"] == pytest.approx(float(loss_fn(x @ W_U, targets)), rel=1e-5)
    for h in range(tiny_cfg.n_heads):
        head = A[:, h] @ (x @ attn.W_V[h] @ attn.W_O[h])  # literal A^h x W_V W_O
        assert float(got["heads"][h]) == pytest.approx(float(loss_fn((x + head) @ W_U, targets)), rel=1e-5)
    assert got["all"] == pytest.approx(float(loss_fn(logits, targets)), rel=1e-5)
    assert got["model"] == pytest.approx(got["all"], rel=1e-6)
    with pytest.raises(ValueError, match="one-layer"):
        head_term_losses(make_model(tiny_cfg, 2), windows)


# ---- skip-trigram tables ------------------------------------------------------------------------------

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


# ---- measuring on sequences --------------------------------------------------------------------------

def test_text_contexts_and_effects_match_the_model(tiny_cfg):
    model = make_model(tiny_cfg)
    stream = np.random.default_rng(0).integers(0, tiny_cfg.d_vocab, 3000)
    pre, gap = text_contexts(stream, 6, 5, 3, avoid=[7])
    assert pre.shape == (6, 5) and gap.shape == (6, 3) and not np.isin(np.hstack([pre, gap]), [7]).any()
    seqs = torch.randint(0, tiny_cfg.d_vocab, (5, 9))
    torch.testing.assert_close(next_token_logprobs(model, seqs, batch_size=2),
                               model(seqs)[:, -1].log_softmax(-1))
    source, controls, targets, dest = 7, [1, 2], [3, 4], 9
    frame = skip_trigram_effect(model, pre, gap, source, controls, targets, dest=dest)
    for j, t in enumerate(targets):
        lp = lambda first, i: float(model(torch.tensor([[*pre[i], first, *gap[i], dest]]))[0, -1].log_softmax(-1)[t])
        diffs = [lp(source, i) - np.mean([lp(c, i) for c in controls]) for i in range(6)]
        assert frame["log-prob change (nats)"][j] == pytest.approx(np.mean(diffs), abs=1e-4)
        assert frame["P with source"][j] == pytest.approx(np.mean([np.exp(lp(source, i)) for i in range(6)]), rel=1e-4)
        ctx = [lp(source, i) - np.mean([lp(c, i) for c in controls]) for i in range(6)]
        assert frame["standard error"][j] == pytest.approx(np.std(ctx, ddof=1) / np.sqrt(6), rel=1e-3, abs=1e-6)
        logit = lambda first, i: float(model(torch.tensor([[*pre[i], first, *gap[i], dest]]))[0, -1, t])
        rise = np.mean([logit(source, i) - np.mean([logit(c, i) for c in controls]) for i in range(6)])
        assert frame["logit change"][j] == pytest.approx(rise, abs=1e-4)
        assert sum(frame["head logit change"][j]) == pytest.approx(rise, abs=1e-4)  # split exactly over heads
    no_dest = skip_trigram_effect(model, pre, gap, source, controls, targets)  # destination = last gap token
    want = float(model(torch.tensor([[*pre[0], source, *gap[0]]]))[0, -1].softmax(-1)[3])
    assert no_dest["P with source"][0] == pytest.approx(
        np.mean([float(model(torch.tensor([[*pre[i], source, *gap[i]]]))[0, -1].softmax(-1)[3]) for i in range(6)]),
        rel=1e-4) and want > 0
    two = make_model(tiny_cfg, n_layers=2)  # the general path: every position through every block
    torch.testing.assert_close(next_token_logprobs(two, seqs), two(seqs)[:, -1].log_softmax(-1))
    frame2 = skip_trigram_effect(two, pre, gap, source, controls, targets, dest=dest)
    assert "head logit change" not in frame2 and frame2["standard error"].notna().all()


def test_last_position_terms_split_the_residual_stream(tiny_cfg):
    model = make_model(tiny_cfg)
    seqs = torch.randint(0, tiny_cfg.d_vocab, (5, 11))
    seqs[1:, :-3] = seqs[0, :-3]  # sequences sharing most tokens share (token, position) keys
    direct, heads = last_position_terms(model, seqs)
    _, cache = model.run_with_cache(seqs)
    torch.testing.assert_close(direct, cache["hook_embed"][:, -1])
    torch.testing.assert_close(heads, cache["blocks.0.attn.hook_result"][:, -1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one-layer"):
        last_position_terms(make_model(tiny_cfg, n_layers=2), seqs)


# ---- corpus statistics for skip-trigram bugs ---------------------------------------------------------

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
    model = make_model(tiny_cfg)
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


# ---- positional heads --------------------------------------------------------------------------------

def test_attention_summary_matches_loops(tiny_cfg):
    model = make_model(tiny_cfg)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (3, 12))
    got = attention_summary(model, tokens)
    _, cache = model.run_with_cache(tokens)
    A = cache["blocks.0.attn.hook_pattern"]
    P = causal_softmax(position_scores(model, 0, 12))
    for h in range(tiny_cfg.n_heads):
        selfs, prevs, ents, agree, flat = [], [], [], [], []
        for b in range(3):
            for t in range(1, 12):
                row = A[b, h, t, :t + 1]
                selfs.append(float(row[t]))
                prevs.append(float(row[t - 1]))
                ents.append(float(-(row * row.log()).sum()))
                agree.append(1 - 0.5 * float((row - P[h, t, :t + 1]).abs().sum()))
                flat.append(1 - 0.5 * float((row - 1 / (t + 1)).abs().sum()))
        for key, vals in (("self", selfs), ("previous", prevs), ("entropy", ents), ("positional agreement", agree),
                          ("uniform agreement", flat)):
            assert float(got[key][h]) == pytest.approx(np.mean(vals), abs=1e-5)
    s = torch.randn(4, 4)
    want = torch.stack([torch.cat([s[t, :t + 1].softmax(-1), torch.zeros(3 - t)]) for t in range(4)])
    torch.testing.assert_close(causal_softmax(s), want)


# ---- the per-token dump -------------------------------------------------------------------------------

def test_token_dump_matches_dense_topk(tiny_cfg):
    model = make_model(tiny_cfg)
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
    counts = np.arange(tiny_cfg.d_vocab)
    frame = dump_frame(dump, decode, counts)
    assert len(frame) == tiny_cfg.n_heads * tiny_cfg.d_vocab
    row = frame[(frame["token_id"] == 5) & (frame["head"] == 2)].iloc[0]
    assert row["token"] == repr("t5") and row["train_count"] == 5
    assert row["ov_out_1"] == repr(decode(int(dump["ov_out"][2, 5, 0])))
    assert row["qk_dst_value_4"] == pytest.approx(float(dump["qk_dst_value"][2, 5, 3]), abs=1e-4)


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
