"""An offline attention viewer: text as token spans, hover a token to see where it attends.

``attention_html`` returns one self-contained HTML+JS snippet (``html_snippet``: no external script, no CDN,
no URL), so it works in a static Jupyter Book page offline and in a notebook. Controls pick the layer
and head, and switch to value-weighted attention; hovering a (destination) token colours every
earlier (source) token by the attention it receives; clicking pins the destination.

Compact data: each head's pattern is causal, so only the lower triangle is stored, as integers
``round(1000 A)`` (3 decimals), row after row; value norms as integers ``round(1000 v / max v)``
per head. 2 layers x 8 heads x 200 tokens is then about 0.3 M small integers (< 1 MB).

Value-weighted attention (Kobayashi et al. 2020): ``A[t, s] ||v_s|| / sum_s' A[t, s'] ||v_s'||``, with
``v_s = x_s W_V^h W_O^h`` the vector the head would write if it attended only to s. The patterns and norms
come from ``circuits.analysis.patterns.attention_data``; this module only draws them.
"""

from __future__ import annotations

import html

import numpy as np

from .html import as_display, render

SCALE = 1000  # stored integers are round(SCALE * value): 3 decimals


def encode_data(tokens_str: list[str], patterns: np.ndarray, values_norm: np.ndarray | None) -> dict:
    """The viewer's data: lower triangles and value norms as integers (see the module doc)."""
    patterns = np.asarray(patterns, dtype=np.float64)
    n_layers, n_heads, n, n2 = patterns.shape
    if n != n2 or n != len(tokens_str):
        raise ValueError(f"patterns {patterns.shape} do not match {len(tokens_str)} tokens")
    rows, cols = np.tril_indices(n)
    tri = np.rint(patterns[:, :, rows, cols] * SCALE).astype(np.int64)  # [L, H, n(n+1)/2]
    data = {"tokens": list(tokens_str), "n_layers": n_layers, "n_heads": n_heads, "scale": SCALE,
            "patterns": tri.reshape(n_layers * n_heads, -1).tolist(), "values": None}
    if values_norm is not None:
        v = np.asarray(values_norm, dtype=np.float64)
        if v.shape != (n_layers, n_heads, n):
            raise ValueError(f"values_norm has shape {v.shape}, expected {(n_layers, n_heads, n)}")
        top = v.max(-1, keepdims=True)
        rel = np.divide(v, top, out=np.zeros_like(v), where=top > 0)
        data["values"] = np.rint(rel * SCALE).astype(np.int64).reshape(n_layers * n_heads, n).tolist()
    return data


# Pure functions, also run by the tests under node: the row of weights a destination token gives.
JS_CORE = r"""
function attnRow(D, l, h, t, weighted) {
  var k = l * D.n_heads + h, off = t * (t + 1) / 2, row = new Array(t + 1), s;
  for (s = 0; s <= t; s++) row[s] = D.patterns[k][off + s] / D.scale;
  if (weighted && D.values) {
    var total = 0;
    for (s = 0; s <= t; s++) { row[s] *= D.values[k][s]; total += row[s]; }
    for (s = 0; s <= t; s++) row[s] = total > 0 ? row[s] / total : 0;
  }
  return row;
}
"""

_JS_UI = r"""
(function () {
  var root = document.getElementById("%(id)s");
  var D = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var layer = root.querySelector(".av-layer"), head = root.querySelector(".av-head");
  var vw = root.querySelector(".av-vw"), rel = root.querySelector(".av-rel");
  var info = root.querySelector(".av-info"), text = root.querySelector(".av-text");
  var spans = [], pinned = null, shown = null, i;
  function opt(sel, n) { for (var j = 0; j < n; j++) { var o = document.createElement("option");
    o.value = j; o.textContent = j; sel.appendChild(o); } }
  opt(layer, D.n_layers); opt(head, D.n_heads);
  if (D.start) { layer.value = D.start[0]; head.value = D.start[1]; }
  if (!D.values) { vw.disabled = true; vw.parentNode.style.opacity = 0.4; }
  D.tokens.forEach(function (tok, t) {
    var sp = document.createElement("span");
    sp.className = "av-tok"; sp.textContent = tok.replace(/\n/g, "\u21b5");
    sp.addEventListener("mouseenter", function () { if (pinned === null) show(t); });
    sp.addEventListener("click", function () { pinned = (pinned === t) ? null : t; show(t); });
    text.appendChild(sp); spans.push(sp);
    if (tok.indexOf("\n") >= 0) text.appendChild(document.createElement("br"));
  });
  text.addEventListener("mouseleave", function () { if (pinned === null) show(null); });
  function show(t) {
    shown = t;
    var l = +layer.value, h = +head.value;
    var row = t === null ? [] : attnRow(D, l, h, t, vw.checked), top = 0, s;
    for (s = 0; s < row.length; s++) top = Math.max(top, row[s]);
    var norm = rel.checked && top > 0 ? top : 1;
    spans.forEach(function (sp, s) {
      var w = s < row.length ? row[s] : 0;
      sp.style.background = w > 0 ? "rgba(214, 39, 40, " + Math.min(1, w / norm).toFixed(3) + ")" : "";
      sp.style.outline = s === t ? "2px solid #1f77b4" : "";
      sp.style.opacity = t !== null && s > t ? 0.45 : 1;
      sp.title = t === null ? "" : (s <= t ? "attention " + t + " \u2192 " + s + ": " + w.toFixed(3) : "");
    });
    info.textContent = t === null ? "hover a token (click to pin)" :
      "layer " + l + ", head " + h + ": token " + t + (pinned === t ? " (pinned)" : "") +
      ", largest weight " + top.toFixed(3) + " on token " + row.indexOf(top);
  }
  [layer, head, vw, rel].forEach(function (c) { c.addEventListener("change", function () { show(shown); }); });
  show(null);
})();
"""

_TEMPLATE = """<div id="%(id)s" class="circuits-attention-view">
<style>
#%(id)s {font-family: sans-serif; font-size: 14px; line-height: 1.9; margin: 0.5em 0; text-align: left;}
#%(id)s .av-controls {margin-bottom: 0.4em;} #%(id)s .av-controls label {margin-right: 1em;}
#%(id)s .av-info {color: #555; font-size: 12px;}
#%(id)s .av-text {font-family: monospace; max-height: 32em; overflow-y: auto; border: 1px solid #ddd; padding: 0.4em;}
#%(id)s .av-tok {white-space: pre-wrap; cursor: pointer; border-radius: 2px;}
</style>
<div class="av-controls"><label>layer <select class="av-layer"></select></label>
<label>head <select class="av-head"></select></label>
<label><input type="checkbox" class="av-vw"> value-weighted</label>
<label><input type="checkbox" class="av-rel" checked> scale colours to the row maximum</label>
<span class="av-info"></span></div>
<div class="av-text"></div>
<script type="application/json">%(data)s</script>
<script>%(core)s%(ui)s</script>
<noscript>%(plain)s</noscript>
</div>"""


def attention_html(tokens_str: list[str], patterns: np.ndarray, values_norm: np.ndarray | None = None,
                   start: tuple[int, int] | None = None) -> str:
    """A self-contained HTML+JS attention viewer (see the module doc).

    tokens_str: the text as one string per token [pos]; patterns [layer, head, dst, src] (causal,
    rows summing to 1); values_norm [layer, head, src] (``value_norms``) enables value weighting; ``start``:
    the (layer, head) shown first (the one the text asks the reader to try).
    """
    data = encode_data(tokens_str, patterns, values_norm)
    if start is not None:
        if not (0 <= start[0] < data["n_layers"] and 0 <= start[1] < data["n_heads"]):
            raise ValueError(f"start head {start} is not a head of a {data['n_layers']}-layer model with "
                             f"{data['n_heads']} heads per layer")
        data["start"] = [int(start[0]), int(start[1])]
    return render(_TEMPLATE, "circuits-attn", data, JS_CORE, _JS_UI, html.escape("".join(tokens_str)))


def display_attention(tokens_str: list[str], patterns: np.ndarray, values_norm: np.ndarray | None = None):
    """``attention_html`` wrapped as an ``IPython.display.HTML`` for a notebook cell."""
    return as_display(attention_html(tokens_str, patterns, values_norm))
