"""Every claim of the papers in one table: the paper's value, ours, a verdict and the section that measured it.

Each chapter's module (``findings.models``, ``framework``, ``zero_layer``, ``one_layer``, ``two_layer``,
``induction``) gives the rows of the claims its chapter tests, ``findings_rows(book)``, from the results the
chapter itself computed (shared through the build's cache, never recomputed differently), and decides each
verdict by a rule stated in its code and in the row's ``rule`` (which the table shows). This module only puts
them in the book's order.
"""

from __future__ import annotations

import html
from collections import Counter

import pandas as pd

from . import framework, induction, models, one_layer, two_layer, zero_layer
from .context import Book
from .verdicts import VERDICTS

CHAPTERS = (framework, models, zero_layer, one_layer, two_layer, induction)  # the order of the book
FIELDS = ("claim", "paper", "ours", "verdict", "rule", "section")
WIDTHS = {"claim": "20%", "paper": "20%", "ours": "36%", "verdict": "24%"}  # "ours" holds the longest texts


def check_row(row: dict) -> dict:
    """A row with exactly the expected fields and a known verdict (a malformed row is an error, not a gap)."""
    if set(row) != set(FIELDS):
        raise ValueError(f"a findings row needs the fields {FIELDS}, got {sorted(row)}")
    if row["verdict"] not in VERDICTS:
        raise ValueError(f"verdict {row['verdict']!r} of {row['claim']!r} is not one of {VERDICTS}")
    if "#" not in row["section"]:
        raise ValueError(f"section {row['section']!r} of {row['claim']!r} must be '<docname>#<label>'")
    return row


def findings(book: Book) -> list[dict]:
    """All rows, chapter by chapter."""
    return [check_row(row) for chapter in CHAPTERS for row in chapter.findings_rows(book)]


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    counts = Counter(row["verdict"] for row in rows)
    return {verdict: counts.get(verdict, 0) for verdict in VERDICTS}


def section_link(section: str, text: str) -> str:
    """An HTML link from the findings page to ``<docname>#<label>`` (pages sit side by side in the site)."""
    doc, _, label = section.partition("#")
    return f'<a href="{doc}.html#{label}">{text}</a>'


VERDICT_COLOURS = {"reproduced": "#1a7f37", "partly": "#9a6700", "not reproduced": "#cf222e"}


def verdict_badge(verdict: str) -> str:
    """A verdict as a small coloured label (HTML) for the findings table."""
    colour = VERDICT_COLOURS[verdict]
    return (f'<span style="color: {colour}; border: 1px solid {colour}; border-radius: 0.8em; padding: 0 0.5em; '
            f'white-space: nowrap; font-weight: 600">{verdict}</span>')


def findings_frame(rows: list[dict], link: bool = False) -> pd.DataFrame:
    """``rows`` as the book shows them, in the findings chapter and in every chapter's summary: claim, paper,
    ours, and the verdict as a badge with its rule in small type under it. ``claim`` and ``verdict`` are HTML
    (render them with ``table_html(..., html_columns=("claim", "verdict"))``); ``link``: the claim links to the
    section that measured it."""
    claim = lambda r: section_link(r["section"], html.escape(r["claim"])) if link else html.escape(r["claim"])
    return pd.DataFrame([{"claim": claim(r), "paper": r["paper"], "ours": r["ours"],
                          "verdict": verdict_badge(r["verdict"]) + f'<span class="rule">{html.escape(r["rule"])}</span>'}
                         for r in map(check_row, rows)])
