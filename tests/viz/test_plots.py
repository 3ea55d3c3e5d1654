"""Figure functions: data in, figure out."""

import numpy as np

from circuits.viz import plots
from circuits.viz.plots import labelled_scatter, line_chart, shared_heatmaps


def test_shared_heatmaps_use_one_symmetric_scale():
    a = np.array([[0.1, -0.2], [0.0, 0.05]])
    b = np.array([[0.4, 0.0], [-0.1, 0.0]])
    fig = shared_heatmaps([a, b], ["Q", "K"], ["0.0", "0.1"], ["1.0", "1.1"], "t", "h2", "h1")
    assert len(fig.data) == 2
    for trace in fig.data:
        assert trace.zmin == -0.4 and trace.zmax == 0.4
    assert [t.showscale for t in fig.data] == [False, True]
    assert list(fig.data[0].z[0]) == [0.1, -0.2] and fig.data[1].text[0][0] == "0.40"
    assert [a.text for a in fig.layout.annotations] == ["Q", "K"]


def test_shared_heatmaps_annotate_only_while_cells_are_wide():
    z = np.zeros((8, 8))
    wide = shared_heatmaps([z, z, z], ["Q", "K", "V"], list("abcdefgh"), list("abcdefgh"), "t", "x", "y")
    assert all(t.text is None for t in wide.data)
    forced = shared_heatmaps([z], ["Q"], list("abcdefgh"), list("abcdefgh"), "t", "x", "y", annotate=True)
    assert forced.data[0].text is not None


def test_labelled_scatter_groups_points_and_shades_the_region():
    fig = labelled_scatter([0.5, -0.2, 0.9], [0.3, 0.1, -0.4], ["1.0", "1.1", "0.3"], ["layer 1", "layer 1", "layer 0"],
                           "t", "x", "y", region=(0, 1, 0, 1), region_label="(+, +)")
    assert [t.name for t in fig.data] == ["layer 1", "layer 0"]
    assert fig.data[0].x == (0.5, -0.2) and fig.data[0].text == ("1.0", "1.1") and fig.data[1].y == (-0.4,)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and (rects[0].x0, rects[0].x1, rects[0].y0, rects[0].y1) == (0, 1, 0, 1)
    assert any(a.text == "(+, +)" for a in fig.layout.annotations)


def test_line_chart_has_one_trace_per_series():
    fig = line_chart([1, 2, 3], {"a": [3, 2, 1], "b": [1, 1, 1]}, "t", "x", "y", log_x=True)
    assert [t.name for t in fig.data] == ["a", "b"] and fig.data[0].y == (3.0, 2.0, 1.0)
    assert fig.layout.xaxis.type == "log"


def test_eigenvalue_planes_draws_axes_and_reference_in_every_panel():
    from circuits.viz.plots import eigenvalue_planes

    fig = eigenvalue_planes([[1.0, -0.5]] * 3, [[0.0, 0.2]] * 3, [["a", "b"]] * 3, ["h0", "h1", "h2"], "t",
                            reference=0.7, cols=2)
    shapes = fig.layout.shapes
    assert len(shapes) == 3 * 3 and sum(s.type == "circle" for s in shapes) == 3
    assert {s.xref for s in shapes if s.type == "circle"} == {"x", "x2", "x3"}
    assert len(fig.data) == 3 and list(fig.data[0].marker.color) == ["#d62728", "#1f77b4"]


def test_annotated_heatmap_writes_every_value():
    from circuits.viz.plots import annotated_heatmap

    fig = annotated_heatmap([[0.0, 0.25], [1.0, 0.5]], ["a", "b"], ["x", "y"], "t", "col", "row", decimals=2)
    trace = fig.data[0]
    assert trace.text[1][0] == "1.00" and trace.zmin == 0 and trace.zmax == 1.0
    assert list(trace.y) == ["a", "b"] and fig.layout.yaxis.autorange == "reversed"


def test_log_histogram_bins_evenly_in_log_and_counts_every_positive_value():
    values = [0, 3, 10, 30, 100, 300, 1000, 1000]
    fig = plots.histogram(values, "", "bytes", log_x=True, bins=3)
    bar = fig.data[0]
    assert sum(bar.y) == 7  # the zero cannot sit on a log axis
    assert list(bar.y) == [2, 2, 3]
    np.testing.assert_allclose(np.diff(np.log10(np.asarray(bar.x))), np.log10(1000 / 3) / 3)
    assert fig.layout.xaxis.type == "log"
