"""Pure-Python readers for the formats the corpus sources ship in.

Used by ``build_corpus.py``; kept apart so that script reads as a list of sources.
- R lazy-load databases (``.rdb``/``.rdx``): zlib-compressed XDR serialisation, for janeaustenr.
- SWORD zText modules: zlib-compressed OSIS blocks, for the World English Bible.
- HTML to text with the stdlib ``html.parser``, dropping navigation boilerplate.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

# ---------------------------------------------------------------- R serialisation (XDR)


class _RReader:
    """Just enough of R's ``unserialize`` for data objects: vectors, pairlists, symbols."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialisation")
        self.b, self.i, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # writer version, min reader version
        if version == 3:
            n = self.int()  # length of the native encoding name, then the name
            self.i += n

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.b, self.i)
        self.i += 4
        return v

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 242, 241, 253, 252, 251, 250):  # NULL and special environments
            return None
        if kind == 255:  # reference to an earlier symbol/environment
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # symbol
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind in (2, 6, 3, 5, 17, 239, 240):  # pairlist-like: attr, tag, car, cdr
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            out = {tag: car}
            cdr = self.item()
            if isinstance(cdr, dict):
                out.update(cdr)
            return out if attr is None else out
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.b[self.i:self.i + n].decode("utf-8", "replace")
            self.i += n
            return s
        if kind == 238:  # ALTREP: class info, state, attributes; the state holds the data
            self.item()
            state = self.item()
            self.item()
            return state
        if kind in (10, 13, 14, 16, 19, 20, 24):
            n = self.int()
            if n == -1:
                n = (self.int() << 32) + self.int()
            if kind in (10, 13):
                out = list(struct.unpack_from(f">{n}i", self.b, self.i))
                self.i += 4 * n
            elif kind == 14:
                out = list(struct.unpack_from(f">{n}d", self.b, self.i))
                self.i += 8 * n
            elif kind == 24:
                out = self.b[self.i:self.i + n]
                self.i += n
            else:
                out = [self.item() for _ in range(n)]
            if has_attr:
                attrs = self.item()
                if kind in (16, 19) and isinstance(attrs, dict) and attrs.get("names"):
                    return dict(zip(attrs["names"], out))
            return out
        raise ValueError(f"unsupported R SEXP type {kind} at byte {self.i}")


def _r_unzip(blob: bytes) -> bytes:
    """An R lazy-load record: 4-byte big-endian length, then (usually) zlib data."""
    (n,) = struct.unpack(">I", blob[:4])
    try:
        out = zlib.decompress(blob[4:])
    except zlib.error:  # type-2/3 records carry a compression byte first
        import bz2
        import lzma
        kind, body = blob[4:5], blob[5:]
        out = {b"2": bz2.decompress, b"X": lzma.decompress, b"Z": zlib.decompress,
               b"0": bytes}[kind](body)
    assert len(out) == n, "R record length mismatch"
    return out


def read_rdb(rdb: Path) -> dict:
    """All variables of an R lazy-load database (``foo.rdb`` next to ``foo.rdx``)."""
    raw = rdb.with_suffix(".rdx").read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _r_unzip(raw)  # gzip'd RDS or record
    index = _RReader(raw).item()
    data = rdb.read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        out[name] = _RReader(_r_unzip(data[int(offset):int(offset) + int(length)])).item()
    return out


def austen_chapters(lines: list[str]) -> list[tuple[str, str]]:
    """(chapter label, text) pairs of one novel; hard-wrapped lines joined into paragraphs."""
    chapters, label, paras, cur = [], "front", [], []
    for line in lines + [""]:
        if re.fullmatch(r"\s*(CHAPTER|Chapter) [\dIVXLC]+\.?\s*", line or ""):
            if cur:
                paras.append(" ".join(cur))
            chapters.append((label, paras))
            label, paras, cur = line.strip().split()[1].rstrip("."), [line.strip()], []
        elif line and line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    chapters.append((label, paras))
    return [(lab, "\n\n".join(p)) for lab, p in chapters if p]


# ---------------------------------------------------------------- SWORD zText


def sword_books(module_dir: Path) -> list[str]:
    """OSIS text of every compressed block (BlockType=BOOK: one block per book), OT then NT.

    ``*.bzs`` holds (offset, compressed size, size) little-endian uint32 triples into ``*.bzz``.
    """
    out = []
    for testament in ("ot", "nt"):
        index = (module_dir / f"{testament}.bzs").read_bytes()
        blob = (module_dir / f"{testament}.bzz").read_bytes()
        for k in range(len(index) // 12):
            offset, size, _ = struct.unpack_from("<III", index, 12 * k)
            out.append(zlib.decompress(blob[offset:offset + size]).decode("utf-8"))
    return out


def osis_chapters(osis: str) -> list[tuple[str, str]]:
    """(osisID like "Gen.1", plain text) per chapter; footnotes and markup dropped."""
    # a footnote sits between words ("God<note/>created"): a space keeps them apart
    osis = re.sub(r"<note\b.*?</note>", " ", osis, flags=re.S)
    osis = re.sub(r"<title\b[^>]*>(.*?)</title>", r"\n\n\1\n\n", osis, flags=re.S)
    # paragraph and poetry-line ends become line breaks before all tags are stripped
    osis = re.sub(r'<div eID="[^"]*" type="x-p"/>|<l [^>]*eID[^>]*/>|<lb[^>]*/>', "\n", osis)
    parts = re.split(r'<chapter [^>]*sID="([^"]+)"[^>]*/>', osis)
    out = []
    for osis_id, body in zip(parts[1::2], parts[2::2]):
        text = re.sub(r"<[^>]+>", "", body)
        text = re.sub(r"[ \t]+", " ", text)
        text = re.sub(r" (?=[,.;:!?’”)])", "", text)  # ...but not before punctuation
        text = re.sub(r" *\n *", "\n", text)
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        out.append((osis_id, text))
    return out


# ---------------------------------------------------------------- HTML to text

_BLOCK = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "section", "article",
          "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "hr", "main", "figure", "td"}
_SKIP_TAGS = {"script", "style", "nav", "header", "footer", "head", "noscript", "svg", "form", "button"}
# matched against each class/id/role token on its own ("header" would also hit mdbook's headings)
_SKIP_ATTR = re.compile(r"nav.*|.*sidebar.*|related|.*footer|.*menu.*|breadcrumbs?|search.*|"
                        r"headerlink|toc|skip.*|sphinxsidebar.*|page-header")
_VOID = {"br", "img", "meta", "link", "hr", "input", "wbr", "col", "area", "base", "source"}


class _TextExtractor(HTMLParser):
    """Visible text; elements that look like navigation (by tag, class or id) are skipped whole."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip, self.skip_tag, self.pre = [], 0, None, 0

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            if tag in ("br", "hr") and not self.skip:
                self.parts.append("\n")
            return
        if self.skip:
            self.skip += tag == self.skip_tag
            return
        a = dict(attrs)
        label = " ".join(filter(None, (a.get("class"), a.get("id"), a.get("role")))).split()
        if tag in _SKIP_TAGS or (tag not in ("html", "body", "main")
                                 and any(_SKIP_ATTR.fullmatch(w) for w in label)):
            self.skip, self.skip_tag = 1, tag
            return
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.parts.append("\n\n" if tag != "td" else " ")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag):
        if self.skip:
            self.skip -= tag == self.skip_tag
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self.skip:
            return
        if self.pre:
            self.parts.append(data)
            return
        data = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith("\n"):
            data = data.lstrip()  # no indentation outside <pre>
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text of one HTML page: paragraphs separated by blank lines, <pre> kept verbatim."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
