"""Figure builders of the positional page: values and axes, strided long sides, escaping of
untrusted labels, blank NaN cells, payload size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explorer.viz import (
    bar_chart,
    line_chart,
    pair_rotation_chart,
    pca_trajectory,
    value_heatmap,
)

HOSTILE = "<img src=x onerror=alert(1)> **b** $x$ \u202e"
MAX_FIGURE_BYTES = 2 * 2**20


def as_json(figure) -> str:
    return figure.to_json()


def test_value_heatmap_keeps_values_and_centres_signed_scales() -> None:
    matrix = torch.tensor([[1.0, -2.0, 0.5], [0.0, float("nan"), 3.0]])
    fig = value_heatmap(matrix, x=[10, 20, 30], title="t", x_title="dimension",
                        y_title="position")
    trace = fig.data[0]
    assert list(trace.x) == [10, 20, 30] and list(trace.y) == [0, 1]
    assert list(trace.z[0]) == [1.0, -2.0, 0.5] and np.isnan(trace.z[1][1])  # a blank cell
    assert (trace.zmin, trace.zmax, trace.zmid) == (-3.0, 3.0, 0.0)
    assert fig.layout.yaxis.autorange == "reversed"
    assert "subtitle" not in fig.to_plotly_json()["layout"]["title"]
    plain = value_heatmap(np.ones((2, 2)), diverging=False)
    assert plain.data[0].zmid is None and plain.data[0].colorscale[0][1] == "#440154"


def test_long_sides_are_strided_and_stay_small() -> None:
    matrix = np.random.default_rng(0).standard_normal((1024, 1024))
    fig = value_heatmap(matrix, title="big", max_cells=256)
    trace = fig.data[0]
    assert len(trace.y) == 256 and trace.y[1] == 4 and len(trace.x) == 256
    assert trace.z[1][2] == pytest.approx(matrix[4, 8])
    subtitle = fig.layout.title.subtitle.text
    assert "1 in 4 of 1024 rows" in subtitle and "1 in 4 of 1024 columns" in subtitle
    assert len(as_json(fig)) < MAX_FIGURE_BYTES


def test_labels_and_titles_are_escaped() -> None:
    figures = [
        value_heatmap(np.eye(2), title=HOSTILE, y_labels=[HOSTILE, "b"], x_title=HOSTILE),
        line_chart([0, 1], {HOSTILE: [1.0, 2.0]}, HOSTILE, note=HOSTILE),
        bar_chart([HOSTILE, "x"], {HOSTILE: [1.0, 2.0]}, HOSTILE, hover=[HOSTILE, "h"]),
        pair_rotation_chart(np.ones((3, 2)), [0, 1, 2], HOSTILE, HOSTILE),
        pca_trajectory(np.ones((3, 3)), [0, 1, 2], [0.5, 0.3, 0.1], HOSTILE, dims=3),
    ]
    for fig in figures:
        text = as_json(fig)
        assert "<img" not in text, text[:500]
        assert "&lt;img src=x onerror=alert(1)&gt;" in text
        assert "$x$" not in text and "&#36;x&#36;" in text


def test_line_chart_series_step_and_marker() -> None:
    fig = line_chart([0, 1, 2], {"a": [1, 2, float("inf")], "b": [0, 0, 0]}, "t", "x", "y",
                     log_y=True, step=True, marker_x=1)
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].y[:2]) == [1.0, 2.0] and np.isnan(fig.data[0].y[2])  # a gap
    assert fig.data[0].line.shape == "hv"
    assert fig.layout.yaxis.type == "log" and fig.layout.shapes[0].x0 == 1
    with pytest.raises(ValueError, match="shape"):
        line_chart([0, 1], {"a": [1, 2, 3]})
    assert line_chart([0, 1], {"a": [1, 2]}).layout.yaxis.range is None  # autoscaled
    fixed = line_chart([0, 1], {"a": [45.72051, 45.72052]}, y_range=(-64, 64))
    assert tuple(fixed.layout.yaxis.range) == (-64, 64)


def test_bar_chart_groups_series_over_categories() -> None:
    fig = bar_chart([0, 1, 2], {"off": [1e-8, 2e-8, 3e-8], "on": [0.5, 0.4, 0.3]}, log_y=True,
                    hover=["w 6", "w 9", "w 12"])
    assert fig.layout.barmode == "group" and len(fig.data) == 2
    assert list(fig.data[1].x) == ["0", "1", "2"]
    assert list(fig.data[1].y) == pytest.approx([0.5, 0.4, 0.3])
    assert list(fig.data[0].customdata) == ["w 6", "w 9", "w 12"]
    with pytest.raises(ValueError, match="3 bars"):
        bar_chart([0, 1, 2], {"a": [1.0]})


def test_pair_rotation_chart_is_square_around_the_circle() -> None:
    angle = np.linspace(0, 2 * np.pi, 20)
    points = 2.0 * np.stack([np.cos(angle), np.sin(angle)], -1)
    fig = pair_rotation_chart(points, np.arange(20), "pair 0")
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.xaxis.range == pytest.approx((-2.2, 2.2))
    assert list(fig.data[1].marker.color) == list(range(20))
    with pytest.raises(ValueError):
        pair_rotation_chart(np.ones((3, 3)), [0, 1, 2])


@pytest.mark.parametrize("dims, kind", [(2, "scatter"), (3, "scatter3d")])
def test_pca_trajectory_names_the_explained_variance(dims, kind) -> None:
    fig = pca_trajectory(np.arange(30.0).reshape(10, 3), np.arange(10), [0.62, 0.2, 0.1],
                         "t", dims=dims)
    assert fig.data[0].type == kind
    layout = json.loads(as_json(fig))["layout"]
    axis = layout["scene"]["xaxis"] if dims == 3 else layout["xaxis"]
    assert axis["title"]["text"] == "PC1 (62.0%)"
