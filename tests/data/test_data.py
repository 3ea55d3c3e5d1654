"""Corpus splits, tokenizers and token memmaps: fast, offline, on tiny data in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from circuits.data.corpus import EMBEDDED_PATH, load_corpus
from circuits.data.tokenizer import bpe_name, load_tokenizer, train_bpe
from circuits.data.batches import check_token_range, iter_eval_batches, sample_batch
from circuits.data.tokens import prepare_tokens

SAMPLE = ("It is a truth universally acknowledged, that a single man...\n\n"
          "def f(x: int) -> int:\n    return x ** 2  # squares\n\n"
          "Unicode: café, naïve, 日本語, emoji 🙂, tabs\tand  double  spaces.\n")


def write_corpus(path, n_docs=600):
    """A tiny corpus in the embedded layout; each document id comes in two pieces (#part0/1)."""
    texts = [f"Document {i}. " + "The cat sat on the mat. " * (i % 5 + 1) for i in range(n_docs)]
    cols = {"text": texts, "source": ["tiny"] * n_docs,
            "doc_id": [f"tiny/{i // 2}#part{i % 2}" for i in range(n_docs)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return texts


# ---------------------------------------------------------------- corpus


def test_split_is_deterministic_and_by_document(tmp_path):
    path = tmp_path / "c.parquet"
    write_corpus(path, n_docs=400)
    a = load_corpus(path=path, validation_fraction=0.2)
    b = load_corpus(path=path, validation_fraction=0.2)
    assert a["validation"]["doc_id"] == b["validation"]["doc_id"]
    train, val = set(a["train"]["doc_id"]), set(a["validation"]["doc_id"])
    assert train and val and not train & val
    assert len(train) + len(val) == 400
    base = lambda ids: {d.split("#")[0] for d in ids}  # noqa: E731
    assert not base(train) & base(val), "pieces of one document must stay in one split"
    # the assignment depends on the id only, not on row order
    table = pq.read_table(path)
    pq.write_table(table.take(list(range(399, -1, -1))), tmp_path / "reversed.parquet")
    c = load_corpus(path=tmp_path / "reversed.parquet", validation_fraction=0.2)
    assert set(c["validation"]["doc_id"]) == val


def test_embedded_corpus_splits():
    if not EMBEDDED_PATH.exists():
        pytest.skip("embedded corpus not built")
    d = load_corpus()
    assert len(d["validation"]) > 100 and len(d["train"]) > 30 * len(d["validation"])
    assert not set(d["train"]["doc_id"]) & set(d["validation"]["doc_id"])


def test_empty_and_missing_corpus(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "doc_id": pa.array([], pa.string())}),
                   empty)
    with pytest.raises(ValueError, match="empty.parquet"):
        load_corpus(path=empty)
    blank = tmp_path / "blank.parquet"
    pq.write_table(pa.table({"text": ["", ""], "doc_id": ["a", "b"]}), blank)
    with pytest.raises(ValueError, match="blank.parquet"):
        load_corpus(path=blank)
    with pytest.raises(FileNotFoundError, match="build_corpus.py"):
        load_corpus(path=tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("wikipedia")


@pytest.mark.parametrize("layout", ["folder", "jsonl"])
def test_openwebtext_code_path_on_local_data(tmp_path, layout):
    texts = [f"web page {i}: some text about topic {i % 7}." for i in range(300)]
    if layout == "folder":  # like the hub dataset: parquet shards with a text column only
        (tmp_path / "owt").mkdir()
        pq.write_table(pa.table({"text": texts}), tmp_path / "owt" / "train-00000.parquet")
        path = tmp_path / "owt"
    else:
        path = tmp_path / "owt.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    d = load_corpus("openwebtext", path=path, validation_fraction=0.1,
                    cache_dir=str(tmp_path / "cache"))
    assert len(d["train"]) + len(d["validation"]) == 300
    assert 5 < len(d["validation"]) < 60
    assert not set(d["train"]["doc_id"]) & set(d["validation"]["doc_id"])
    again = load_corpus("openwebtext", path=path, validation_fraction=0.1,
                        cache_dir=str(tmp_path / "cache"))
    assert again["validation"]["text"] == d["validation"]["text"]


# ---------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("name", ["bpe4k", "bpe8k", "gpt2"])
def test_tokenizer_round_trip(name):
    tok = load_tokenizer(name)
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.eos_token_id == {"bpe4k": 0, "bpe8k": 0, "gpt2": 50256}[name]
    assert len(tok) == {"bpe4k": 4096, "bpe8k": 8192, "gpt2": 50257}[name]


def test_gpt2_known_ids():
    assert load_tokenizer("gpt2").encode("Hello world") == [15496, 995]


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="bpe4k"):
        load_tokenizer("llama")


def test_bpe_names():
    assert bpe_name(8192) == "bpe8k" and bpe_name(4096) == "bpe4k"
    with pytest.raises(ValueError, match="multiple of 1024"):
        bpe_name(5000)


def test_untrained_bpe_size_names_the_command():
    with pytest.raises(FileNotFoundError, match="--vocab-size 3072"):
        load_tokenizer("bpe3k")


def test_train_bpe_small():
    tok = train_bpe([SAMPLE] * 20, vocab_size=300)
    assert tok.token_to_id("<|endoftext|>") == 0
    assert tok.decode(tok.encode(SAMPLE).ids) == SAMPLE


# ---------------------------------------------------------------- token memmaps


def test_prepare_tokens_round_trip_and_cache(tmp_path):
    path = tmp_path / "c.parquet"
    write_corpus(path)
    out = tmp_path / "tokens"
    arrays = prepare_tokens("embedded", "bpe4k", out_dir=out, corpus_path=path)
    tok = load_tokenizer("bpe4k")
    splits = load_corpus(path=path)
    for split, arr in arrays.items():
        assert arr.dtype == np.uint16
        docs = splits[split]["text"]
        assert tok.decode(np.asarray(arr).tolist()) == "".join(d + "<|endoftext|>" for d in docs)
        assert json.loads((out / f"{split}.json").read_text())["count"] == len(arr)
    stamp = (out / "train.bin").stat().st_mtime_ns
    prepare_tokens("embedded", "bpe4k", out_dir=out, corpus_path=path)  # cached: untouched
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    write_corpus(path, n_docs=620)  # a changed corpus is re-encoded
    again = prepare_tokens("embedded", "bpe4k", out_dir=out, corpus_path=path)
    assert len(again["train"]) + len(again["validation"]) > len(arrays["train"]) + len(
        arrays["validation"])


def test_out_of_vocab_ids_raise(tmp_path):
    path = tmp_path / "c.parquet"
    write_corpus(path)
    out = tmp_path / "tokens"
    arrays = prepare_tokens("embedded", "bpe4k", out_dir=out, corpus_path=path)
    bad = np.memmap(out / "train.bin", dtype=np.uint16, mode="r+", shape=arrays["train"].shape)
    bad[3] = 5000  # >= 4096: would index past W_E
    bad.flush()
    with pytest.raises(ValueError, match="5000"):
        prepare_tokens("embedded", "bpe4k", out_dir=out, corpus_path=path)
    with pytest.raises(ValueError):
        check_token_range(np.array([1, 2, 61]), d_vocab=61)


def test_sample_batch_is_deterministic():
    tokens = np.arange(1000, dtype=np.uint16)
    a = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(1))
    b = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(1))
    assert a.dtype == torch.long and a.shape == (4, 17) and torch.equal(a, b)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 16, dtype=torch.long))  # contiguous
    first = list(iter_eval_batches(tokens, 4, 16, 3))
    assert len(first) == 3 and all(x.shape == (4, 17) for x in first)
    assert all(torch.equal(x, y) for x, y in zip(first, iter_eval_batches(tokens, 4, 16, 3)))


def test_role_markup_counts_restructuredtext_names_after_common_words():
    from circuits.data.stats import role_markup

    texts = ["Use the :class:`Foo` and a :func:`bar`.", "the :: operator", "see the:class:`x`", "an :mod:`os`"]
    assert role_markup(texts) == 3
