"""Self-contained HTML+JS snippets for the book's interactive views (``attention_view``, ``token_browser``).

A snippet is one ``<div>`` holding its own CSS, its data as JSON in a ``<script type="application/json">``,
its script and a ``<noscript>`` fallback: no external script, no CDN, no URL, so it works in a notebook
and in the static book page offline. Each view supplies a template with the slots ``%(id)s``,
``%(data)s``, ``%(core)s`` (pure JS functions the tests also run under node), ``%(ui)s`` (the DOM code,
itself a template on ``%(id)s``) and ``%(plain)s``.
"""

from __future__ import annotations

import hashlib
import itertools
import json

_ids = itertools.count()


def json_for_script(data: dict) -> str:
    """Compact JSON safe inside <script>: no '<', '>' or '&' that could close the tag."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(template: str, id_prefix: str, data: dict, core: str, ui: str, plain: str) -> str:
    """Fill a view's template. The element id is ``<id_prefix>-<data digest>-<n>``: unique on a page
    (``n`` counts snippets made in this process) and the same on every build of the same page."""
    text = json_for_script(data)
    view_id = f"{id_prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}-{next(_ids)}"
    return template % {"id": view_id, "data": text, "core": core, "ui": ui % {"id": view_id}, "plain": plain}


def as_display(snippet: str):
    """A snippet as an ``IPython.display.HTML`` for a notebook cell."""
    from IPython.display import HTML

    return HTML(snippet)
