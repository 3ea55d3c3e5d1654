"""Token streams: each split of a corpus encoded once into a flat memmap, documents joined by eos.

``data/tokens/<corpus>-<tokenizer>/<split>.bin`` holds the ids (uint16 when the vocabulary fits,
else uint32) and ``<split>.json`` says what they were built from; a matching sidecar means the
work is skipped. Training windows are cut from these arrays by ``sample_batch`` and
``iter_eval_batches`` (``circuits.data.batches``). ``preset_tokens`` gives a preset's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from circuits.config import Preset
from circuits.paths import data_dir

from .batches import check_token_range
from .tokenizer import TOKENIZER_DIR, load_tokenizer


TOKENS_DIR = data_dir() / "tokens"
FORMAT_VERSION = 1  # bump when the encoding changes, to invalidate old caches
CHUNK_DOCS = 1000  # documents per encode_batch call: big enough to keep both cores busy


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_sha256(name: str) -> str:
    """Hash of the committed tokenizer files, so a retrained ``bpe4k`` invalidates the cache."""
    files = sorted((TOKENIZER_DIR / name).glob("*.json")) + sorted(
        (TOKENIZER_DIR / name).glob("*.txt"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _encode_split(texts, tok, eos: int, dtype, path: Path, desc: str) -> tuple[int, int]:
    """Stream the encoded documents (each followed by eos) to ``path``; (tokens, documents)."""
    backend = tok.backend_tokenizer
    count = docs = 0
    with open(path, "wb") as f, tqdm(total=len(texts), desc=desc, unit="doc") as bar:
        for start in range(0, len(texts), CHUNK_DOCS):
            batch = texts[start:start + CHUNK_DOCS]["text"]
            encoded = backend.encode_batch(batch, add_special_tokens=False)
            ids = []
            for enc in encoded:
                ids.extend(enc.ids)
                ids.append(eos)
            arr = np.asarray(ids, dtype=np.int64)
            if arr.size and (arr.min() < 0 or arr.max() >= np.iinfo(dtype).max + 1):
                raise ValueError(f"token id {arr.max()} does not fit in {np.dtype(dtype).name}")
            f.write(arr.astype(dtype).tobytes())
            count += arr.size
            docs += len(batch)
            bar.update(len(batch))
    return count, docs


def _sidecar_matches(bin_path: Path, meta_path: Path, expected: dict) -> bool:
    if not (bin_path.exists() and meta_path.exists()):
        return False
    meta = json.loads(meta_path.read_text())
    if any(meta.get(k) != v for k, v in expected.items()):
        return False
    return bin_path.stat().st_size == meta["count"] * np.dtype(meta["dtype"]).itemsize


def load_tokens(directory: Path, split: str) -> np.memmap:
    """The memmap of one prepared split (read-only), as described by its sidecar."""
    meta = json.loads((directory / f"{split}.json").read_text())
    return np.memmap(directory / f"{split}.bin", dtype=meta["dtype"], mode="r",
                     shape=(meta["count"],))


def prepare_tokens(corpus: str, tokenizer: str, out_dir: str | Path | None = None,
                   corpus_path: str | Path | None = None, num_proc: int | None = None
                   ) -> dict[str, np.memmap]:
    """Encode every split of ``corpus`` with ``tokenizer`` into memmaps; cached on disk.

    ``corpus`` and ``corpus_path`` are passed to ``load_corpus``; ``out_dir`` defaults to
    ``data/tokens/<corpus>-<tokenizer>``. Each document is followed by ``eos_token_id``.
    Returns ``{"train": memmap, "validation": memmap}``. Raises ``ValueError`` if any id is
    outside the tokenizer's vocabulary.
    """
    # imported here, so that load_tokens works where HF datasets is not installed (a bare GPU box)
    from .corpus import EMBEDDED_PATH, load_corpus

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # the batch API uses both cores
    tok = load_tokenizer(tokenizer)
    d_vocab = len(tok)
    dtype = np.uint16 if d_vocab <= 1 << 16 else np.uint32
    out = Path(out_dir) if out_dir is not None else TOKENS_DIR / f"{corpus}-{tokenizer}"
    # what the cache depends on: the exact corpus bytes (or hub id), tokenizer files, format
    if corpus == "embedded" or (corpus_path is not None and Path(corpus_path).is_file()):
        source_file = Path(corpus_path) if corpus_path is not None else EMBEDDED_PATH
        if not source_file.exists():  # let load_corpus raise its explanatory error
            load_corpus(corpus, path=corpus_path)
        corpus_id = _sha256_file(source_file)
    else:
        corpus_id = str(corpus_path or "hub")
    expected = {"format": FORMAT_VERSION, "corpus": corpus, "corpus_sha256": corpus_id,
                "tokenizer": tokenizer, "tokenizer_sha256": tokenizer_sha256(tokenizer),
                "dtype": np.dtype(dtype).name, "eos_token_id": tok.eos_token_id}
    splits = ("train", "validation")
    result, todo = {}, []
    for split in splits:
        if _sidecar_matches(out / f"{split}.bin", out / f"{split}.json", expected):
            result[split] = load_tokens(out, split)
        else:
            todo.append(split)
    if todo:
        out.mkdir(parents=True, exist_ok=True)
        data = load_corpus(corpus, path=corpus_path, num_proc=num_proc)
        for split in todo:
            tmp = out / f"{split}.bin.tmp"
            count, docs = _encode_split(data[split], tok, tok.eos_token_id, dtype, tmp,
                                        desc=f"tokenizing {corpus}/{split} with {tokenizer}")
            os.replace(tmp, out / f"{split}.bin")  # atomic: a crash never leaves a half file
            meta = {**expected, "count": count, "documents": docs, "d_vocab": d_vocab}
            (out / f"{split}.json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(out / f"{split}.json.tmp", out / f"{split}.json")
            result[split] = load_tokens(out, split)
    for split in splits:
        check_token_range(result[split], d_vocab, what=f"{out / split}.bin")
    return result


def preset_tokens(preset: Preset) -> dict[str, np.memmap]:
    """Token memmaps of the preset's corpus and tokenizer (built and cached on first use)."""
    return prepare_tokens(preset.data.corpus, preset.data.tokenizer, corpus_path=preset.data.path)
