"""The three verdicts of the findings table, and how a chapter's rule turns into one.

A chapter states each rule as two conditions, a full one and a weaker one; ``verdict`` maps them to the words every
table uses. (Rules of another shape, such as the one-layer examples' "partly when exactly one of two holds", keep
their own small function beside the rule.)
"""

from __future__ import annotations

VERDICTS = ("reproduced", "partly", "not reproduced")


def verdict(full: bool, part: bool = False) -> str:
    """"reproduced" if the rule's full condition holds, "partly" if only its weaker one does, else "not
    reproduced"."""
    return VERDICTS[0] if full else VERDICTS[1] if part else VERDICTS[2]
