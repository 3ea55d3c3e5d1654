"""A real ``Book`` over tiny random models and random token streams, for the chapters' findings tests."""

import dataclasses

import numpy as np

from circuits.config import get_preset
from circuits.findings.context import Book

from ..analysis.models import make_model


class StubTokenizer:
    eos_token_id = 0

    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def tiny_book(cfg, name: str, layers=(2,)) -> Book:
    """A book of the smoke preset's kind at ``cfg``'s sizes, with a random model for each of ``layers``
    (set ``CIRCUITS_CACHE`` to a temporary folder first: its results are cached like a build's)."""
    preset = dataclasses.replace(get_preset("smoke"), name=name, d_model=cfg.d_model, n_heads=cfg.n_heads,
                                 d_head=cfg.d_head, n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab)
    rng = np.random.default_rng(0)
    tokens = {s: rng.integers(0, cfg.d_vocab, size=5_000).astype(np.uint16) for s in ("train", "validation")}
    book = Book(preset, tokens, StubTokenizer(), np.bincount(tokens["train"], minlength=cfg.d_vocab))
    for n in layers:
        book._models[n] = make_model(cfg, n_layers=n, init_std=0.1, seed=0 if n == 2 else n)
    return book
