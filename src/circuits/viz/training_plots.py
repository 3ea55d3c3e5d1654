"""Plotly figures of training: loss curves, the gap between two runs, measurements against training tokens in
panels or as heatmaps (Olsson et al.'s loss by context position over training), with a span of training (the
phase change) shaded. Each takes data as arguments and returns a figure; nothing here reads a log file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .plots import LAYOUT


def loss_curves(logs: Mapping[str, list[dict]], title: str = "Training and validation loss",
                band: tuple[float, float] | None = None, band_label: str = "") -> go.Figure:
    """Train loss (thin) and validation loss (markers) against tokens, one colour per run; ``band`` shades a
    window of training tokens (the phase change), labelled ``band_label``."""
    fig = go.Figure()
    colours = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a"]
    for (name, rows), colour in zip(logs.items(), colours):
        fig.add_scatter(x=[r["tokens"] for r in rows], y=[r["train_loss"] for r in rows], mode="lines",
                        name=f"{name} train", line=dict(color=colour, width=1), opacity=0.5)
        ev = [r for r in rows if "val_loss" in r]  # evaluation rows
        fig.add_scatter(x=[r["tokens"] for r in ev], y=[r["val_loss"] for r in ev], mode="lines+markers",
                        name=f"{name} validation", line=dict(color=colour, width=2))
    fig.update_layout(title=title, xaxis_title="training tokens", yaxis_title="loss (nats/token)", **LAYOUT)
    fig.update_xaxes(type="log")
    shade_span(fig, band, band_label, log_x=True)
    return fig


def loss_gap(rows_a: list[dict], rows_b: list[dict], title: str, ylabel: str,
             band: tuple[float, float] | None = None, band_label: str = "") -> go.Figure:
    """Validation loss of run b minus run a at the training tokens both evaluated (below zero: b is ahead),
    against tokens on a log axis, with ``band`` shaded."""
    a = {r["tokens"]: r["val_loss"] for r in rows_a if "val_loss" in r}
    both = [r for r in rows_b if "val_loss" in r and r["tokens"] in a]
    fig = go.Figure(go.Scatter(x=[r["tokens"] for r in both], y=[r["val_loss"] - a[r["tokens"]] for r in both],
                               mode="lines+markers", line=dict(color="#00cc96", width=2), showlegend=False))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title="training tokens", yaxis_title=ylabel, **{**LAYOUT, "height": 320})
    fig.update_xaxes(type="log")
    shade_span(fig, band, band_label, log_x=True)
    return fig


def shade_span(fig: go.Figure, window: tuple[float, float] | None, label: str = "", log_x: bool = False,
               fill: str = "rgba(214, 39, 40, 0.12)", label_color: str = "rgb(160, 30, 30)",
               label_side: str = "right", **where) -> None:
    """Shade x0..x1 (e.g. the phase change) in one panel of ``fig`` (``where``: row=, col=) or in all, with
    ``label`` at the top of x0, outside the span (``label_side="right"``: the text ends at x0) or inside it
    ("left"). On a log x-axis the label is placed by hand: plotly positions a shape's label in data units, an
    annotation's in log10 units, so the shape's own label would land off the axis."""
    if window is None:
        return
    x0, x1 = float(window[0]), float(window[1])
    font = dict(size=11, color=label_color)
    fig.add_vrect(x0=x0, x1=x1, fillcolor=fill, line_width=0, layer="below", exclude_empty_subplots=False, **where)
    if label:
        xref = "x" if not where else fig.get_subplot(**where).xaxis.plotly_name.replace("axis", "")
        yref = ("y" if not where else fig.get_subplot(**where).yaxis.plotly_name.replace("axis", "")) + " domain"
        fig.add_annotation(x=math.log10(x0) if log_x else x0, y=1, xref=xref, yref=yref, text=label,
                           showarrow=False, xanchor=label_side, yanchor="top", font=font)


def training_panels(panels: Sequence[Mapping], title: str, window: tuple[float, float] | None = None,
                    window_label: str = "", cols: int = 2, log_x: bool = True) -> go.Figure:
    """Measurements against training tokens, one panel per entry of ``panels``: a dict with ``title``,
    ``ylabel``, ``lines`` and optionally ``hline`` (a dotted reference level). Each line is a dict with ``x``,
    ``y`` and ``name``, and optionally ``color``, ``width``, ``dash``, ``legend`` (False: no legend entry),
    ``group`` (lines of one group toggle together) and ``marker`` (a plotly symbol: points, not a line).
    ``window`` = (x0, x1) shades the same span of training in every panel (e.g. the phase change), labelled
    ``window_label`` in the first; the panels share one x range."""
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p["title"] for p in panels],
                        horizontal_spacing=0.15, vertical_spacing=0.16 if rows > 1 else 0.1)
    for i, panel in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for line in panel["lines"]:
            fig.add_scatter(x=[float(v) for v in line["x"]], y=[float(v) for v in line["y"]],
                            mode="markers" if line.get("marker") else "lines",
                            name=line["name"], legendgroup=line.get("group", line["name"]),
                            showlegend=line.get("legend", True),
                            line=dict(color=line.get("color"), width=line.get("width", 2), dash=line.get("dash")),
                            marker=dict(color=line.get("color"), symbol=line.get("marker"), size=10),
                            row=r, col=c)
        if panel.get("hline") is not None:
            fig.add_hline(y=float(panel["hline"]), line_dash="dot", line_color="grey", row=r, col=c)
        shade_span(fig, window, window_label if i == 0 else "", log_x=log_x, row=r, col=c)
        fig.update_xaxes(type="log" if log_x else "linear", title_text="training tokens", row=r, col=c)
        fig.update_yaxes(title_text=panel.get("ylabel", ""), row=r, col=c)
    fig.update_xaxes(matches="x")  # one span of training in every panel, so the shaded windows line up
    fig.update_layout(title=title, **{**LAYOUT, "height": 330 * rows + 90,
                                      "margin": dict(l=60, r=20, t=90, b=50)})
    return fig


def _log_edges(x: Sequence[float]) -> list[float]:
    """Cell edges around increasing positive centres ``x``, halfway between neighbours in log scale."""
    x = [float(v) for v in x]
    if len(x) == 1:
        return [x[0] / 1.25, x[0] * 1.25]
    mids = [(a * b) ** 0.5 for a, b in zip(x, x[1:])]
    return [x[0] ** 2 / mids[0], *mids, x[-1] ** 2 / mids[-1]]


def training_heatmaps(xs: Sequence[Sequence[float]], y_edges: Sequence[float], mats: Sequence, names: Sequence[str],
                      title: str, xlabel: str, ylabel: str, colorbar: str = "", symmetric: bool = False,
                      windows: Sequence[tuple[float, float] | None] | None = None, window_label: str = "",
                      hlines: Sequence[float] = (), zmax: float | None = None) -> go.Figure:
    """Heatmaps side by side over training on ONE colour scale, one per run: ``mats[i]`` [len(xs[i]), n_bins]
    (e.g. the loss in each bin of context positions at each evaluation), training tokens ``xs[i]`` across
    (one range for all panels) and bins with edges ``y_edges`` [n_bins + 1] upwards, both on log scales.
    ``symmetric``: red above 0, blue below (for differences), up to ``zmax`` (values beyond it saturate;
    default: the largest |value|); otherwise light (low) to dark (high). ``windows[i]`` = (x0, x1) or None
    marks run i's phase change with dotted lines; ``hlines`` draws dotted levels of y in every panel."""
    n = len(mats)
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(names), shared_yaxes=True, horizontal_spacing=0.04)
    values = [float(v) for m in mats for r in m for v in r]
    if symmetric:
        top = zmax or max((abs(v) for v in values), default=1.0) or 1.0
        colours = dict(zmin=-top, zmax=top, colorscale="RdBu", reversescale=True)
    else:
        colours = dict(zmin=min(values, default=0.0), zmax=max(values, default=1.0), colorscale="Viridis")
    for i, (x, mat) in enumerate(zip(xs, mats), 1):
        z = [[round(float(mat[t][b]), 4) for t in range(len(x))] for b in range(len(y_edges) - 1)]
        fig.add_heatmap(z=z, x=_log_edges(x), y=[float(v) for v in y_edges], showscale=i == n,
                        colorbar=dict(title=colorbar), name=names[i - 1],
                        hovertemplate=f"{xlabel}: %{{x:.3s}}<br>{ylabel}: %{{y:.0f}}<br>%{{z:.3f}}"
                                      f"<extra>{names[i - 1]}</extra>", row=1, col=i, **colours)
        fig.update_xaxes(type="log", title_text=xlabel, row=1, col=i)
        window = windows[i - 1] if windows else None
        if window is not None:
            for j, edge in enumerate(window):
                fig.add_vline(x=float(edge), line=dict(color="black", dash="dot", width=1.5), row=1, col=i,
                              annotation_text=window_label if j == 0 and window_label else None,
                              annotation_position="top left", annotation_font=dict(size=10))
        for level in hlines:
            fig.add_hline(y=float(level), line=dict(color="white", dash="dot", width=1), row=1, col=i)
    x_edges = [e for x in xs for e in _log_edges(x)]
    lo, hi = min(x_edges), max(x_edges)
    nice = lambda a, b: [m * 10 ** k for k in range(-3, 13) for m in (1, 2, 5) if a <= m * 10 ** k <= b]
    fig.update_xaxes(range=[math.log10(lo), math.log10(hi)], tickvals=nice(lo, hi), tickformat="~s")
    fig.update_yaxes(type="log", tickvals=nice(float(y_edges[0]), float(y_edges[-1])), tickformat="~s")
    fig.update_yaxes(title_text=ylabel, row=1, col=1)
    fig.update_layout(title=title, **{**LAYOUT, "height": 460, "margin": dict(l=70, r=20, t=90, b=60)})
    return fig
