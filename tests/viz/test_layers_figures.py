"""explorer.viz.layers: shapes, labels, escaping of hostile token text, pooling and payload
size of the Layers page's figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explorer.viz.layers import (
    column_blocks,
    contributions_chart,
    lines_chart,
    logit_lens_grid,
    pca_scatter,
    trajectory_chart,
    value_heatmap,
)

HOSTILE = "<img src=x onerror=alert(1)>"
MAX_FIGURE_BYTES = 2 * 2**20


def lens_inputs(rows=3, cols=4, k=5):
    tokens = [[[f"t{r}{c}{i}" for i in range(k)] for c in range(cols)] for r in range(rows)]
    probs = np.sort(np.random.default_rng(0).random((rows, cols, k)), -1)[..., ::-1]
    return tokens, probs


def test_lens_grid_cells_rows_and_hover() -> None:
    tokens, probs = lens_inputs()
    tokens[2][1][0] = HOSTILE
    fig = logit_lens_grid(tokens, probs, probs[..., 0], ["embeddings", "L0", "L1"],
                          [f"{i}: w" for i in range(4)], "prob")
    trace = fig.data[0]
    assert list(trace.y) == ["embeddings", "L0", "L1"] and len(trace.x) == 4
    assert trace.text[0][0] == "t000" and trace.zmin == 0 and trace.zmax == 1
    text = json.dumps(fig.to_plotly_json(), default=str)
    assert "<img" not in text and "&lt;img" in text
    assert trace.text[2][1].endswith("…")  # long tokens are cut inside the cell
    assert "t004: " in trace.customdata[0][0]  # the whole top-5 is in the hover
    entropy = logit_lens_grid(tokens, probs, probs[..., 1], ["a", "b", "c"], list("wxyz"),
                              "entropy")
    assert entropy.data[0].zmax is None
    with pytest.raises(ValueError):
        logit_lens_grid(tokens, probs, probs[..., 0], ["a", "b"], list("wxyz"))
    with pytest.raises(KeyError):
        logit_lens_grid(tokens, probs, probs[..., 0], ["a", "b", "c"], list("wxyz"), "x")


def test_trajectory_has_probability_and_reversed_log_rank() -> None:
    probs, ranks = np.array([[0.1, 0.2], [0.5, 0.9]]), np.array([[10, 4], [0, 0]])
    fig = trajectory_chart(["embeddings", "L0"], probs, ranks, [HOSTILE, "b"])
    assert len(fig.data) == 4
    assert list(fig.data[1].y) == [11, 1]  # ranks shown from 1
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis2.autorange == "reversed"
    assert "<img" not in json.dumps(fig.to_plotly_json(), default=str)


def test_contributions_bars_group_by_layer_and_waterfall_ends_at_the_logit() -> None:
    labels = ["embeddings", "L0 attn", "L0 mlp", "L1 attn", "L1 cross-attn", "L1 mlp"]
    values = np.array([0.5, 1.0, -0.25, 2.0, 0.1, 0.65])
    bars = contributions_chart(labels, values, 0.5, 4.5)
    by_kind = {trace.name: list(trace.x) for trace in bars.data}
    assert by_kind["attention"] == ["L0", "L1"] and by_kind["MLP"] == ["L0", "L1"]
    assert by_kind["cross-attention"] == ["L1"] and by_kind["biases"] == ["biases"]
    assert "sum of the parts 4.5000" in bars.layout.title.subtitle.text
    water = contributions_chart(labels, values, 0.5, 4.5, how="waterfall")
    assert list(water.data[0].measure)[-1] == "total" and water.data[0].x[-1] == "logit"


def test_value_heatmap_averages_long_rows_and_stays_small() -> None:
    assert column_blocks(10, 256) == list(range(10))
    assert column_blocks(1024, 256) == list(range(0, 1024, 4))
    values = np.arange(31 * 1024, dtype=np.float32).reshape(31, 1024)
    fig = value_heatmap(values, [f"L{i}" for i in range(31)],
                        [f"{i}: {HOSTILE}" for i in range(1024)], "norms", "‖x‖")
    z = np.asarray(fig.data[0].z)
    assert z.shape == (31, 256)
    assert z[0, 0] == pytest.approx(values[0, :4].mean())
    assert "averaged in blocks of 4" in fig.layout.title.subtitle.text
    assert len(json.dumps(fig.to_plotly_json(), default=str)) < MAX_FIGURE_BYTES
    square = value_heatmap(np.eye(1024), [str(i) for i in range(1024)],
                           [str(i) for i in range(1024)], "cos", "cosine", square=True)
    assert np.asarray(square.data[0].z).shape == (256, 256)
    assert square.layout.yaxis.autorange == "reversed"
    assert len(json.dumps(square.to_plotly_json(), default=str)) < MAX_FIGURE_BYTES


def test_lines_and_pca_scatter() -> None:
    lines = lines_chart(["L0", "L1"], {"attn": [1.0, 2.0], HOSTILE: [3.0, 4.0]}, "t", "y",
                        log_y=True)
    assert len(lines.data) == 2 and lines.layout.yaxis.type == "log"
    assert "<img" not in json.dumps(lines.to_plotly_json(), default=str)
    coords = np.array([[0.0, 1.0], [2.0, -1.0], [1.0, 0.5]])
    fig = pca_scatter(coords, ["a", HOSTILE, "c"], [0.6, 0.3], "PCA", (-3, 3),
                      positions=[1, 2, 3])
    assert fig.layout.xaxis.range == (-3, 3) and fig.layout.yaxis.range == (-3, 3)
    assert list(fig.data[0].marker.color) == [1, 2, 3]
    assert "PC1 60.0%" in fig.layout.title.subtitle.text
    assert "<img" not in json.dumps(fig.to_plotly_json(), default=str)
    many = pca_scatter(np.zeros((100, 2)), [str(i) for i in range(100)], [0.5, 0.1], "p")
    assert many.data[0].mode == "markers"
    with pytest.raises(ValueError):
        pca_scatter(coords, ["a"], [0.5, 0.5], "bad")
