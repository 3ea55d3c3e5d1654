"""The book's table of contents and configuration: no chapter dropped, no output committed,
and the settings that keep the build offline and loud stay in place."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _toc_entries(node) -> list[str]:
    """Every ``file:``/``root:`` entry of a (nested) jb-book toc."""
    found = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(node[key])
        if "glob" in node:
            raise AssertionError(f"_toc.yml uses glob {node['glob']!r}: list chapters explicitly")
        for value in node.values():
            if isinstance(value, (list, dict)):
                found += _toc_entries(value)
    elif isinstance(node, list):
        for item in node:
            found += _toc_entries(item)
    return found


def _resolve(entry: str) -> Path | None:
    """The source file a toc entry names (Jupyter Book allows leaving out the suffix)."""
    path = ROOT / entry
    candidates = [path] if path.suffix in (".md", ".ipynb") else [
        path.with_name(path.name + ext) for ext in (".md", ".ipynb")]
    existing = [c for c in candidates if c.is_file()]
    return existing[0] if len(existing) == 1 else None


def _book_pages() -> list[Path]:
    """Pages under book/, skipping _underscore and .hidden folders (assets, checkpoints)."""
    pages = []
    for path in sorted(BOOK.rglob("*")):
        parts = path.relative_to(BOOK).parts
        if any(p.startswith(("_", ".")) for p in parts):
            continue
        if path.suffix in (".md", ".ipynb") and path.is_file():
            pages.append(path)
    return pages


def test_toc_lists_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    entries = _toc_entries(toc)
    missing = [e for e in entries if _resolve(e) is None]
    assert not missing, f"_toc.yml names files that do not exist (or are ambiguous): {missing}"
    assert len(entries) == len(set(entries)), f"_toc.yml lists a file twice: {entries}"


def test_every_book_page_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {_resolve(e) for e in _toc_entries(toc)}
    dropped = [str(p.relative_to(ROOT)) for p in _book_pages() if p not in listed]
    assert not dropped, f"pages under book/ missing from _toc.yml (they would not be built): {dropped}"


def test_notebooks_have_no_outputs():
    dirty = []
    for path in _book_pages():
        if path.suffix != ".ipynb":
            continue
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count")):
                dirty.append(f"{path.relative_to(ROOT)} cell {i}")
    assert not dirty, ("notebooks must be committed without outputs (clear them, e.g. "
                       f"`jupyter nbconvert --clear-output --inplace`): {dirty}")


def test_config_builds_offline_and_fails_loudly():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    execute = config["execute"]
    assert execute["execute_notebooks"] == "force"
    assert execute["raise_on_error"] is True
    assert config["only_build_toc_files"] is True
    sphinx = config["sphinx"]["config"]
    # mathjax_path is relative to _static/; html_extra_path copies book/_extra to the site root.
    extra = [ROOT / p for p in sphinx["html_extra_path"]]
    mathjax = Path(sphinx["mathjax_path"])
    assert mathjax.parts[0] == ".." and not str(mathjax).startswith(("http:", "https:", "//"))
    assert any((e / Path(*mathjax.parts[1:])).is_file() for e in extra), "committed MathJax missing"
    assert any((e / "mathjax" / "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()
               for e in extra), "MathJax fonts missing"
    assert "mystnb.unknown_mime_type" in sphinx["suppress_warnings"]
    assert "url" not in config.get("repository", {}) or "github.com" in config["repository"]["url"]


def test_setup_plotly_emits_offline_html():
    import plotly.graph_objects as go
    import plotly.io as pio

    from circuits.viz.book import setup_plotly

    old = pio.renderers.default
    try:
        assert setup_plotly() == "plotly_mimetype+circuits_book"
        bundle = go.Figure(go.Scatter(y=[1, 3, 2]))._repr_mimebundle_()
    finally:
        pio.renderers.default = old
    html = bundle["text/html"]
    assert "application/vnd.plotly.v1+json" in bundle  # JupyterLab keeps its interactive figure
    assert "Plotly.newPlot" in html
    assert "<script src" not in html and "cdn" not in html.lower()  # no plotly.js, no MathJax CDN
    assert len(html) < 20_000  # a fragment, not the 4.8 MB library
