"""The searchable token table: self-contained HTML, data round trip, the JS under node."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from .snippets import extract_data
from circuits.viz.token_browser import JS_CORE, SEPARATOR, browser_data, browser_html
from circuits.viz.tokens import show_token

NODE = shutil.which("node")
WORDS = [" the", "Elizabeth", " Elizabeth", "\n", "</script><b>&", " elizabeth", "x", " of", " Darcy", "y"]


def fake_dump(H=2, V=10, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randint(0, V, (H, V, k), generator=g) for name in ("ov_out", "qk_src", "qk_dst")}


def test_data_round_trips_and_html_is_self_contained():
    dump = fake_dump()
    ids = [2, 0, 4, 7]
    counts = np.arange(10) * 10
    data = browser_data(dump, ids, WORDS.__getitem__, counts)
    assert data["heads"] == 2 and data["k"] == 3
    assert [data["names"][r[0]] for r in data["rows"]] == [WORDS[i] for i in ids]  # row tokens come first
    for i, t in enumerate(ids):
        assert data["rows"][i][1] == counts[t]
        flat = data["rows"][i][2]
        for kind, name in enumerate(("ov_out", "qk_src", "qk_dst")):
            for h in range(2):
                got = [data["names"][x] for x in flat[(kind * 2 + h) * 3:(kind * 2 + h + 1) * 3]]
                assert got == [WORDS[int(x)] for x in dump[name][h, t]]
    snippet = browser_html(data)
    assert "http" not in snippet and "src=" not in snippet  # nothing fetched
    embedded = re.search(r'<script type="application/json">(.*?)</script>', snippet, re.S).group(1)
    assert "<" not in embedded and "&" not in embedded  # the token "</script><b>&" cannot close the tag
    assert extract_data(snippet) == data
    assert "circuits-tokens-" in browser_html(data)


def test_data_for_a_dump_of_some_tokens_only():
    full = fake_dump(V=10)
    some = [7, 2, 5]
    partial = {name: t[:, some] for name, t in full.items()}  # what token_dump(..., tokens=some) returns
    counts = np.arange(10)
    want = browser_data(full, [5, 7], WORDS.__getitem__, counts)
    assert browser_data(partial, [5, 7], WORDS.__getitem__, counts, dump_tokens=some) == want


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_js_find_and_lists():
    data = browser_data(fake_dump(), list(range(10)), WORDS.__getitem__, np.ones(10))
    script = JS_CORE + "var D = " + json.dumps(data) + ";\nconsole.log(JSON.stringify(" \
        "[tbFind(D, 'elizabeth', 10), tbFind(D, ' Elizabeth', 10), tbFind(D, '', 3), tbFind(D, 'zzz', 5), " \
        "tbList(D, 4, 2, 1), tbShow('a\\nb'), tbShow(' x\\t'), tbShow(''), tbFind(D, '·darcy', 5)]));"
    out = json.loads(subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True).stdout)
    assert out[0] == [1, 2, 5]  # all three are exact matches once stripped and lower-cased
    assert out[1] == [1, 2, 5]
    assert out[2] == [0, 1, 2] and out[3] == []
    assert out[4] == [data["names"][x] for x in data["rows"][4][2][(2 * 2 + 1) * 3:(2 * 2 + 2) * 3]]
    assert out[5] == show_token("a\nb") == "a↵b"  # the marks of viz.tokens, never a JSON string
    assert out[6] == show_token(" x\t") and out[7] == show_token("") == "∅"
    assert out[8] == [8]  # a reader may type the marks: "·darcy" finds " Darcy"


FAKE_DOM = r"""
function El(tag) { this.tag = tag; this.children = []; this.listeners = {}; this.value = ""; this.textContent = "";
  this.className = ""; }
El.prototype.appendChild = function (c) { this.children.push(c); return c; };
El.prototype.removeChild = function (c) { this.children.splice(this.children.indexOf(c), 1); };
Object.defineProperty(El.prototype, "firstChild", {get: function () { return this.children[0] || null; }});
El.prototype.addEventListener = function (ev, f) { (this.listeners[ev] = this.listeners[ev] || []).push(f); };
El.prototype.fire = function (ev) { (this.listeners[ev] || []).forEach(function (f) { f(); }); };
var parts = {".tb-query": new El("input"), ".tb-head": new El("select"), ".tb-body": new El("tbody"),
             ".tb-info": new El("span")};
var root = new El("div");
root.querySelector = function (q) { return q.indexOf("json") >= 0 ? {textContent: DATA} : parts[q]; };
var document = {getElementById: function () { return root; }, createElement: function (t) { return new El(t); }};
function text(c) { return c.children.length ? c.children.map(text).join("") : c.textContent; }  // what a cell shows
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_ui_filters_and_switches_heads_under_a_fake_dom():
    data = browser_data(fake_dump(), list(range(10)), WORDS.__getitem__, np.arange(10))
    html = browser_html(data)
    js = re.findall(r"<script>(.*?)</script>", html, re.S)[0]
    raw = re.search(r'<script type="application/json">(.*?)</script>', html, re.S).group(1)
    harness = FAKE_DOM.replace("DATA", json.dumps(raw)) + js + r"""
    var body = parts[".tb-body"], n0 = body.children.length;
    parts[".tb-query"].value = "darcy"; parts[".tb-query"].fire("input");
    var n1 = body.children.length, first = body.children[0].children.map(text);
    parts[".tb-head"].value = "1"; parts[".tb-head"].fire("change");
    var n2 = body.children.length, one = body.children[0].children.map(text);
    var seps = body.children[0].children[3].children.map(function (c) { return c.className; });
    console.log(JSON.stringify({n0: n0, n1: n1, n2: n2, first: first, one: one, info: parts[".tb-info"].textContent,
                                options: parts[".tb-head"].children.length, seps: seps}));
    """
    out = json.loads(subprocess.run([NODE, "-e", harness], capture_output=True, text=True, check=True).stdout)
    assert out["options"] == 3  # all, 0, 1
    assert out["n0"] == 20 and out["n1"] == 2 and out["n2"] == 1  # 10 tokens x 2 heads; " Darcy" x 2 heads; 1 head
    assert out["first"][0] == "·Darcy" and out["first"][1] == "8" and out["first"][2] == "0"
    # tokens separated by a grey "│", so that punctuation tokens do not run together
    assert out["one"][2] == "1" and out["one"][3] == f" {SEPARATOR} ".join(show_token(data["names"][x])
                                                                         for x in data["rows"][8][2][3:6])
    assert out["seps"] == ["", "tb-sep", "", "tb-sep", ""]
    assert out["info"].startswith("1 token shown")
