"""Figures of the induction chapter: scores over training, loss by position over training, a pattern beside
the loss it explains."""

import numpy as np
import pytest

from circuits.viz.plots import line_chart, pattern_and_loss
from circuits.viz.training_plots import (_log_edges, loss_curves, loss_gap, shade_span, training_heatmaps,
                                         training_panels)


def test_training_panels_draw_every_line_and_shade_the_window_in_every_panel():
    panels = [{"title": "a", "ylabel": "score", "hline": 0.4,
               "lines": [{"x": [1, 2], "y": [0.1, 0.5], "name": "1.5", "color": "red"},
                         {"x": [1, 2], "y": [0.0, 0.0], "name": "other", "legend": False, "group": "o"}]},
              {"title": "b", "lines": [{"x": [1, 2], "y": [3, 2], "name": "loss"}]},
              {"title": "c", "lines": []}]
    fig = training_panels(panels, "t", window=(1.2, 1.8), window_label="phase change")
    assert [t.name for t in fig.data] == ["1.5", "other", "loss"]
    assert fig.data[0].line.color == "red" and fig.data[1].showlegend is False and fig.data[1].legendgroup == "o"
    assert fig.data[2].xaxis == "x2"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 3 and all((s.x0, s.x1) == (1.2, 1.8) for s in rects)
    assert sum(a.text == "phase change" for a in fig.layout.annotations) == 1
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis3.type == "log"
    assert fig.layout.height == 330 * 2 + 90
    hlines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(hlines) == 1 and hlines[0].y0 == 0.4


def test_log_edges_are_geometric_midpoints():
    assert _log_edges([1, 4, 16]) == pytest.approx([0.5, 2, 8, 32])
    assert _log_edges([10]) == pytest.approx([8, 12.5])


def test_training_heatmaps_transpose_onto_one_scale():
    a = np.array([[0.5, -1.0, 0.0], [0.2, 0.1, -0.3]])  # [evaluation, bin]
    b = np.array([[2.0, 0.0, 0.0]])
    fig = training_heatmaps([[100, 400], [100]], [1, 2, 4, 8], [a, b], ["2L", "1L"], "t", "tokens", "context",
                            symmetric=True, windows=[(150, 300), None], window_label="pc", hlines=[3])
    assert np.asarray(fig.data[0].z).shape == (3, 2) and list(fig.data[0].z[1]) == [-1.0, 0.1]
    assert list(fig.data[0].x) == pytest.approx([50, 200, 800]) and list(fig.data[0].y) == [1, 2, 4, 8]
    assert all(t.zmin == -2.0 and t.zmax == 2.0 for t in fig.data)
    assert [t.showscale for t in fig.data] == [False, True]
    vlines = [s for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]
    assert sorted(s.x0 for s in vlines) == [150, 300]
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis2.type == "log"
    plain = training_heatmaps([[1, 2]], [1, 2], [[[3.0], [5.0]]], ["x"], "t", "a", "b")
    assert (plain.data[0].zmin, plain.data[0].zmax) == (3.0, 5.0)


def test_pattern_and_loss_puts_each_loss_at_the_predicted_token():
    pattern = np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None]
    fig = pattern_and_loss(pattern, {"1L": [5, 5, 5, 5], "2L": [5, 5, 1, 1]}, 3, "t", "pattern", "loss",
                           hover=["a", "b", "c", "d"])
    heat, one, two = fig.data
    assert np.asarray(heat.z).shape == (5, 5) and heat.zmax == 1
    assert list(two.x) == [1, 2, 3, 4] and list(two.y) == [5, 5, 1, 1] and list(one.hovertext) == ["a", "b", "c", "d"]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 3 and {s.x0 for s in lines if s.x0 == s.x1} == {2.5}
    assert fig.layout.yaxis.autorange == "reversed"


def test_training_panels_draw_a_line_with_a_marker_as_points():
    panels = [{"title": "icl", "lines": [{"x": [1, 2, 3], "y": [0.1, 0.0, -0.2], "name": "logged"},
                                         {"x": [3], "y": [-0.4], "name": "end", "marker": "diamond", "color": "black"}]}]
    fig = training_panels(panels, "t", cols=1)
    assert fig.data[0].mode == "lines" and fig.data[1].mode == "markers"
    assert fig.data[1].marker.symbol == "diamond" and fig.data[1].marker.color == "black"


def test_loss_curves_shade_the_band():
    rows = [{"tokens": t, "train_loss": 5.0, "val_loss": 5.0} for t in (1, 10, 100)]
    fig = loss_curves({"2L": rows}, "", band=(10, 50), band_label="phase change")
    (shape,) = fig.layout.shapes
    assert (shape.x0, shape.x1) == (10, 50)
    assert fig.layout.annotations[0].text == "phase change" and fig.layout.annotations[0].x == 1


def test_loss_gap_subtracts_at_the_shared_evaluations():
    a = [{"tokens": t, "val_loss": v} for t, v in ((1, 5.0), (10, 4.0), (100, 3.0))]
    b = [{"tokens": t, "val_loss": v} for t, v in ((1, 5.5), (10, 3.5), (50, 3.2))]
    fig = loss_gap(a, b, "", "gap", band=(2, 8), band_label="band")
    assert list(fig.data[0].x) == [1, 10] and list(fig.data[0].y) == [0.5, -0.5]
    assert fig.layout.annotations[0].x == np.log10(2)  # annotations on a log axis sit in log10 units


def test_shade_span_labels_a_log_axis_in_log10_units():
    fig = line_chart([1.0, 10.0, 100.0], {"a": [0.0, 1.0, 2.0]}, "", "x", "y", log_x=True)
    shade_span(fig, (10.0, 20.0), "band", log_x=True, label_side="left")
    (shape,), (note,) = fig.layout.shapes, fig.layout.annotations
    assert (shape.x0, shape.x1) == (10.0, 20.0)  # a shape in data units
    assert note.x == 1.0 and note.text == "band" and note.xanchor == "left"  # an annotation in log10 units
