"""Tokens as a reader sees them: spaces, newlines and tabs made visible, never a Python string repr.

A byte-level BPE token is a piece of text such as ``" the"``, ``"\\n\\n"`` or ``"("``. Printed plainly, a
leading space vanishes and a newline breaks the table; printed with ``repr`` the reader meets quotes and
backslashes. Here a space is drawn as ``·``, a newline as ``↵``, a tab as ``→``; every other character stays as
it is. Skip-trigrams read as in the paper: ``source … destination → output``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

SPACE, NEWLINE, TAB, EMPTY = "·", "↵", "→", "∅"
_MARKS = str.maketrans({" ": SPACE, "\n": NEWLINE, "\t": TAB, "\r": "␍"})

Decode = Callable[[int], str]


def show_token(text: str) -> str:
    """``" the"`` -> ``"·the"``; ``"\\n\\n"`` -> ``"↵↵"``; an empty string -> ``"∅"``."""
    return text.translate(_MARKS) if text else EMPTY


def token_labels(ids: Sequence[int], decode: Decode) -> list[str]:
    """Readable labels of token ids (``show_token`` of each decoded id)."""
    return [show_token(decode(int(i))) for i in ids]


def skip_trigram(source: str, destination: str, output: str) -> str:
    """The paper's notation for a skip-trigram of readable tokens: ``source … destination → output``."""
    return f"{source} … {destination} → {output}"


def legend() -> str:
    """One sentence a table or figure of tokens can show beneath it."""
    return f"Tokens are shown with a space as {SPACE}, a newline as {NEWLINE} and a tab as {TAB}."
