"""Text corpora as HF ``datasets``, split into train/validation by document.

Two sources:

- ``"embedded"`` (default): ``data/corpus/corpus.parquet``, committed to the repository and
  rebuilt by ``python scripts/build_corpus.py`` (prose from permissive Debian packages plus ~15 %
  CPython standard-library code; ``data/corpus/MANIFEST.json`` says exactly what).
- ``"openwebtext"``: the paper's kind of data, from a local copy at ``path`` (parquet, arrow or text files:
  ``$CIRCUITS_DATA``), else from the hub (``Skylion007/openwebtext``); only ever when asked for by name.

The split is a fixed function of each document's id (a hash, not a shuffle), so it is the same
on every machine, for every library version, and however the rows are ordered.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from circuits.paths import data_dir

EMBEDDED_PATH = data_dir() / "corpus" / "corpus.parquet"
OPENWEBTEXT_HUB_ID = "Skylion007/openwebtext"
SOURCES = ("embedded", "openwebtext")


def in_validation(doc_id: str, validation_fraction: float, seed: int = 0) -> bool:
    """Whether a document belongs to the validation split: its hash falls below the fraction.

    Pieces of one long document (``id#part03``) share the hash of ``id``, so they stay together.
    """
    base = doc_id.split("#", 1)[0]
    digest = hashlib.sha256(f"{seed}:{base}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < validation_fraction * 2**64


def _split(ds: datasets.Dataset, id_column: str, validation_fraction: float, seed: int,
           num_proc: int | None = None) -> datasets.DatasetDict:
    """Train/validation ``DatasetDict`` of ``ds`` by document id (or text hash if no id column)."""

    def flags(batch):
        return {"_val": [in_validation(x, validation_fraction, seed) for x in batch[id_column]]}

    marked = ds.map(flags, batched=True, batch_size=10_000, num_proc=num_proc,
                    desc="assigning documents to splits")
    return datasets.DatasetDict({
        "train": marked.filter(lambda v: [not x for x in v], input_columns="_val", batched=True,
                               num_proc=num_proc).remove_columns("_val"),
        "validation": marked.filter(lambda v: v, input_columns="_val", batched=True,
                                    num_proc=num_proc).remove_columns("_val"),
    })


def _load_embedded(path: Path) -> datasets.Dataset:
    if not path.exists():
        raise FileNotFoundError(
            f"corpus file {path} not found; regenerate it with `python scripts/build_corpus.py` "
            "(or check out data/corpus/ from git)")
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise ValueError(f"corpus file {path} has no 'text' column (columns: {table.column_names})")
    if table.num_rows == 0 or not any(t for t in table.column("text").to_pylist()):
        raise ValueError(f"corpus file {path} is empty: it has no documents with any text")
    if "doc_id" not in table.column_names:  # fall back to row numbers: stable for one file
        table = table.append_column("doc_id", [[str(i) for i in range(table.num_rows)]])
    # in memory (about 50 MB): no cache files are written anywhere
    return datasets.Dataset(table)


LOCAL_KINDS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv",
               ".txt": "text", ".xz": "text"}


def _load_local(path: Path) -> datasets.Dataset:
    """A local copy: one file, a folder saved by ``Dataset.save_to_disk``, or a folder of parquet, arrow, json or
    text files (a text file is one document, as in OpenWebText's own archive)."""
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        ds = datasets.load_from_disk(str(path))
        return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix in LOCAL_KINDS)
    kinds = {LOCAL_KINDS.get(f.suffix) for f in files}
    if not files or None in kinds or len(kinds) != 1:
        raise ValueError(f"cannot read {path}: expected one kind of {sorted(set(LOCAL_KINDS))} files "
                         f"(found {sorted({f.suffix for f in files}) or 'none'})")
    kind = kinds.pop()
    extra = {"sample_by": "document"} if kind == "text" else {}
    return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train", **extra)


def _load_openwebtext(path: str | Path | None, cache_dir: str | None) -> datasets.Dataset:
    """OpenWebText (or any dataset with a ``text`` column): a local copy at ``path``, else the hub."""
    if path is not None:
        local = Path(path)
        if not local.exists():
            raise FileNotFoundError(f"no local copy of OpenWebText at {local} (from $CIRCUITS_DATA or --data)")
        ds = _load_local(local)
    else:
        ds = _load_openwebtext_hub(cache_dir)
    if "text" not in ds.column_names:
        raise ValueError(f"dataset {path or OPENWEBTEXT_HUB_ID} has no 'text' column (columns: {ds.column_names})")
    if len(ds) == 0:
        raise ValueError(f"dataset {path or OPENWEBTEXT_HUB_ID} is empty: it has no documents")
    return ds


def _load_openwebtext_hub(cache_dir: str | None) -> datasets.Dataset:
    """OpenWebText from the Hugging Face hub: the one download of the project, on request only. Without a
    network (or with ``HF_DATASETS_OFFLINE=1``) the error names both ways on."""
    try:
        try:
            return datasets.load_dataset(OPENWEBTEXT_HUB_ID, split="train", cache_dir=cache_dir)
        except RuntimeError as err:
            # datasets >= 4 refuses repositories that still hold a loading script (OpenWebText did in 2025);
            # the hub's automatic parquet export is the documented way round, but for large datasets it may
            # hold only the first few GB, hence the warning
            if "scripts are no longer supported" not in str(err):
                raise
            warnings.warn(f"{OPENWEBTEXT_HUB_ID} has a loading script; using its refs/convert/parquet export, "
                          "which may be partial for large datasets", stacklevel=3)
            return datasets.load_dataset(OPENWEBTEXT_HUB_ID, split="train", cache_dir=cache_dir,
                                         revision="refs/convert/parquet")
    except (ConnectionError, OSError, ValueError) as err:
        raise FileNotFoundError(
            f"OpenWebText is not available: no local copy was named and the hub ({OPENWEBTEXT_HUB_ID}) could not "
            f"be reached ({type(err).__name__}: {err}). Name a local copy (parquet, arrow or text files) with "
            f"CIRCUITS_DATA=/path/to/openwebtext or `--data /path/to/openwebtext`, or run where the hub is "
            f"reachable; to check the pipeline without it, CIRCUITS_DATA=embedded trains on the embedded corpus "
            f"with the preset's tokenizer") from err


def _text_ids(batch):
    """A content hash as the document id: OpenWebText has no id column of its own."""
    return {"doc_id": [hashlib.sha256(t.encode("utf-8")).hexdigest()[:16] for t in batch["text"]]}


def load_corpus(source: str = "embedded", path: str | Path | None = None,
                validation_fraction: float = 0.02, seed: int = 0,
                cache_dir: str | None = None, num_proc: int | None = None
                ) -> datasets.DatasetDict:
    """The corpus ``source`` as a ``DatasetDict`` with ``train`` and ``validation`` splits.

    Each row is one document with at least a ``text`` and a ``doc_id`` column. ``path`` overrides
    where the data is read from (a parquet file for ``embedded``; a local copy, file or folder, for
    ``openwebtext``, which otherwise comes from the hub). ``seed`` salts the hash that assigns documents to splits; the assignment is
    otherwise fixed. ``cache_dir`` and ``num_proc`` are passed to ``datasets`` for OpenWebText.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown corpus source {source!r}; choose one of {SOURCES}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if source == "embedded":
        ds = _load_embedded(Path(path) if path is not None else EMBEDDED_PATH)
    else:
        ds = _load_openwebtext(path, cache_dir)
        if "doc_id" not in ds.column_names:
            ds = ds.map(_text_ids, batched=True, batch_size=10_000, num_proc=num_proc,
                        desc="hashing documents")
    splits = _split(ds, "doc_id", validation_fraction, seed, num_proc)
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"the {name} split of {path or source} is empty "
                             f"({len(ds)} documents, validation_fraction={validation_fraction})")
    return splits
