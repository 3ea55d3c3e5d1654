"""Regenerate the embedded corpus: ``data/corpus/corpus.parquet`` and ``MANIFEST.json``.

Sources are Debian packages with permissive or public-domain licences (see ``SOURCES``), fetched
with ``apt-get download`` into ``.deb-cache/`` and unpacked with ``dpkg-deb -x``; code is the
CPython 3.11 standard library from Debian's ``libpython3.11-stdlib``, sampled so that it is about
``CODE_FRACTION`` of the text by bytes. Debian replaces versions over time, so a rebuild later
may differ: the manifest records the exact package versions and hashes of what was built.

    python scripts/build_corpus.py            # uses cached .debs when present
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from corpus_extract import austen_chapters, html_to_text, osis_chapters, read_rdb, sword_books  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".deb-cache"
OUT = ROOT / "data" / "corpus"
MAX_DOC = 100_000  # characters; longer documents are split at paragraph boundaries
CODE_FRACTION = 0.15  # target share of code in the corpus, by bytes


# ---------------------------------------------------------------- per-source extractors
# Each takes the unpacked package root and yields (doc_id suffix, text).

def janeaustenr(root):
    novels = read_rdb(next(root.rglob("data/Rdata.rdb")))
    for novel, lines in sorted(novels.items()):
        for k, (_, text) in enumerate(austen_chapters(lines)):
            yield f"{novel}/ch{k:02d}", text


def web_bible(root):
    for osis in sword_books(next(root.rglob("engWEB2015eb"))):
        yield from osis_chapters(osis)


def jargon(root):
    text = gzip.decompress(next(root.rglob("jargon.txt.gz")).read_bytes()).decode("utf-8")
    text = re.sub(r"(?m)^ {3}", "", text)  # the whole file is indented by three spaces
    yield from split_long(text, 30_000, "part")


def fortunes(root):
    for path in sorted((root / "usr/share/games/fortunes").iterdir()):
        if path.suffix in (".dat", ".u8") or path.name in ("ascii-art", "art"):
            continue  # index files, symlinks, pictures rather than text
        raw = re.sub(r".\x08", "", path.read_text("utf-8", "replace"))  # undo overstriking
        for k, quote in enumerate(re.split(r"(?m)^%\n", raw)):
            yield f"{path.name}/{k:04d}", quote


def html_tree(subdirs, glob="*.html",
              exclude=r"(^|/)_modules/|(genindex|search|py-modindex|print|toc)\.html$"):
    """Extractor for a tree of HTML pages under any of ``subdirs``."""
    def extract(root):
        for sub in subdirs:
            base = next(p for p in root.rglob(sub) if p.is_dir())
            for path in sorted(base.rglob(glob)):
                if not re.search(exclude, str(path.relative_to(base))):
                    html = path.read_text("utf-8", "replace")
                    if "http-equiv=\"refresh\"" in html[:2000]:
                        continue  # redirect stubs
                    yield str(path.relative_to(base.parent)), html_to_text(html)
    return extract


def python_docs(root):
    base = next(root.rglob("html/_sources"))
    for path in sorted(base.rglob("*.rst.txt")):
        yield str(path.relative_to(base)), path.read_text("utf-8", "replace")


def cpython_stdlib(root):
    base = root
    skip = re.compile(r"(^|/)(tests?|idle_test|encodings|idlelib|site-packages|dist-packages|"
                      r"pydoc_data|ensurepip|turtledemo|__phello__|config-[^/]*)/|(^|/)test_[^/]*$")
    for path in sorted(base.rglob("*.py")):
        rel = str(path.relative_to(base))
        if not skip.search(rel) and not path.is_symlink():
            yield rel, path.read_text("utf-8", "replace")


# not "embedded-book": its prose is CC-BY-SA 4.0 (the rest of rust-doc is MIT OR Apache-2.0)
RUST_BOOKS = ["book", "nomicon", "reference", "rust-by-example", "edition-guide",
              "rustc", "rustdoc"]
SOURCES = [  # name, Debian package, licence, extractor
    ("janeaustenr", "r-cran-janeaustenr", "public domain text (package MIT)", janeaustenr),
    ("world-english-bible", "sword-text-web", "public domain", web_bible),
    ("jargon-file", "jargon-text", "public domain", jargon),
    ("fortunes", "fortunes", "BSD", fortunes),
    ("sqlite-doc", "sqlite3-doc", "public domain", html_tree(["sqlite3"])),
    ("python-doc", "python3.11-doc", "PSF-2.0", python_docs),
    ("postgresql-doc", "postgresql-doc-15", "PostgreSQL (BSD-like)", html_tree(["html"])),
    ("django-doc", "python-django-doc", "BSD-3-Clause", html_tree(["html"])),
    ("rust-books", "rust-doc", "MIT OR Apache-2.0", html_tree(RUST_BOOKS)),
]
# This machine's stdlib rather than Debian's libpython3.11-stdlib, which lacks the modules Debian
# moves to -minimal, python3-tk, python3-lib2to3...; the manifest records the exact version.
CODE_SOURCE = ("cpython-stdlib", None, "PSF-2.0", cpython_stdlib)


# ---------------------------------------------------------------- cleaning

def clean(text: str, code: bool = False) -> str:
    """Normalise whitespace and drop control characters, keeping newlines and tabs.

    Code keeps its runs of blank lines (PEP 8's two between definitions)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return text.strip("\n") if code else re.sub(r"\n{3,}", "\n\n", text).strip()


def drop_toc_runs(text: str, run: int = 4) -> str:
    """Remove runs of >= ``run`` consecutive one-line, short paragraphs (tables of contents)."""
    paras = text.split("\n\n")
    short = [len(p) < 60 and "\n" not in p and not p.rstrip().endswith((".", ":", "?", "!"))
             for p in paras]
    keep, i = [], 0
    while i < len(paras):
        j = i
        while j < len(paras) and short[j]:
            j += 1
        if j == i:
            keep.append(paras[i])
            j += 1
        elif j - i < run:
            keep.extend(paras[i:j])
        i = j
    return "\n\n".join(keep)


def drop_boilerplate(docs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop short paragraphs repeated across many documents of one source (headers, footers)."""
    counts = Counter(p for _, t in docs for p in set(t.split("\n\n")) if len(p) < 400)
    limit = max(5, len(docs) // 50)
    return [(d, "\n\n".join(p for p in t.split("\n\n") if counts[p] < limit)) for d, t in docs]


def split_long(text: str, limit: int = MAX_DOC, prefix: str = "part"):
    """Yield (label, piece) with pieces <= ``limit`` chars, cut at blank lines (else newlines)."""
    if len(text) <= limit:
        yield "", text
        return
    pieces, cur = [], ""
    for para in re.split(r"(?<=\n\n)", text):
        while len(para) > limit:  # one huge paragraph: cut at the last newline that fits
            cut = para.rfind("\n", 0, limit) + 1 or limit
            pieces.append(cur + para[:cut]) if cur else pieces.append(para[:cut])
            cur, para = "", para[cut:]
        if len(cur) + len(para) > limit and cur:
            pieces.append(cur)
            cur = ""
        cur += para
    pieces.append(cur)
    for k, piece in enumerate(p for p in pieces if p.strip()):
        yield f"{prefix}{k:02d}", piece


# ---------------------------------------------------------------- packages

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(package: str) -> Path:
    """The cached .deb of ``package``, downloading it (after one ``apt-get update``) if absent."""
    CACHE.mkdir(exist_ok=True)
    found = sorted(CACHE.glob(f"{package}_*.deb"))
    if not found:
        if not getattr(fetch, "updated", False):
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            fetch.updated = True
        subprocess.run(["apt-get", "download", package], cwd=CACHE, check=True)
        found = sorted(CACHE.glob(f"{package}_*.deb"))
    return found[-1]


def build_source(name, package, licence, extract, tmp: Path, min_chars: int):
    if package is None:  # the running interpreter's standard library
        root = Path(sysconfig.get_paths()["stdlib"])
        meta = {"package": f"CPython {platform.python_version()} Lib/ ({root})"}
    else:
        deb = fetch(package)
        root = tmp / package
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        meta = {"package": package, "version": version, "deb": deb.name,
                "deb_sha256": sha256(deb.read_bytes())}
    code = extract is cpython_stdlib
    docs = [(f"{name}/{doc_id}", clean(text, code)) for doc_id, text in extract(root)]
    if extract.__name__ == "extract":  # HTML pages repeat headers and footers
        docs = drop_boilerplate(docs)
    if not code:  # after the boilerplate, so a page title is not taken for part of a run
        docs = [(doc_id, drop_toc_runs(text)) for doc_id, text in docs]
    out = []
    for doc_id, text in docs:
        for label, piece in split_long(clean(text, code)):
            if len(piece) >= min_chars:
                out.append((f"{doc_id}#{label}" if label else doc_id, piece))
    return out, {**meta, "licence": licence}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows, manifest, seen = [], {}, set()
    with tempfile.TemporaryDirectory() as tmp:
        for name, package, licence, extract in tqdm(SOURCES + [CODE_SOURCE], desc="sources"):
            docs, meta = build_source(name, package, licence, extract, Path(tmp),
                                      min_chars=20 if name == "fortunes" else 200)
            if name == CODE_SOURCE[0]:
                # a spread of modules (hash order, not alphabetical) up to the target share
                prose = sum(len(t.encode()) for _, t, _ in rows)
                budget = prose * CODE_FRACTION / (1 - CODE_FRACTION)
                docs.sort(key=lambda d: sha256(d[0].split("#")[0].encode()))
                picked, total = [], 0
                for doc in docs:
                    if total < budget:
                        picked.append(doc)
                        total += len(doc[1].encode())
                docs = sorted(picked)
            kept = []
            for doc_id, text in docs:  # exact de-duplication across all sources
                key = sha256(re.sub(r"\s+", " ", text).encode())
                if key not in seen:
                    seen.add(key)
                    kept.append((doc_id, text))
            rows += [(d, t, name) for d, t in kept]
            blob = "\0".join(t for _, t in kept).encode()
            manifest[name] = {**meta, "documents": len(kept), "text_bytes": sum(
                len(t.encode()) for _, t in kept), "text_sha256": sha256(blob)}
            tqdm.write(f"{name}: {len(kept)} docs, {manifest[name]['text_bytes'] / 1e6:.1f} MB")
    args.out.mkdir(parents=True, exist_ok=True)
    table = pa.table({"text": [t for _, t, _ in rows], "source": [s for _, _, s in rows],
                      "doc_id": [d for d, _, _ in rows]})
    path = args.out / "corpus.parquet"
    pq.write_table(table, path, compression="zstd", compression_level=19, row_group_size=4096)
    total = sum(m["text_bytes"] for m in manifest.values())
    summary = {"documents": len(rows), "text_bytes": total,
               "code_fraction": round(manifest[CODE_SOURCE[0]]["text_bytes"] / total, 4),
               "parquet_bytes": path.stat().st_size, "parquet_sha256": sha256(path.read_bytes())}
    (args.out / "MANIFEST.json").write_text(json.dumps(
        {"sources": manifest, "total": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
