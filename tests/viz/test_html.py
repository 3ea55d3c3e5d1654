"""The shared snippet plumbing: JSON that cannot close its <script>, ids, data round trip, clear errors."""

import pytest

from circuits.viz.html import json_for_script, render

from .snippets import extract_data

TEMPLATE = '<div id="%(id)s"><script type="application/json">%(data)s</script><script>%(core)s%(ui)s</script>' \
           '<noscript>%(plain)s</noscript></div>'


def test_json_cannot_close_the_script_tag_and_round_trips():
    data = {"tokens": ["</script><script>alert(1)</script>", "a & b", "ünï"]}
    text = json_for_script(data)
    assert "<" not in text and ">" not in text and "&" not in text
    snippet = render(TEMPLATE, "t", data, "", "var id = '%(id)s';", "plain")
    assert snippet.count("</script>") == 2  # only the template's own
    assert extract_data(snippet) == data


def test_ids_are_unique_and_fill_the_ui():
    a, b = (render(TEMPLATE, "view", {"x": 1}, "", "root('%(id)s')", "") for _ in range(2))
    id_a = a.split('"')[1]
    assert id_a.startswith("view-") and f"root('{id_a}')" in a
    assert id_a != b.split('"')[1]


def test_extract_data_names_a_snippet_without_data():
    with pytest.raises(ValueError, match="no embedded data"):
        extract_data("<div>nothing here</div>")
