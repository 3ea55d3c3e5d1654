"""The offline attention viewer: self-contained HTML, data round trip, value weighting, the JS under node."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from IPython.display import HTML

from circuits.viz.attention_view import JS_CORE, attention_html, display_attention

from .snippets import decode_data, extract_data, value_weighted

NODE = shutil.which("node")


def random_patterns(L, H, n, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(L, H, n, n)) * 3
    s[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def tokens(n):
    return [f" w{i}" if i % 7 else "\n" for i in range(n)]


def test_html_is_self_contained_and_round_trips():
    L, H, n = 2, 3, 30
    pats = random_patterns(L, H, n)
    vals = np.random.default_rng(1).uniform(0.5, 3, size=(L, H, n))
    toks = tokens(n)
    toks[3] = "</script><b>&"  # must not break out of the data tag
    html = attention_html(toks, pats, vals)
    assert "http" not in html and "src=" not in html and "cdn" not in html.lower()
    assert html.count("</script>") == 2  # only the two real closing tags
    data = extract_data(html)
    assert data["tokens"] == toks
    got_p, got_v = decode_data(data)
    np.testing.assert_allclose(got_p, pats, atol=5e-4 + 1e-12)
    np.testing.assert_allclose(got_v, vals / vals.max(-1, keepdims=True), atol=5e-4 + 1e-12)
    assert decode_data(extract_data(attention_html(toks, pats)))[1] is None
    shown = display_attention(toks, pats)
    assert isinstance(shown, HTML) and extract_data(shown.data) == extract_data(attention_html(toks, pats))
    assert re.search(r'id="(circuits-attn-[\w-]+)"', shown.data).group(1) != re.search(  # unique per snippet
        r'id="(circuits-attn-[\w-]+)"', attention_html(toks, pats)).group(1)
    with pytest.raises(ValueError, match="tokens"):
        attention_html(toks[:-1], pats)


def test_value_weighting_renormalises_rows():
    pats = random_patterns(1, 2, 12)
    vals = np.random.default_rng(2).uniform(0, 4, size=(1, 2, 12))
    vw = value_weighted(pats, vals)
    np.testing.assert_allclose(vw.sum(-1), 1.0, atol=1e-12)
    for h in range(2):
        for t in range(12):
            row = pats[0, h, t] * vals[0, h]
            np.testing.assert_allclose(vw[0, h, t], row / row.sum())
    assert np.all(value_weighted(pats, np.zeros((1, 2, 12))) == 0)


def test_page_size_for_two_layers_eight_heads_two_hundred_tokens():
    html = attention_html(tokens(200), random_patterns(2, 8, 200), np.ones((2, 8, 200)))
    size = len(html.encode("utf-8"))
    print(f"attention view, 2 x 8 heads x 200 tokens: {size / 1e6:.2f} MB")
    assert size < 2e6


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_js_rows_match_python():
    pats = random_patterns(2, 2, 9)
    vals = np.random.default_rng(3).uniform(0.1, 2, size=(2, 2, 9))
    data = extract_data(attention_html(tokens(9), pats, vals))
    script = JS_CORE + "var D = " + json.dumps(data) + ";\nconsole.log(JSON.stringify(" \
        "[attnRow(D, 1, 0, 6, false), attnRow(D, 1, 0, 6, true), attnRow(D, 0, 1, 0, true)]));"
    rows = json.loads(subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True).stdout)
    dec_p, dec_v = decode_data(data)
    np.testing.assert_allclose(rows[0], dec_p[1, 0, 6, :7])
    np.testing.assert_allclose(rows[1], value_weighted(dec_p, dec_v)[1, 0, 6, :7], atol=1e-12)
    assert sum(rows[1]) == pytest.approx(1.0) and rows[2] == [1.0]


FAKE_DOM = r"""
function El(tag) { this.tag = tag; this.children = []; this.style = {}; this.listeners = {};
  this.value = "0"; this.checked = false; this.textContent = ""; this.title = ""; this.parentNode = {style: {}}; }
El.prototype.appendChild = function (c) { this.children.push(c); return c; };
El.prototype.addEventListener = function (ev, f) { (this.listeners[ev] = this.listeners[ev] || []).push(f); };
El.prototype.fire = function (ev) { (this.listeners[ev] || []).forEach(function (f) { f(); }); };
var parts = {".av-layer": new El("select"), ".av-head": new El("select"), ".av-vw": new El("input"),
             ".av-rel": new El("input"), ".av-info": new El("span"), ".av-text": new El("div")};
var root = new El("div");
root.querySelector = function (q) { return q.indexOf("json") >= 0 ? {textContent: DATA} : parts[q]; };
var document = {getElementById: function () { return root; }, createElement: function (t) { return new El(t); }};
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_ui_script_runs_hover_and_pin_under_a_fake_dom():
    pats = random_patterns(2, 2, 8)
    pats[1, 1, 5] = [0.5, 0, 0, 0, 0.5, 0, 0, 0]
    html = attention_html(tokens(8), pats, np.ones((2, 2, 8)))
    js = re.findall(r"<script>(.*?)</script>", html, re.S)[0]
    data = re.search(r'<script type="application/json">(.*?)</script>', html, re.S).group(1)
    harness = FAKE_DOM.replace("DATA", json.dumps(data)) + js + r"""
    var text = parts[".av-text"], toks = text.children.filter(function (c) { return c.tag === "span"; });
    parts[".av-layer"].value = "1"; parts[".av-head"].value = "1"; parts[".av-rel"].checked = false;
    toks[5].fire("mouseenter");
    var hover = toks.map(function (s) { return s.style.background || ""; });
    toks[5].fire("click"); toks[2].fire("mouseenter");  // pinned: hovering elsewhere changes nothing
    var pinned = toks.map(function (s) { return s.style.background || ""; });
    console.log(JSON.stringify({hover: hover, pinned: pinned, info: parts[".av-info"].textContent,
                                layers: parts[".av-layer"].children.length, n: toks.length}));
    """
    out = json.loads(subprocess.run([NODE, "-e", harness], capture_output=True, text=True, check=True).stdout)
    assert out["n"] == 8 and out["layers"] == 2
    assert out["hover"][0] == out["hover"][4] == "rgba(214, 39, 40, 0.500)"
    assert out["hover"][1] == out["hover"][6] == ""
    assert out["pinned"] == out["hover"] and "pinned" in out["info"]


def test_the_viewer_opens_on_the_head_asked_for_and_refuses_one_the_model_lacks():
    pats = random_patterns(2, 3, 10)
    assert extract_data(attention_html(tokens(10), pats, start=(1, 2)))["start"] == [1, 2]
    assert "start" not in extract_data(attention_html(tokens(10), pats))
    with pytest.raises(ValueError, match="not a head"):
        attention_html(tokens(10), pats, start=(2, 0))
