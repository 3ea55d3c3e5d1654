"""Tokens as a reader sees them: spaces, newlines and tabs made visible, never a Python string repr.

A byte-level BPE token is a piece of text such as ``" the"``, ``"\\n\\n"`` or ``"("``. Printed plainly, a
leading space vanishes and a newline breaks the table; printed with ``repr`` the reader meets quotes and
backslashes. Here a space is drawn as ``·``, a newline as ``↵``, a tab as ``⇥``; every other character stays as
it is; the bytes of a character split between tokens are shown as ``⟨e2⟩``. Skip-trigrams read as in the paper:
``source … destination → output``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

SPACE, NEWLINE, TAB, EMPTY = "·", "↵", "⇥", "∅"  # ⇥, not →: skip-trigrams use → for "predicts"
_MARKS = str.maketrans({" ": SPACE, "\n": NEWLINE, "\t": TAB, "\r": "␍",  # other control characters: ⟨1f⟩
                        **{chr(c): f"⟨{c:02x}⟩" for c in (*range(32), 127) if chr(c) not in " \n\t\r"}})

Decode = Callable[[int], str]


def show_token(text: str) -> str:
    """``" the"`` -> ``"·the"``; ``"\\n\\n"`` -> ``"↵↵"``; an empty string -> ``"∅"``; other control characters
    as their code, ``⟨1f⟩``."""
    return text.translate(_MARKS) if text else EMPTY


def _raw_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    """Bytes that are not whole UTF-8 characters, drawn as ⟨e2⟩ (a codecs error handler)."""
    return "".join(f"⟨{b:02x}⟩" for b in error.object[error.start:error.end]), error.end


codecs.register_error("circuits-token-bytes", _raw_bytes)


def show_bytes(raw: bytes) -> str:
    """A token given as bytes (``data.tokenizer.token_bytes``): text as ``show_token``, and the bytes that are only
    part of a character (byte-level BPE tokens split some characters) as ⟨e2⟩⟨80⟩ rather than "\ufffd"."""
    return show_token(raw.decode("utf-8", errors="circuits-token-bytes"))


def skip_trigram(source: str, destination: str, output: str) -> str:
    """The paper's notation for a skip-trigram of readable tokens: ``source … destination → output``."""
    return f"{source} … {destination} → {output}"


def legend() -> str:
    """One sentence a table or figure of tokens can show beneath it."""
    return f"Tokens are shown with a space as {SPACE}, a newline as {NEWLINE} and a tab as {TAB}."
