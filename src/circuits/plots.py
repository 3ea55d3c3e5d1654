"""Plotly figures for the book. Each takes data as arguments and returns a figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .trainlog import eval_rows

LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=60, b=50))


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              hover: Sequence[str] | None = None) -> go.Figure:
    """A plain bar chart (corpus composition, per-head statistics, ...)."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), hovertext=hover))
    fig.update_layout(title=title, yaxis_title=ylabel, **LAYOUT)
    return fig


def histogram(values: Sequence[float], title: str, xlabel: str, log_x: bool = False) -> go.Figure:
    fig = go.Figure(go.Histogram(x=list(values), nbinsx=60))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title="count", **LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def loss_curves(logs: Mapping[str, list[dict]], title: str = "Training and validation loss") -> go.Figure:
    """Train loss (thin) and validation loss (markers) against tokens, one colour per run."""
    fig = go.Figure()
    colours = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a"]
    for (name, rows), colour in zip(logs.items(), colours):
        fig.add_scatter(x=[r["tokens"] for r in rows], y=[r["train_loss"] for r in rows], mode="lines",
                        name=f"{name} train", line=dict(color=colour, width=1), opacity=0.5)
        ev = eval_rows(rows)
        fig.add_scatter(x=[r["tokens"] for r in ev], y=[r["val_loss"] for r in ev], mode="lines+markers",
                        name=f"{name} validation", line=dict(color=colour, width=2))
    fig.update_layout(title=title, xaxis_title="training tokens", yaxis_title="loss (nats/token)", **LAYOUT)
    fig.update_xaxes(type="log")
    return fig


def score_curves(logs: Mapping[str, list[dict]], keys: Mapping[str, str], title: str,
                 thresholds: Mapping[str, float] | None = None) -> go.Figure:
    """One panel per score (``keys``: log field -> panel title) against tokens, one line per run."""
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=list(keys.values()))
    colours = ["#636efa", "#ef553b", "#00cc96", "#ab63fa"]
    for col, key in enumerate(keys, 1):
        for (name, rows), colour in zip(logs.items(), colours):
            ev = [r for r in eval_rows(rows) if key in r]
            fig.add_scatter(x=[r["tokens"] for r in ev], y=[r[key] for r in ev], mode="lines+markers",
                            name=name, legendgroup=name, showlegend=col == 1,
                            line=dict(color=colour), row=1, col=col)
        if thresholds and key in thresholds:
            fig.add_hline(y=thresholds[key], line_dash="dot", line_color="grey", row=1, col=col)
        fig.update_xaxes(type="log", title_text="training tokens", row=1, col=col)
    fig.update_layout(title=title, **{**LAYOUT, "height": 380})
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
