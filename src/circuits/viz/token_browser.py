"""A searchable table of each token's circuits, as one self-contained HTML+JS snippet (no CDN, no URL).

For every token in the table and every head: its top OV outputs (what attending to it raises), its
top QK sources (what it attends to, as a destination) and its top QK destinations (what attends to
it, as a source), the lists ``skip_trigrams.token_dump`` computes. A text box filters tokens by
substring (exact matches first), a selector picks one head or all; only the matching rows are
drawn, so the page holds the data once, as integers into a table of token strings ordered so that
frequent tokens get small numbers (about 1 MB for 2000 tokens x 8 heads x 3 lists x 5).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import numpy as np
import torch

from .html import render
from .tokens import EMPTY, NEWLINE, SPACE, TAB, legend

KINDS = ("ov_out", "qk_src", "qk_dst")


def browser_data(dump: dict[str, torch.Tensor], token_ids: Sequence[int], decode, counts: np.ndarray,
                 dump_tokens: Sequence[int] | None = None) -> dict:
    """The browser's data for the rows ``token_ids`` (in display order) of a ``token_dump``.

    ``dump_tokens``: the ``tokens`` the dump was computed for (row i is token ``dump_tokens[i]``); by
    default row t is token t. ``names`` holds the text of every token that appears, rows' tokens first (in
    their order), then the other referenced tokens; ``rows[i] = [name index, train count, [kind][head][k]
    flattened]``. The page shows each name with the marks of ``viz.tokens`` (``tbShow``).
    """
    token_ids = [int(t) for t in token_ids]
    H, _, k = dump["ov_out"].shape
    row_of = ({int(t): i for i, t in enumerate(dump_tokens)} if dump_tokens is not None else None)
    at = token_ids if row_of is None else [row_of[t] for t in token_ids]
    lists = torch.stack([dump[kind][:, at] for kind in KINDS], dim=1)  # [H, kind, n, k]
    lists = lists.permute(2, 1, 0, 3).reshape(len(token_ids), -1)  # [n, kind * H * k]
    order = list(dict.fromkeys(token_ids + [int(t) for t in lists.flatten().tolist()]))
    index = {t: i for i, t in enumerate(order)}
    rows = [[index[t], int(counts[t]), [index[int(x)] for x in lists[i].tolist()]] for i, t in enumerate(token_ids)]
    return {"heads": H, "k": k, "names": [decode(t) for t in order], "rows": rows}


# Pure functions, also run by the tests under node. tbShow draws a token as viz.tokens.show_token does;
# tbUnmark lets a reader type those marks into the search box ("·def" finds " def").
_MARKS = [(" ", SPACE), ("\n", NEWLINE), ("\t", TAB), ("\r", "\u240d")]
SEPARATOR = "\u2502"  # "│" between the tokens of a list, drawn in grey (the book's separator of token lists)
JS_CORE = r"""
var TB_MARKS = %s, TB_EMPTY = %s;
function tbShow(text) {
  if (text === "") return TB_EMPTY;
  var out = text;
  TB_MARKS.forEach(function (m) { out = out.split(m[0]).join(m[1]); });
  return out;
}
function tbUnmark(text) {
  var out = text;
  TB_MARKS.forEach(function (m) { out = out.split(m[1]).join(m[0]); });
  return out;
}
function tbFind(D, query, limit) {
  var q = tbUnmark(query).toLowerCase(), qt = q.trim(), exact = [], part = [];
  for (var i = 0; i < D.rows.length; i++) {
    var name = D.names[D.rows[i][0]].toLowerCase();
    if (qt !== "" && name.trim() === qt) exact.push(i);
    else if (q === "" || name.indexOf(q) >= 0) { if (part.length < limit) part.push(i); }
  }
  return exact.concat(part).slice(0, limit);
}
function tbList(D, row, kind, head) {
  var off = (kind * D.heads + head) * D.k, out = [];
  for (var j = 0; j < D.k; j++) out.push(D.names[D.rows[row][2][off + j]]);
  return out;
}
""" % (json.dumps(_MARKS, ensure_ascii=False), json.dumps(EMPTY, ensure_ascii=False))

_JS_UI = r"""
(function () {
  var root = document.getElementById("%(id)s");
  var D = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var input = root.querySelector(".tb-query"), head = root.querySelector(".tb-head");
  var body = root.querySelector(".tb-body"), info = root.querySelector(".tb-info");
  var LIMIT = 25;
  var all = document.createElement("option"); all.value = "all"; all.textContent = "all"; head.appendChild(all);
  for (var h = 0; h < D.heads; h++) { var o = document.createElement("option"); o.value = h;
    o.textContent = h; head.appendChild(o); }
  head.value = "all";
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text;
    if (cls) td.className = cls; tr.appendChild(td); return td; }
  function tokens(tr, list) {  // tokens separated by a grey "%(sep)s", so that punctuation tokens stay apart
    var td = cell(tr, "");
    list.forEach(function (t, j) {
      if (j > 0) { var s = document.createElement("span"); s.className = "tb-sep"; s.textContent = " %(sep)s ";
        td.appendChild(s); }
      var span = document.createElement("span"); span.textContent = t; td.appendChild(span);
    });
  }
  function render() {
    while (body.firstChild) body.removeChild(body.firstChild);
    var found = tbFind(D, input.value, LIMIT);
    var heads = head.value === "all" ? D.heads : 1;
    found.forEach(function (r) {
      for (var i = 0; i < heads; i++) {
        var hh = head.value === "all" ? i : +head.value, tr = document.createElement("tr");
        cell(tr, i === 0 ? tbShow(D.names[D.rows[r][0]]) : "", "tb-tok");
        cell(tr, i === 0 ? String(D.rows[r][1]) : "");
        cell(tr, String(hh));
        for (var kind = 0; kind < 3; kind++) tokens(tr, tbList(D, r, kind, hh).map(tbShow));
        body.appendChild(tr);
      }
    });
    info.textContent = found.length + " token" + (found.length === 1 ? "" : "s") + " shown (at most " + LIMIT +
      ", exact matches first) of " + D.rows.length;
  }
  input.addEventListener("input", render); head.addEventListener("change", render);
  render();
})();
"""

_JS_UI = _JS_UI.replace("%(sep)s", SEPARATOR)

_TEMPLATE = """<div id="%(id)s" class="circuits-token-browser">
<style>
#%(id)s {font-family: sans-serif; font-size: 13px; margin: 0.5em 0;}
#%(id)s .tb-controls label {margin-right: 1em;}
#%(id)s .tb-info, #%(id)s .tb-legend {color: #555; font-size: 12px;}
#%(id)s .tb-wrap {max-height: 34em; overflow: auto; border: 1px solid #ddd;}
#%(id)s table {border-collapse: collapse; width: 100%%; table-layout: fixed;}
#%(id)s th, #%(id)s td {padding: 2px 6px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top;
  font-family: monospace; white-space: pre-wrap; overflow-wrap: anywhere;}
#%(id)s col.tb-token {width: 7em;} #%(id)s col.tb-count {width: 5.5em;} #%(id)s col.tb-head {width: 3.5em;}
#%(id)s th {position: sticky; top: 0; background: #f6f6f6; font-family: sans-serif;}
#%(id)s .tb-sep {color: #aaa;}
</style>
<div class="tb-controls"><label>token contains <input type="text" class="tb-query" placeholder="e.g. ·def or self"></label>
<label>head <select class="tb-head"></select></label> <span class="tb-info"></span></div>
<div class="tb-legend">""" + legend() + """</div>
<div class="tb-wrap"><table><colgroup><col class="tb-token"><col class="tb-count"><col class="tb-head">
<col><col><col></colgroup><thead><tr><th>token</th><th>count</th><th>head</th>
<th>OV: top outputs</th><th>QK: top sources (token as destination)</th><th>QK: top destinations (token as source)</th>
</tr></thead><tbody class="tb-body"></tbody></table></div>
<script type="application/json">%(data)s</script>
<script>%(core)s%(ui)s</script>
<noscript>%(plain)s</noscript>
</div>"""


def browser_html(data: dict) -> str:
    """The self-contained snippet for ``browser_data(...)``."""
    plain = html.escape(f"The token table needs JavaScript ({len(data['rows'])} tokens).")
    return render(_TEMPLATE, "circuits-tokens", data, JS_CORE, _JS_UI, plain)
