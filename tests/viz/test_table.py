"""The book's tables: escaped text, raw HTML only where asked, paging data, the search under node."""

import json
import shutil
import subprocess

import pandas as pd
import pytest

from .snippets import extract_data
from circuits.viz.table import JS_CORE, table_html

NODE = shutil.which("node")


def test_short_table_is_plain_and_escaped():
    frame = pd.DataFrame({"token": ["<b>", "·the"], "score": ["0.50", "1.00"], "where": ['<a href="x.html">x</a>'] * 2})
    html = table_html(frame, html_columns=("where",))
    static = html.split('<div class="body">')[1].split("</div>")[0]
    assert "&lt;b&gt;" in static and "<b>" not in static
    assert '<a href="x.html">x</a>' in html  # the link column is HTML
    data = extract_data(html)
    assert data["columns"] == ["token", "score", "where"] and data["kinds"] == ["text", "num", "html"]
    assert data["rows"][0] == ["<b>", "0.50", '<a href="x.html">x</a>']


def test_long_table_ships_every_row_but_shows_one_page():
    frame = pd.DataFrame({"n": range(40), "word": [f"w{i}" for i in range(40)]})
    html = table_html(frame, page_size=10)
    assert len(extract_data(html)["rows"]) == 40 and extract_data(html)["page"] == 10
    static = html.split('<div class="body">')[1].split("</div>")[0]
    assert static.count("<tr>") == 11  # the header and the first page, for readers without JavaScript


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_search_keeps_matching_rows():
    data = {"rows": [["·the", "1"], ["cat", "2"], ["The", "3"]]}
    script = JS_CORE + f"console.log(JSON.stringify([ctMatch({json.dumps(data)}, 'the'), ctMatch({json.dumps(data)}, '')]));"
    out = json.loads(subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True).stdout)
    assert out == [[0, 2], [0, 1, 2]]


def test_column_widths_reach_the_header_and_unknown_columns_are_an_error():
    frame = pd.DataFrame({"claim": ["a"], "ours": ["b"]})
    html = table_html(frame, widths={"ours": "36%"})
    assert '<th class="text" style="width: 36%">ours</th>' in html  # the static table (no JavaScript)
    assert extract_data(html)["widths"] == ["", "36%"]
    with pytest.raises(ValueError, match="lacks"):
        table_html(frame, widths={"mine": "10%"})
