"""The corpus and the models (book chapter 02_models): what the models were trained on, how well they predict
held-out text, and how they depart from the paper's. Shared with the induction chapter and the findings table:
``validation_losses`` (per-token losses on the validation windows, from which the held-out loss, the loss by
position and the in-context-learning score all come)."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from circuits.data.corpus import EMBEDDED_PATH, load_corpus
from circuits.data.stats import code_fraction, document_lengths, source_table
from circuits.metrics.losses import per_token_loss
from circuits.metrics.olsson import ICL_WINDOWS, icl_positions, in_context_learning_score

from .context import Book

LAYERS = (0, 1, 2)
# the paper's models, for the table of departures (Elhage et al. 2021, "Model details"; PAPER.md)
PAPER_MODEL = {"residual width d_model": "768", "heads per layer × d_head": "12 × 64", "context": "2,048 tokens",
               "vocabulary": "≈ 50,000 tokens", "LayerNorm": "yes (folded in for the analysis)",
               "biases": "yes", "positions": "added to queries and keys only",
               "data": "Common Crawl, internet books and ≈ 10 % Python code (not public)",
               "training tokens": "billions"}


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
    ours = {"residual width d_model": f"{p.d_model}", "heads per layer × d_head": f"{p.n_heads} × {p.d_head}",
            "context": f"{p.n_ctx:,} tokens", "vocabulary": f"{p.d_vocab:,} tokens ({p.data.tokenizer})",
            "LayerNorm": "none (every decomposition is exact)", "biases": "none",
            "positions": "added to queries and keys only (Shortformer)",
            "data": f"{p.data.corpus} corpus" + (" (public-domain and permissive prose, Python code)"
                                                 if p.data.corpus == "embedded" else ""),
            "training tokens": tokens}
    return [{"": key, "paper": PAPER_MODEL[key], "ours": ours[key]} for key in PAPER_MODEL]


def findings_rows(book: Book) -> list[dict]:
    """The claim of this chapter: more layers, lower loss."""
    held = {n: validation_losses(book, n)["mean"] for n in LAYERS}
    ordered = held[2] < held[1] < held[0]
    return [{"claim": "More layers predict better: 2L < 1L < 0L held-out loss", "paper": "yes (its models' losses)",
             "ours": f"{held[2]:.3f} < {held[1]:.3f} < {held[0]:.3f} nats" if ordered else
                     f"2L {held[2]:.3f}, 1L {held[1]:.3f}, 0L {held[0]:.3f} nats",
             "verdict": "reproduced" if ordered else "not reproduced", "section": "02_models#models-loss"}]


def doc_length_quantiles(summary: dict) -> dict[str, float]:
    lengths = np.asarray(summary["doc_lengths"])
    return {q: float(np.quantile(lengths, v)) for q, v in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))}
