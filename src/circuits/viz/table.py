"""Tables for the book: every table scrolls inside its own box (never past the page), and a long one gets a
search box and pages, as one self-contained HTML+JS snippet (``html``: no CDN, works offline).

``table_html(frame)`` takes a pandas DataFrame whose cells are already what the reader should see (format
numbers and tokens first: ``viz.tokens.show_token``); ``page_size`` rows are shown at a time when the table is
longer, with a search box that keeps the rows containing the typed text.
"""

from __future__ import annotations

import html as html_lib
import re

from pandas.api.types import is_numeric_dtype

from .html import render

STYLE = """
<style>
.circuits-table { overflow-x: auto; max-width: 100%%; margin: 0.5em 0 1em 0; }
.circuits-table table { border-collapse: collapse; font-size: 0.88em; width: auto; }
.circuits-table.full table { width: 100%%; }
.circuits-table th, .circuits-table td { padding: 0.25em 0.7em; border-bottom: 1px solid #e3e3e3;
  text-align: right; vertical-align: top; white-space: nowrap; }
.circuits-table th { border-bottom: 2px solid #999; background: #fafafa; white-space: normal; }
.circuits-table td.text, .circuits-table th.text, .circuits-table td.html, .circuits-table th.html {
  text-align: left; white-space: normal; min-width: 8em; }
/* stated per kind: the theme's own table rules outrank the plain td rule above */
.circuits-table td.num, .circuits-table th.num { text-align: right; }
.circuits-table .controls { margin: 0.3em 0; font-size: 0.9em; }
.circuits-table .controls input { padding: 0.15em 0.4em; width: 16em; }
.circuits-table .controls button { margin-left: 0.4em; }
</style>
"""

TEMPLATE = STYLE + """
<div class="circuits-table" id="%(id)s">
<script type="application/json">%(data)s</script>
<div class="controls" style="display:none"></div>
<div class="body">%(plain)s</div>
<script>%(core)s
%(ui)s</script>
</div>
"""

# Pure functions, also run by the tests under node.
JS_CORE = r"""
function ctMatch(D, query) {
  var q = query.toLowerCase(), out = [];
  for (var i = 0; i < D.rows.length; i++) {
    if (q === "" || D.rows[i].join("\u0001").toLowerCase().indexOf(q) >= 0) out.push(i);
  }
  return out;
}
"""

_JS_UI = r"""
(function () {
  var root = document.getElementById("%(id)s");
  var D = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
  if (D.rows.length <= D.page) return;
  var controls = root.querySelector(".controls"), body = root.querySelector(".body");
  controls.style.display = "block";
  controls.innerHTML = '<input type="search" placeholder="search the table"> ' +
    '<button class="prev">&#8592;</button><button class="next">&#8594;</button> <span class="info"></span>';
  var input = controls.querySelector("input"), info = controls.querySelector(".info"), page = 0, rows = [];
  function esc(s) { var d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
  function draw() {
    var n = Math.max(1, Math.ceil(rows.length / D.page));
    page = Math.min(Math.max(page, 0), n - 1);
    var out = "<table><thead><tr>";
    D.columns.forEach(function (c, j) { out += '<th class="' + D.kinds[j] + '"' +
      (D.widths[j] ? ' style="width: ' + esc(D.widths[j]) + '"' : "") + ">" + esc(c) + "</th>"; });
    out += "</tr></thead><tbody>";
    rows.slice(page * D.page, (page + 1) * D.page).forEach(function (i) {
      out += "<tr>";
      D.rows[i].forEach(function (v, j) {
        out += '<td class="' + D.kinds[j] + '">' + (D.kinds[j] === "html" ? v : esc(v)) + "</td>"; });
      out += "</tr>";
    });
    body.innerHTML = out + "</tbody></table>";
    info.textContent = rows.length + " of " + D.rows.length + " rows, page " + (page + 1) + " of " + n;
  }
  input.addEventListener("input", function () { rows = ctMatch(D, input.value); page = 0; draw(); });
  controls.querySelector(".prev").addEventListener("click", function () { page -= 1; draw(); });
  controls.querySelector(".next").addEventListener("click", function () { page += 1; draw(); });
  rows = ctMatch(D, ""); draw();
})();
"""


_NUMBER = re.compile(r"^[+\-−]?[\d,]*\.?\d+(e[+\-]?\d+)?\s*[%×]?$")


def _numeric(column) -> bool:
    """Numbers, or strings that are all formatted numbers (``"0.503"``, ``"1,024"``, ``"-3.1 %"``)."""
    return is_numeric_dtype(column) or all(_NUMBER.match(str(v).strip()) for v in column)


def _plain(columns: list[str], kinds: list[str], rows: list[list[str]], widths: list[str]) -> str:
    """The table as static HTML (the first page when it is paged): what shows without JavaScript."""
    head = "".join(f'<th class="{k}"{_width(w)}>{html_lib.escape(c)}</th>' for c, k, w in zip(columns, kinds, widths))
    body = "".join("<tr>" + "".join(f'<td class="{k}">{v if k == "html" else html_lib.escape(v)}</td>'
                                    for v, k in zip(row, kinds)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _width(width: str) -> str:
    return f' style="width: {html_lib.escape(width)}"' if width else ""


def table_html(frame, page_size: int = 15, text_columns: tuple[str, ...] = (), index: bool = False,
               html_columns: tuple[str, ...] = (), full_width: bool = False,
               widths: dict[str, str] | None = None) -> str:
    """``frame`` as a scrolling table; paged with a search box when it has more than ``page_size`` rows.

    Cells are shown as ``str(value)``: format them first. Columns in ``text_columns`` (and any column of
    non-numbers) are left-aligned and may wrap; numeric columns are right-aligned and never wrap. Cells of
    ``html_columns`` are HTML the caller made (links), inserted as they are. ``full_width``: the table spans the
    page's width (long texts in several columns), else it is as wide as its content. ``widths``: CSS widths of
    some columns (e.g. ``{"ours": "35%"}``), so a long column gets the room its text needs.
    """
    if index:
        frame = frame.reset_index()
    columns = [str(c) for c in frame.columns]
    kinds = ["html" if c in html_columns else "num" if _numeric(frame[c]) and c not in text_columns
             else "text" for c in frame.columns]
    rows = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    unknown = set(widths or {}) - set(columns)
    if unknown:
        raise ValueError(f"widths name columns the table lacks: {sorted(unknown)} (columns: {columns})")
    width_list = [(widths or {}).get(c, "") for c in columns]
    data = {"columns": columns, "kinds": kinds, "rows": rows, "page": page_size, "widths": width_list}
    snippet = render(TEMPLATE, "circuits-table", data, JS_CORE, _JS_UI,
                     _plain(columns, kinds, rows[:page_size], width_list))
    return snippet.replace('class="circuits-table"', 'class="circuits-table full"', 1) if full_width else snippet
