"""Plotly figures for the book. Each takes data as arguments and returns a figure."""

from __future__ import annotations

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


def pattern_and_loss(pattern, losses: Mapping[str, Sequence[float]], boundary: int | None, title: str,
                     pattern_title: str, loss_title: str, hover: Sequence[str] | None = None) -> go.Figure:
    """Left: one head's attention pattern ``pattern`` [dst, src] on one sequence (white 0, dark 1), destinations
    running down; right: per-token losses of one or more models (one line each), loss[t] being the loss of
    predicting the token at position t + 1, drawn at x = t + 1 (``hover``: a label per loss). ``boundary`` (a
    position of the sequence) draws dotted lines just before it on both: e.g. where a repeat begins."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[pattern_title, loss_title], horizontal_spacing=0.25)
    z = [[round(float(v), 3) for v in row] for row in pattern]
    fig.add_heatmap(z=z, colorscale="Blues", zmin=0, zmax=1,
                    colorbar=dict(title="attention", x=0.39, len=0.85, thickness=12),  # clear of the right y title
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
