"""What every chapter of the book starts from: ``book = open_book()`` in its first (hidden) cell.

``Book`` holds the preset, its token streams, tokenizer and token counts, and hands out the 0/1/2-layer models
(published, else trained on the spot: the smoke preset in CI trains in seconds), their training logs, the
validation windows and Olsson et al.'s test sequences every chapter measures on, and the build's shared
results (``cache``). Opening it also sets up the notebook: gradients off, plotly figures rendered offline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from circuits.config import Preset, get_preset
from circuits.data.batches import iter_eval_batches
from circuits.data.stats import token_counts
from circuits.data.tokenizer import load_tokenizer, token_bytes
from circuits.data.tokens import preset_tokens
from circuits.metrics.olsson import random_token_samples, repeated_random_tokens
from circuits.model.published import model_dir
from circuits.model.transformer import AttnOnlyTransformer
from circuits.train.log import read_log
from circuits.train.runs import ensure_model
from circuits.viz.book import setup_plotly
from circuits.viz.tokens import show_bytes

from .cache import cached, model_key


@dataclass
class Book:
    preset: Preset
    tokens: dict[str, np.ndarray]  # "train", "validation": flat token streams
    tokenizer: object  # a transformers fast tokenizer
    counts: np.ndarray  # [d_vocab]: how often each token occurs in the train split (its first 20 M tokens)
    _models: dict[int, AttnOnlyTransformer] = field(default_factory=dict, repr=False)

    def model(self, n_layers: int) -> AttnOnlyTransformer:
        """The preset's ``n_layers`` model (loaded once per notebook)."""
        if n_layers not in self._models:
            self._models[n_layers] = ensure_model(n_layers, self.preset).requires_grad_(False)
        return self._models[n_layers]

    def use_models(self, models: dict[int, AttnOnlyTransformer]) -> "Book":
        """This book with other models in place of the preset's (one trained elsewhere, say: see
        ``model.interop.from_hooked_transformer``); every chapter's functions then measure them. Their vocabulary
        must be this book's tokenizer's."""
        for n, model in models.items():
            if model.cfg.n_layers != n or model.cfg.d_vocab != self.preset.d_vocab:
                raise ValueError(f"a {model.cfg.n_layers}-layer model of vocabulary {model.cfg.d_vocab} cannot stand in "
                                 f"for this book's {n}-layer model of vocabulary {self.preset.d_vocab}")
        return Book(self.preset, self.tokens, self.tokenizer, self.counts,
                    {**self._models, **{n: m.requires_grad_(False) for n, m in models.items()}})

    def log(self, n_layers: int) -> list[dict]:
        """The training log of that model: a row every few steps, with evaluations every ``eval_every``."""
        self.model(n_layers)
        return read_log(model_dir(n_layers, self.preset) / "log.jsonl")

    def decode(self, token: int) -> str:
        return self.tokenizer.decode([int(token)])

    def show(self, token: int) -> str:
        """A token as the reader sees it: spaces and newlines visible, bytes of a split character as ⟨e2⟩
        (``viz.tokens.show_bytes``)."""
        return show_bytes(token_bytes(self.tokenizer, token))

    def token_id(self, text: str) -> int | None:
        """The id of ``text`` if it is exactly one token of this tokenizer, else None."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    @property
    def bos(self) -> int:
        """The start token of Olsson et al.'s test sequences: the tokenizer's end-of-text token."""
        return int(self.tokenizer.eos_token_id)

    def windows(self, n: int, batch_size: int = 32) -> torch.Tensor:
        """``n`` validation windows of n_ctx + 1 tokens, evenly spaced over the split, [n, n_ctx + 1]."""
        batches = iter_eval_batches(self.tokens["validation"], min(batch_size, n), self.preset.n_ctx,
                                    max(1, n // min(batch_size, n)))
        return torch.cat(list(batches))[:n]

    def repeated(self, n_samples: int = 10, seed: int = 0) -> torch.Tensor:
        """Olsson et al.'s prefix-matching sequences: a start token, then 25 random tokens of middling frequency
        repeated 4 times (shorter where the context is), [n_samples, 1 + 4 * 25]."""
        return repeated_random_tokens(self.counts, n_samples=n_samples, bos=self.bos, seed=seed,
                                      n_ctx=self.preset.n_ctx)

    def samples(self, n_samples: int = 10, seed: int = 0) -> torch.Tensor:
        """Olsson et al.'s copying samples: 25 distinct random tokens of middling frequency, [n_samples, 25]."""
        return random_token_samples(self.counts, n_samples=n_samples, seed=seed)

    def cache(self, name: str, layers: tuple[int, ...], compute: Callable[[], dict]) -> dict:
        """``compute()``, shared by every chapter of this build that asks for ``name`` of these models."""
        key = model_key(*(self.model(n) for n in layers))
        return cached(self.preset.name, name, key, compute)


@functools.cache
def _book(preset_name: str) -> Book:
    preset = get_preset(preset_name)
    tokens = preset_tokens(preset)
    counts = token_counts(tokens["train"][:20_000_000], preset.d_vocab)  # as training counts them
    return Book(preset, tokens, load_tokenizer(preset.data.tokenizer), counts)


def open_book(preset_name: str | None = None) -> Book:
    """The ``Book`` of ``preset_name`` (default: ``$CIRCUITS_PRESET``), with the notebook set up for it."""
    import pandas as pd

    torch.set_grad_enabled(False)
    setup_plotly()
    pd.set_option("display.max_colwidth", None)
    return _book(get_preset(preset_name).name)
