"""Notebook setup for the book: plotly figures that render offline.

plotly's default renderer in a kernel emits only ``application/vnd.plotly.v1+json``, which
Jupyter Book drops (the figure silently disappears); its ``notebook`` renderer inlines 4.8 MB
of plotly.js into every page, and the ``*_connected`` renderers fetch it from a CDN. Instead
each figure is emitted as a small HTML fragment that calls the global ``Plotly``, which the
book loads once per page from ``_static/plotly.min.js`` (copied from the installed plotly
package by ``make book``). The plotly mimetype is kept alongside, so JupyterLab still shows
interactive figures.

Every notebook starts with::

    from circuits.viz.book import setup_plotly
    setup_plotly()

and puts a figure under a caption by gluing it (``glue_figure``), then, in markdown::

    ```{glue:figure} fig-name
    :name: fig-name

    What to look at, and what the paper shows.
    ```
"""

from __future__ import annotations

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

RENDERER_NAME = "circuits_book"
# no toolbar over the figures (it covered their titles and legends); zoom by dragging, reset by double-clicking
FIGURE_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}

# plotly's "responsive" listens to window resizes only; a figure drawn while the page is still
# loading keeps a stale width (and a horizontal scrollbar) once the page's own layout settles.
_RESIZE_WITH_CONTAINER = """
var gd = document.getElementById('{plot_id}');
if (gd && window.ResizeObserver) {
    new ResizeObserver(function () {
        if (gd.offsetWidth) { Plotly.Plots.resize(gd); }
    }).observe(gd.parentElement);
}
"""


class BookHtmlRenderer(MimetypeRenderer):
    """``text/html`` of a figure, without plotly.js and without plotly's MathJax CDN tag."""

    def __init__(self, config: dict | None = None):
        self.config = dict(config or {})

    def to_mimebundle(self, fig_dict):
        html = pio.to_html(fig_dict, config=self.config, include_plotlyjs=False,
                           include_mathjax=False, full_html=False, default_width="100%",
                           default_height=500, post_script=_RESIZE_WITH_CONTAINER,
                           validate=False)
        return {"text/html": html}


def setup_plotly() -> str:
    """Register the book's renderer and make ``plotly_mimetype+circuits_book`` the default.

    Returns the name of the default renderer. Safe to call more than once.
    """
    pio.renderers[RENDERER_NAME] = BookHtmlRenderer(config=FIGURE_CONFIG)
    pio.renderers.default = f"plotly_mimetype+{RENDERER_NAME}"
    return pio.renderers.default


class _Glued:
    """A figure or table as a mimebundle, so that myst-nb's ``glue`` stores it: plotly figures display
    themselves (``_ipython_display_``), which bypasses the metadata ``glue`` attaches."""

    def __init__(self, bundle: dict):
        self.bundle = bundle

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.bundle


def figure_bundle(fig) -> _Glued:
    """``fig`` (plotly) in the book's offline form, ready for ``glue``."""
    bundle = BookHtmlRenderer(config=FIGURE_CONFIG).to_mimebundle(fig.to_dict())
    return _Glued(bundle)


def glue_figure(name: str, fig) -> None:
    """Glue a plotly figure under ``name`` for a ``{glue:figure}`` directive (a figure with a caption)."""
    from myst_nb import glue

    glue(name, figure_bundle(fig), display=False)


def glue_html(name: str, html: str) -> None:
    """Glue an HTML snippet (a table, a widget) under ``name``."""
    from myst_nb import glue

    glue(name, _Glued({"text/html": html}), display=False)


WIDE_PAGE = """<style>
/* this page only: no contents column on the right, the article as wide as the window allows */
.bd-sidebar-secondary { display: none !important; }
.bd-main .bd-content .bd-article-container { max-width: 100% !important; }
</style>"""


def wide_page():
    """An HTML output that widens the page it is on (for the findings table): display it from a cell tagged
    ``remove-input``."""
    from IPython.display import HTML

    return HTML(WIDE_PAGE)
