"""Plotly figures for the book. Each takes data as arguments and returns a figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=60, b=50))


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              hover: Sequence[str] | None = None) -> go.Figure:
    """A plain bar chart (corpus composition, per-head statistics, ...)."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), hovertext=hover))
    fig.update_layout(title=title, yaxis_title=ylabel, **LAYOUT)
    return fig


def histogram(values: Sequence[float], title: str, xlabel: str, log_x: bool = False, bins: int = 40) -> go.Figure:
    """Counts of ``values`` in ``bins`` bins, drawn as bars; ``log_x`` spaces the bins evenly in log10 (plotly's
    own histogram bins linearly, which leaves a log axis empty). Non-positive values are dropped on a log axis."""
    values = np.asarray(values, dtype=float)
    if log_x:
        values = values[values > 0]
        edges = np.logspace(np.log10(values.min()), np.log10(values.max()), bins + 1)
    else:
        edges = np.linspace(values.min(), values.max(), bins + 1)
    counts, edges = np.histogram(values, edges)
    centres = np.sqrt(edges[:-1] * edges[1:]) if log_x else (edges[:-1] + edges[1:]) / 2
    hover = [f"{lo:,.0f} to {hi:,.0f}: {c:,}" for lo, hi, c in zip(edges, edges[1:], counts)]
    fig = go.Figure(go.Bar(x=centres, y=counts, width=np.diff(edges), hovertext=hover, hoverinfo="text",
                           marker_line_width=0))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title="count", bargap=0, **LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


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


def scatter(x: Sequence[float], y: Sequence[float], hover: Sequence[str], title: str, xlabel: str, ylabel: str,
            diagonal: bool = False, color: Sequence[float] | None = None, color_label: str = "") -> go.Figure:
    """Scatter with hover labels; ``diagonal`` draws y = x."""
    marker = dict(size=4, opacity=0.5)
    if color is not None:
        marker.update(color=list(color), colorscale="Viridis", showscale=True, colorbar=dict(title=color_label))
    fig = go.Figure(go.Scattergl(x=list(x), y=list(y), mode="markers", hovertext=list(hover), marker=marker))
    if diagonal:
        lo, hi = float(min(min(x), min(y))), float(max(max(x), max(y)))
        fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="grey", dash="dot"), showlegend=False)
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, showlegend=False, **LAYOUT)
    return fig


def _unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels made unique (a categorical axis merges equal strings): repeats get " #2", " #3", ..."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def heatmap_selector(mats: Sequence, row_labels: Sequence[str], col_labels: Sequence[str], names: Sequence[str],
                     title: str, xlabel: str, ylabel: str, colorbar: str = "", height: int = 720,
                     symmetric: bool = True) -> go.Figure:
    """One heatmap per matrix (``mats`` [n, rows, cols], e.g. one per head) and a dropdown to switch.

    With ``symmetric`` each matrix has its own colour range centred on 0 (red positive, blue
    negative); otherwise white (0) to red (its maximum). Rows run top to bottom in the order given.
    Values are rounded to 4 significant digits to keep pages small.
    """
    fig = go.Figure()
    rows, cols = _unique_labels(row_labels), _unique_labels(col_labels)
    for i, (mat, name) in enumerate(zip(mats, names)):
        z = [[float(f"{float(v):.4g}") for v in r] for r in mat]
        top = max((abs(v) for r in z for v in r), default=1.0) or 1.0
        colours = dict(zmin=-top, zmax=top, colorscale="RdBu", reversescale=True) if symmetric else \
            dict(zmin=0, zmax=top, colorscale="Reds")
        fig.add_heatmap(z=z, x=cols, y=rows, colorbar=dict(title=colorbar), visible=i == 0, name=name,
                        hovertemplate=f"{ylabel}: %{{y}}<br>{xlabel}: %{{x}}<br>%{{z:.3g}}<extra></extra>",
                        **colours)
    buttons = [dict(label=name, method="update",
                    args=[{"visible": [j == i for j in range(len(names))]}, {"title.text": f"{title}: {name}"}])
               for i, name in enumerate(names)]
    fig.update_layout(title=f"{title}: {names[0]}", xaxis_title=xlabel, yaxis_title=ylabel,
                      updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.12,
                                        yanchor="top", showactive=True)],
                      **{**LAYOUT, "height": height, "margin": dict(l=120, r=20, t=80, b=120)})
    fig.update_xaxes(type="category", tickangle=-60, tickfont=dict(size=9))
    fig.update_yaxes(type="category", autorange="reversed", tickfont=dict(size=9))
    return fig


def eigenvalue_planes(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]], hovers: Sequence[Sequence[str]],
                      names: Sequence[str], title: str, reference: float | None = None, cols: int = 4) -> go.Figure:
    """Eigenvalues on the complex plane, one small panel per head (points given as x, y coordinates,
    e.g. the log-scaled radius at the eigenvalue's angle). ``reference`` draws a dotted circle of that
    radius; the dotted axes cross at 0. Points right of the vertical axis have a positive real part."""
    n = len(names)
    rows = -(-n // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(names), horizontal_spacing=0.04,
                        vertical_spacing=0.12)
    lim = max((abs(float(v)) for seq in (*xs, *ys) for v in seq), default=1.0) * 1.1 or 1.0
    shapes = []  # added in one go: plotly re-validates every shape on each add_shape (seconds for 12 panels)
    for i, (x, y, hover) in enumerate(zip(xs, ys, hovers)):
        r, c = i // cols + 1, i % cols + 1
        colour = ["#d62728" if float(v) > 0 else "#1f77b4" for v in x]
        fig.add_scatter(x=list(x), y=list(y), mode="markers", hovertext=list(hover), hoverinfo="text",
                        marker=dict(size=6, color=colour, opacity=0.8), showlegend=False, row=r, col=c)
        xa, ya = f"x{i + 1 if i else ''}", f"y{i + 1 if i else ''}"
        if reference:
            shapes.append(dict(type="circle", xref=xa, yref=ya, x0=-reference, y0=-reference, x1=reference,
                               y1=reference, line=dict(color="grey", dash="dot", width=1)))
        shapes += [dict(type="line", xref=f"{xa} domain", yref=ya, x0=0, x1=1, y0=0, y1=0,
                        line=dict(color="lightgrey", width=1)),
                   dict(type="line", xref=xa, yref=f"{ya} domain", x0=0, x1=0, y0=0, y1=1,
                        line=dict(color="lightgrey", width=1))]
        fig.update_xaxes(range=[-lim, lim], showticklabels=False, row=r, col=c)
        fig.update_yaxes(range=[-lim, lim], showticklabels=False, scaleanchor=xa, row=r, col=c)
    fig.update_layout(title=title, shapes=shapes, **{**LAYOUT, "height": 260 * rows + 100,
                                                     "margin": dict(l=30, r=30, t=100, b=30)})
    return fig


def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[float]], title: str, ylabel: str,
                 thresholds: Mapping[str, float] | None = None) -> go.Figure:
    """Side-by-side bars: one group per category (e.g. head), one bar per series; optional dotted
    horizontal lines labelled by ``thresholds``."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_bar(x=list(categories), y=[float(v) for v in values], name=name)
    for label, y in (thresholds or {}).items():
        fig.add_hline(y=y, line_dash="dot", line_color="grey", annotation_text=label, annotation_position="top left")
    fig.update_layout(title=title, yaxis_title=ylabel, barmode="group", **LAYOUT)
    return fig


def shared_heatmaps(mats: Sequence, names: Sequence[str], row_labels: Sequence[str], col_labels: Sequence[str],
                    title: str, xlabel: str, ylabel: str, colorbar: str = "", decimals: int = 3,
                    annotate: bool | None = None) -> go.Figure:
    """Heatmaps side by side on ONE colour scale centred on 0 (e.g. Q-, K- and V-composition minus the
    random baseline, [h1, h2] each): red above 0, blue below. Rows run top to bottom in the order given.
    ``annotate`` writes each value in its cell; by default only while the cells are wide enough
    (at most 18 columns in all), otherwise values show on hover only."""
    n = len(names)
    fig = make_subplots(rows=1, cols=n, subplot_titles=list(names), shared_yaxes=True, horizontal_spacing=0.03)
    top = max((abs(float(v)) for m in mats for r in m for v in r), default=1.0) or 1.0
    if annotate is None:
        annotate = n * len(col_labels) <= 18
    for i, mat in enumerate(mats, 1):
        z = [[round(float(v), decimals) for v in r] for r in mat]
        fig.add_heatmap(z=z, x=list(col_labels), y=list(row_labels), zmin=-top, zmax=top, colorscale="RdBu",
                        reversescale=True, showscale=i == n, colorbar=dict(title=colorbar),
                        text=[[f"{v:.{decimals - 1}f}" for v in r] for r in z] if annotate else None,
                        texttemplate="%{text}" if annotate else None, textfont=dict(size=9), name=names[i - 1],
                        hovertemplate=f"{ylabel}: %{{y}}<br>{xlabel}: %{{x}}<br>%{{z}}<extra>{names[i - 1]}</extra>",
                        row=1, col=i)
        fig.update_xaxes(type="category", title_text=xlabel, row=1, col=i)
    fig.update_yaxes(type="category", autorange="reversed", title_text=ylabel, row=1, col=1)
    fig.update_layout(title=title, **{**LAYOUT, "height": 460, "margin": dict(l=70, r=20, t=90, b=60)})
    return fig


def annotated_heatmap(mat, row_labels: Sequence[str], col_labels: Sequence[str], title: str, xlabel: str,
                      ylabel: str, colorbar: str = "", decimals: int = 2) -> go.Figure:
    """One heatmap of non-negative values (e.g. shares of attention), white (0) to red (the largest value),
    each value written in its cell. Rows run top to bottom in the order given."""
    z = [[round(float(v), decimals) for v in r] for r in mat]
    top = max((v for r in z for v in r), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=list(col_labels), y=list(row_labels), zmin=0, zmax=top, colorscale="Reds",
                               colorbar=dict(title=colorbar), text=[[f"{v:.{decimals}f}" for v in r] for r in z],
                               texttemplate="%{text}", textfont=dict(size=10),
                               hovertemplate=f"{ylabel}: %{{y}}<br>{xlabel}: %{{x}}<br>%{{z}}<extra></extra>"))
    fig.update_xaxes(type="category", title_text=xlabel)
    fig.update_yaxes(type="category", autorange="reversed", title_text=ylabel)
    fig.update_layout(title=title, **{**LAYOUT, "height": max(300, 30 * len(z) + 150)})
    return fig


def labelled_scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], groups: Sequence[str],
                     title: str, xlabel: str, ylabel: str, region: tuple[float, float, float, float] | None = None,
                     region_label: str = "", hover: Sequence[str] | None = None) -> go.Figure:
    """A few labelled points (e.g. one per head), one colour per group (e.g. per layer).

    ``region`` = (x0, x1, y0, y1) shades a rectangle, e.g. the (+, +) corner where induction heads
    sit, annotated with ``region_label``. Dotted lines mark x = 0 and y = 0 when they are in range.
    """
    fig = go.Figure()
    hover = list(hover) if hover is not None else list(labels)
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        fig.add_scatter(x=[float(x[i]) for i in idx], y=[float(y[i]) for i in idx], mode="markers+text",
                        text=[labels[i] for i in idx], textposition="top center", textfont=dict(size=10),
                        hovertext=[hover[i] for i in idx], hoverinfo="text", name=group,
                        marker=dict(size=9, opacity=0.85))
    if region is not None:
        x0, x1, y0, y1 = region
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, fillcolor="rgba(44, 160, 44, 0.12)",
                      line=dict(color="rgba(44, 160, 44, 0.6)", dash="dot"), layer="below")
        if region_label:
            fig.add_annotation(x=x1, y=y1, text=region_label, showarrow=False, xanchor="right", yanchor="top",
                               font=dict(color="rgb(44, 120, 44)"))
    if min(map(float, x)) < 0 < max(map(float, x)) or region is not None:
        fig.add_vline(x=0, line=dict(color="lightgrey", dash="dot", width=1))
    if min(map(float, y)) < 0 < max(map(float, y)) or region is not None:
        fig.add_hline(y=0, line=dict(color="lightgrey", dash="dot", width=1))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, **LAYOUT)
    return fig


def line_chart(x: Sequence[float], series: Mapping[str, Sequence[float]], title: str, xlabel: str, ylabel: str,
               log_x: bool = False) -> go.Figure:
    """One line per series over a shared x (e.g. loss by position in the context, one line per model)."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_scatter(x=[float(v) for v in x], y=[float(v) for v in values], mode="lines+markers", name=name)
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, **LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
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
    ``group`` (lines of one group toggle together) and ``marker`` (a plotly symbol: points, not a line). ``window`` = (x0, x1) shades the same span of training in
    every panel (e.g. the phase change), labelled ``window_label`` in the first."""
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p["title"] for p in panels],
                        horizontal_spacing=0.1, vertical_spacing=0.16 if rows > 1 else 0.1)
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


def pattern_and_loss(pattern, losses: Mapping[str, Sequence[float]], boundary: int | None, title: str,
                     pattern_title: str, loss_title: str, hover: Sequence[str] | None = None) -> go.Figure:
    """Left: one head's attention pattern ``pattern`` [dst, src] on one sequence (white 0, dark 1), destinations
    running down; right: per-token losses of one or more models (one line each), loss[t] being the loss of
    predicting the token at position t + 1, drawn at x = t + 1 (``hover``: a label per loss). ``boundary`` (a
    position of the sequence) draws dotted lines just before it on both: e.g. where a repeat begins."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[pattern_title, loss_title], horizontal_spacing=0.17)
    z = [[round(float(v), 3) for v in row] for row in pattern]
    fig.add_heatmap(z=z, colorscale="Blues", zmin=0, zmax=1,
                    colorbar=dict(title="attention", x=0.43, len=0.85, thickness=12),
                    hovertemplate="destination %{y}<br>source %{x}<br>attention %{z:.2f}<extra></extra>", row=1, col=1)
    fig.update_xaxes(title_text="source position", row=1, col=1, constrain="domain")
    fig.update_yaxes(title_text="destination position", autorange="reversed", row=1, col=1, scaleanchor="x",
                     constrain="domain")
    for name, values in losses.items():
        fig.add_scatter(x=list(range(1, len(values) + 1)), y=[float(v) for v in values], mode="lines", name=name,
                        hovertext=list(hover) if hover is not None else None, row=1, col=2)
    fig.update_xaxes(title_text="position of the predicted token", row=1, col=2)
    fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
    if boundary is not None:
        for col in (1, 2):
            fig.add_vline(x=boundary - 0.5, line=dict(color="grey", dash="dot", width=1), row=1, col=col)
        fig.add_hline(y=boundary - 0.5, line=dict(color="grey", dash="dot", width=1), row=1, col=1)
    fig.update_layout(title=title, **{**LAYOUT, "height": 520, "margin": dict(l=60, r=20, t=90, b=60),
                                      "legend": dict(orientation="h", x=1.0, xanchor="right", y=-0.2,
                                                     yanchor="top")})
    return fig
