"""The corpus and the models (book chapter 02_models): what the models were trained on, how well they predict
held-out text, and how they depart from the paper's. Shared with the induction chapter and the findings table:
``validation_losses`` (per-token losses on the validation windows, from which the held-out loss, the loss by
position and the in-context-learning score all come)."""

from __future__ import annotations

import json
import math
from bisect import bisect_left

import numpy as np
import torch

from circuits.data.corpus import EMBEDDED_PATH, load_corpus
from circuits.data.stats import code_fraction, document_lengths, role_markup, source_table
from circuits.metrics.losses import per_token_loss
from circuits.metrics.olsson import ICL_BAND, ICL_WINDOWS, icl_positions, in_context_learning_score
from circuits.train.log import eval_rows

from .context import Book

LAYERS = (0, 1, 2)
# the paper's models, for the table of departures (Elhage et al. 2021, "Model details"; PAPER.md)
PAPER_MODEL = {"residual width d_model": "768", "heads per layer × d_head": "12 × 64", "context": "2,048 tokens",
               "vocabulary": "≈ 50,000 tokens", "LayerNorm": "yes (folded in for the analysis)",
               "biases": "yes", "positions": "added to queries and keys only",
               "data": "Common Crawl, internet books and ≈ 10 % Python code (not public)",
               "training tokens": "not stated",
               "in-context-learning positions": "token 500 against token 50",
               "initialisation and optimiser": "not stated",
               "W_E and W_U": "not stated",
               "thresholds for head kinds": "none stated: heads are picked from their scores"}


def validation_losses(book: Book, n_layers: int) -> dict:
    """Per-token next-token losses of the ``n_layers`` model on ``ICL_WINDOWS`` validation windows (spread over the
    whole split): their mean (the held-out loss), the mean at each position, and the in-context-learning score
    with its standard error over windows."""
    def compute() -> dict:
        model = book.model(n_layers)
        windows = book.windows(ICL_WINDOWS)
        losses = torch.cat([per_token_loss(model, w) for w in windows.split(32)])  # [window, pos]
        icl = torch.tensor([in_context_learning_score(losses[i:i + 1]) for i in range(len(losses))])
        return {"windows": len(losses), "mean": float(losses.mean()), "by_position": losses.mean(0).numpy(),
                "icl": in_context_learning_score(losses), "icl_se": float(icl.std() / math.sqrt(len(icl))),
                "icl_positions": list(icl_positions(losses.shape[1] + 1))}
    return book.cache(f"validation-losses-{n_layers}", (n_layers,), compute)


def corpus_summary(book: Book) -> dict:
    """What the corpus holds, by source, and the token streams' sizes."""
    def compute() -> dict:
        corpus = load_corpus(book.preset.data.corpus)
        table = source_table(corpus)
        licences = {}
        if book.preset.data.corpus == "embedded":
            manifest = json.loads((EMBEDDED_PATH.parent / "MANIFEST.json").read_text())
            licences = {name: info.get("licence", "?") for name, info in manifest["sources"].items()}
        split_bytes = {s: sum(len(t.encode("utf-8")) for t in corpus[s]["text"]) for s in ("train", "validation")}
        return {"sources": [dict(r, licence=licences.get(r["source"], "?")) for r in table],
                "code_fraction": code_fraction(table), "documents": sum(r["documents"] for r in table),
                "validation_documents": len(corpus["validation"]),
                "bytes": sum(r["bytes"] for r in table), "doc_lengths": document_lengths(corpus["train"]),
                "role_markup": role_markup(corpus["train"]["text"]),
                "tokens": {s: int(len(book.tokens[s])) for s in ("train", "validation")},
                "bytes_per_token": {s: split_bytes[s] / len(book.tokens[s]) for s in ("train", "validation")}}
    return book.cache("corpus", (), compute)


def model_table(book: Book) -> list[dict]:
    """One row per model: its shape, parameters, training tokens and held-out loss."""
    rows = []
    for n in LAYERS:
        cfg, model = book.preset.model_config(n), book.model(n)
        rows.append({"layers": n, "parameters": sum(p.numel() for p in model.parameters()),
                     "training tokens": book.preset.train_config(n).total_tokens,
                     "held-out loss": validation_losses(book, n)["mean"], "d_model": cfg.d_model,
                     "heads": cfg.n_heads, "d_head": cfg.d_head, "context": cfg.n_ctx, "vocabulary": cfg.d_vocab})
    return rows


def departures(book: Book) -> list[dict]:
    """Our models against the paper's, line by line (the findings chapter's "Departures from the paper")."""
    p = book.preset
    tokens = ", ".join(f"{n}L {p.train_config(n).total_tokens / 1e6:,.0f} M" for n in LAYERS)
    early, late = icl_positions(p.n_ctx + 1)  # as in_context_learning_score reads n_ctx per-token losses
    late = min(late, p.n_ctx - 1 - ICL_BAND)
    tc, cfg = p.train_config(2), p.model_config(2)
    data = {"embedded": "the book's own corpus: public-domain and permissively licensed books, documentation "
                        "and fortunes, with Python code from the CPython standard library",
            "openwebtext": "OpenWebText (web pages, no code)"}.get(p.data.corpus, f"local corpus {p.data.corpus}")
    vocab = {"bpe4k": "a byte-level BPE trained on the corpus", "gpt2": "GPT-2's"}.get(p.data.tokenizer,
                                                                                   p.data.tokenizer)
    ours = {"residual width d_model": f"{p.d_model}", "heads per layer × d_head": f"{p.n_heads} × {p.d_head}",
            "context": f"{p.n_ctx:,} tokens", "vocabulary": f"{p.d_vocab:,} tokens, {vocab}",
            "LayerNorm": "none (every decomposition is exact)", "biases": "none",
            "positions": "added to queries and keys only (Shortformer)", "data": data,
            "training tokens": f"{tokens} (longer for deeper models)",
            "in-context-learning positions": f"token {late} against token {early}, each averaged with the "
                                             f"{ICL_BAND} tokens either side: the paper's scaled to our context",
            "initialisation and optimiser": f"W_E and W_pos with standard deviation "
                                            f"{cfg.embed_init_std or cfg.init_std:g} (GPT-2: 0.02); AdamW, learning "
                                            f"rate {tc.lr:g}, weight decay {tc.weight_decay:g}",
            "W_E and W_U": "separate matrices (untied)",
            "thresholds for head kinds": "ours, stated with each measurement"}
    return [{"": key, "paper": PAPER_MODEL[key], "ours": ours[key]} for key in PAPER_MODEL]


def _at_tokens(rows: list[dict], tokens: float, key: str) -> float:
    """``key`` of the evaluation rows at ``tokens`` training tokens, interpolated linearly in log(tokens)."""
    ev = eval_rows(rows)
    xs = [r["tokens"] for r in ev]
    if not xs[0] <= tokens <= xs[-1]:
        raise ValueError(f"{tokens:,.0f} tokens lies outside the log ({xs[0]:,} to {xs[-1]:,})")
    i = bisect_left(xs, tokens)
    if xs[i] == tokens:
        return float(ev[i][key])
    a, b = ev[i - 1], ev[i]
    w = (math.log(tokens) - math.log(a["tokens"])) / (math.log(b["tokens"]) - math.log(a["tokens"]))
    return float(a[key] + w * (b[key] - a[key]))


def equal_token_losses(book: Book) -> list[dict]:
    """Each model against the next deeper one after the same number of training tokens: at the end of the
    shallower model's run, its logged validation loss and the deeper model's, read from their training logs
    (both on the same validation windows). The deeper model is still mid-run (higher learning rate, no
    cool-down), which favours the shallower one."""
    out = []
    for small, large in zip(LAYERS, LAYERS[1:]):
        rows_s, rows_l = book.log(small), book.log(large)
        tokens = eval_rows(rows_s)[-1]["tokens"]
        out.append({"tokens": tokens, "shallow": small, "deep": large,
                    "shallow_loss": _at_tokens(rows_s, tokens, "val_loss"),
                    "deep_loss": _at_tokens(rows_l, tokens, "val_loss"),
                    "shallow_icl": _at_tokens(rows_s, tokens, "icl_score"),
                    "deep_icl": _at_tokens(rows_l, tokens, "icl_score")})
    return out


def crossings(rows_a: list[dict], rows_b: list[dict]) -> list[float]:
    """Training-token counts at which model b's logged validation loss is above model a's, over the
    evaluations both logged."""
    a = {r["tokens"]: r["val_loss"] for r in eval_rows(rows_a)}
    return [r["tokens"] for r in eval_rows(rows_b) if r["tokens"] in a and r["val_loss"] > a[r["tokens"]]]


def boundary_fraction(book: Book, n: int = ICL_WINDOWS) -> float:
    """The fraction of ``n`` validation windows that hold a document boundary (the end-of-text token between
    their first and last token): in those, late tokens cannot use the early context."""
    windows = book.windows(n)
    return float((windows[:, 1:] == book.bos).any(1).float().mean())


def findings_rows(book: Book) -> list[dict]:
    """The claim of this chapter: more layers, lower loss, both at the end of training and at equal tokens."""
    held = {n: validation_losses(book, n)["mean"] for n in LAYERS}
    equal = equal_token_losses(book)
    ordered = held[2] < held[1] < held[0]
    equal_ok = all(e["deep_loss"] < e["shallow_loss"] for e in equal)
    at = "; ".join(f"at {e['tokens'] / 1e6:.0f} M tokens {e['deep']}L {e['deep_loss']:.3f} against "
                   f"{e['shallow']}L {e['shallow_loss']:.3f}" for e in equal)
    ours = (f"{held[2]:.3f} < {held[1]:.3f} < {held[0]:.3f} nats after training" if ordered else
            f"2L {held[2]:.3f}, 1L {held[1]:.3f}, 0L {held[0]:.3f} nats after training") + f"; {at}"
    verdict = "reproduced" if ordered and equal_ok else "partly" if ordered or equal_ok else "not reproduced"
    return [{"claim": "More layers predict held-out text better", "paper": "yes (its models' losses)",
             "ours": ours, "verdict": verdict, "section": "02_models#models-loss",
             "rule": "reproduced if the held-out losses fall with depth after training and, at the end of each "
                     "shallower model's run, the deeper model's logged loss after the same tokens is lower; "
                     "partly if only one of the two holds"}]


def doc_length_quantiles(summary: dict) -> dict[str, float]:
    lengths = np.asarray(summary["doc_lengths"])
    return {q: float(np.quantile(lengths, v)) for q, v in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))}
