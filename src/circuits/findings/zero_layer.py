"""The zero-layer chapter's results (``book/03_zero_layer``): the model's table W_U W_E against the corpus's
bigram statistics, and held-out losses of the uniform, unigram, counted-bigram and zero-layer predictions."""

from __future__ import annotations

import math

import numpy as np

from circuits.analysis.bigrams import (counted_top_next, frequent_pairs, model_bigram_logprobs,
                                       model_pair_logprobs, rank_correlation, smoothed_pair_logprobs)
from circuits.analysis.skip_trigram_bugs import BigramCounts

N_SOURCES = 500  # "current" tokens compared: the most frequent ones
MIN_COUNT = 20  # a pair enters the comparison when the training split holds it at least this often
ALPHA = 0.01  # add-alpha smoothing of the counted table
N_SCATTER = 4000  # pairs drawn in the scatter (a random sample keeps the page light)
N_EXAMPLES = 12  # rows of the top-next-token table
TOP_K = 3

# the verdict's rule (findings_rows): the paper says the table "approximates bigram log-likelihoods"
RHO_REPRODUCED, RHO_PARTLY = 0.8, 0.5  # rank correlation over frequent pairs
LOSS_SLACK = 0.1  # nats: the model's held-out loss at most this much above the counted table's (same data)


def example_tokens(book, n: int = N_EXAMPLES) -> list[int]:
    """The ``n`` most frequent tokens made of letters (perhaps after a space): readable examples."""
    ids = np.argsort(-book.counts, kind="stable")
    return [int(i) for i in ids[:400] if book.decode(int(i)).strip().isalpha()][:n]


def seen_sample(book, train: np.ndarray) -> np.ndarray:
    """As many training tokens as the zero-layer model was trained on, in windows of n_ctx + 1 drawn at random
    from the split as training draws them (without repeats), concatenated: the data of a fair counted table."""
    w = book.preset.n_ctx + 1
    n_windows = len(train) // w
    k = min(n_windows, max(1, book.preset.train_config(0).total_tokens // w))
    pick = np.sort(np.random.default_rng(0).choice(n_windows, size=k, replace=False))
    return train[: n_windows * w].reshape(n_windows, w)[pick].ravel()


def _compute(book) -> dict:
    model = book.model(0)
    V = book.preset.d_vocab
    train, val = np.asarray(book.tokens["train"]), np.asarray(book.tokens["validation"], dtype=np.int64)
    counts = BigramCounts(train, V)

    sources = np.argsort(-book.counts, kind="stable")[:N_SOURCES]
    cur, nxt, n = frequent_pairs(counts, sources, MIN_COUNT)
    corpus_lp = smoothed_pair_logprobs(counts, cur, nxt, ALPHA)
    model_lp = model_pair_logprobs(model, cur, nxt)
    rho = rank_correlation(model_lp, corpus_lp) if len(cur) > 2 else float("nan")
    show = np.sort(np.random.default_rng(0).permutation(len(cur))[:N_SCATTER])

    seen = seen_sample(book, train)
    unigram = np.log((counts.unigram + ALPHA) / (counts.unigram + ALPHA).sum())
    losses = {"uniform": math.log(V),
              "unigram": float(-unigram[val[1:]].mean()),
              "counted bigram": float(-smoothed_pair_logprobs(counts, val[:-1], val[1:], ALPHA).mean()),
              "counted bigram, same data": float(-smoothed_pair_logprobs(BigramCounts(seen, V), val[:-1], val[1:],
                                                                         ALPHA).mean()),
              "zero-layer model": float(-model_pair_logprobs(model, val[:-1], val[1:]).mean())}

    agree = 0  # sources whose most likely next token is the same in the model's table and the counted one
    for start in range(0, len(sources), 100):
        rows = sources[start:start + 100]
        top_model = model_bigram_logprobs(model, rows).argmax(-1).numpy()
        for s, t in zip(rows, top_model):
            ids, _ = counted_top_next(counts, int(s), 1)
            agree += len(ids) > 0 and int(ids[0]) == int(t)

    examples = example_tokens(book)
    model_top, model_p, corpus_top, corpus_p = [], [], [], []
    for token in examples:
        lp = model_bigram_logprobs(model, np.array([token]))[0]
        p, ids = lp.exp().topk(TOP_K)
        model_top.append(ids.tolist())
        model_p.append(p.tolist())
        ids, p = counted_top_next(counts, token, TOP_K)
        corpus_top.append(ids.tolist() + [-1] * (TOP_K - len(ids)))  # -1: fewer successors than TOP_K
        corpus_p.append(p.tolist() + [0.0] * (TOP_K - len(p)))
    return {"rho": rho, "n_pairs": int(len(cur)), "n_sources": int(len(sources)),
            "pair_current": cur[show], "pair_next": nxt[show], "pair_count": n[show],
            "pair_corpus_lp": corpus_lp[show], "pair_model_lp": model_lp[show],
            "losses": losses, "top1_agreement": agree / len(sources),
            "n_train": int(len(train)), "n_seen": int(len(seen)), "n_val": int(len(val) - 1),
            "examples": examples, "model_top": model_top, "model_p": model_p,
            "corpus_top": corpus_top, "corpus_p": corpus_p}


def results(book) -> dict:
    """The zero-layer model's table against the corpus (computed once per build; see the module docstring)."""
    return book.cache("zero-layer-bigrams", (0,), lambda: _compute(book))


def verdict(rho: float, model_loss: float, counted_loss: float) -> str:
    """"reproduced" if the rank correlation over frequent pairs is at least ``RHO_REPRODUCED`` and the model's
    held-out loss is within ``LOSS_SLACK`` nats of (or below) that of a table counted on as many training tokens
    as the model saw; "partly" if the correlation is at least ``RHO_PARTLY``; else "not reproduced"."""
    if rho >= RHO_REPRODUCED and model_loss <= counted_loss + LOSS_SLACK:
        return "reproduced"
    return "partly" if rho >= RHO_PARTLY else "not reproduced"


def findings_rows(book) -> list[dict]:
    r = results(book)
    loss = r["losses"]
    return [{
        "claim": "A zero-layer transformer is a bigram table: T = W_U W_E",
        "paper": "W_U W_E approximates the bigram log-likelihood (section Zero-Layer Transformers)",
        "ours": (f"Spearman ρ = {r['rho']:.3f} with the corpus's bigram log-probabilities over {r['n_pairs']:,} "
                 f"frequent pairs; held-out loss {loss['zero-layer model']:.3f} nats against "
                 f"{loss['counted bigram, same data']:.3f} for a bigram table counted on as many tokens "
                 f"({loss['counted bigram']:.3f} on the whole split; unigram {loss['unigram']:.3f})"),
        "verdict": verdict(r["rho"], loss["zero-layer model"], loss["counted bigram, same data"]),
        "section": "03_zero_layer#zero-layer-bigrams",
    }]
