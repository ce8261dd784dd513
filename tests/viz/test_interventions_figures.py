"""explorer.viz.interventions: shapes, values, escaping of hostile token text and the click
selection of the Interventions page's figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explorer.viz.interventions import (
    MAX_GRID_CELLS,
    MIN_CHANGE_RANGE,
    attribution_heatmap,
    distribution_comparison,
    lens_difference_grid,
    patching_frame,
    patching_heatmap,
)

HOSTILE = "<img src=x onerror=alert(1)> $x$"


def dumped(fig) -> str:
    return json.dumps(fig.to_plotly_json(), default=str)


def test_distribution_comparison_pairs_bars_and_escapes() -> None:
    fig = distribution_comparison([" Paris", HOSTILE, "Rome"], [0.5, 0.2, 0.1], [0.1, 0.3, 0.4],
                                  ("clean", "patched"), title=f"Top {HOSTILE}")
    first, second = fig.data
    assert (first.name, second.name) == ("clean", "patched")
    assert list(first.x) == pytest.approx([0.5, 0.2, 0.1])
    assert list(second.x) == pytest.approx([0.1, 0.3, 0.4])
    assert first.y[1] == "2. &lt;img src=x onerror=alert(1)&gt; &#36;x&#36;"
    assert fig.layout.yaxis.autorange == "reversed"  # the first token on top
    text = dumped(fig)
    assert "<img" not in text and "$x$" not in text
    with pytest.raises(ValueError):
        distribution_comparison(["a", "b"], [0.5], [0.5, 0.2])


def test_lens_difference_marks_new_tokens_and_colours_the_change() -> None:
    before = [[["Paris", "Rome"], ["a", "b"]], [["x", "y"], ["z", HOSTILE]]]
    after = [[["Paris", "Rome"], ["b", "a"]], [["x", "y"], [HOSTILE, "z"]]]
    p = np.array([[[0.9, 0.1], [0.6, 0.3]], [[0.5, 0.2], [0.7, 0.2]]])
    q = np.array([[[0.8, 0.1], [0.5, 0.4]], [[0.5, 0.2], [0.6, 0.3]]])
    delta = np.array([[-0.1, -0.2], [0.0, -0.4]])
    fig = lens_difference_grid(before, p, after, q, delta, ["L0", "L1"], ["0: a", "1: b"])
    trace = fig.data[0]
    assert trace.text[0][0] == "Paris" and trace.text[0][1] == "→b"
    assert trace.text[1][1].startswith("→&lt;img")  # a long new token, cut and escaped
    assert (trace.zmin, trace.zmax, trace.zmid) == pytest.approx((-0.4, 0.4, 0.0))
    tiny = lens_difference_grid(before, p, after, q, delta / 100, ["L0", "L1"], ["a", "b"])
    assert tiny.data[0].zmax == MIN_CHANGE_RANGE  # a tiny change is not blown up
    assert np.asarray(trace.z) == pytest.approx(delta)
    assert "<b>before</b> Paris 0.90, Rome 0.10" in trace.customdata[0][0]
    assert "<img" not in dumped(fig)
    with pytest.raises(ValueError):
        lens_difference_grid(before, p, after, q, delta, ["L0"], ["0: a", "1: b"])


def test_patching_heatmap_is_clickable_with_plain_labels_in_order() -> None:
    values = np.arange(6, dtype=float).reshape(2, 3)
    norm = values / 5
    cols = ["0: <s>", f"1: {HOSTILE}", "2: b"]
    chart = patching_heatmap(values, norm, ["L1", "L0"], cols, "Residual stream",
                             selected=(1, 2))
    spec = chart.to_dict()
    assert spec["params"][0]["name"] == "cell"
    assert spec["params"][0]["select"]["fields"] == ["row_index", "col_index"]
    assert spec["encoding"]["x"]["sort"] == cols  # positions in prompt order, not sorted
    assert spec["encoding"]["y"]["sort"] == ["L1", "L0"]
    assert spec["encoding"]["color"]["scale"]["domainMid"] == 0
    records = next(iter(spec["datasets"].values()))
    assert len(records) == 6 and records[5]["selected"] and not records[0]["selected"]
    assert records[4] == {"row_index": 1, "col_index": 1, "row": "L0", "column": cols[1],
                          "metric": 4.0, "normalised": 0.8, "selected": False}


def test_patching_frame_and_limits() -> None:
    frame = patching_frame([[1.0, 2.0]], [[0.0, 1.0]], ["L0"], ["H0", "H1"])
    assert frame[["row", "column", "metric", "normalised"]].values.tolist() == [
        ["L0", "H0", 1.0, 0.0], ["L0", "H1", 2.0, 1.0]]
    with pytest.raises(ValueError):
        patching_frame([[1.0, 2.0]], [[0.0]], ["L0"], ["H0", "H1"])
    n = MAX_GRID_CELLS // 100 + 1
    with pytest.raises(ValueError, match="at most"):
        patching_heatmap(np.zeros((100, n)), np.zeros((100, n)), [f"L{i}" for i in range(100)],
                         [str(i) for i in range(n)], "too big")


def test_attribution_heatmap_shares_one_symmetric_scale() -> None:
    heads = np.array([[0.5, -2.0], [0.1, 0.0]])
    mlps = np.array([1.0, 3.0])
    fig = attribution_heatmap(heads, mlps, f"DLA {HOSTILE}", "sum 2.6",
                              head_labels=["head 0", "head 1"])
    per_head, per_mlp = fig.data
    assert (per_head.zmin, per_head.zmax) == (-3.0, 3.0) == (per_mlp.zmin, per_mlp.zmax)
    assert np.asarray(per_mlp.z)[:, 0] == pytest.approx(mlps)
    assert list(per_head.y) == ["L0", "L1"] and list(per_mlp.x) == ["MLP"]
    assert fig.layout.title.subtitle.text == "sum 2.6"
    assert "<img" not in dumped(fig)
    with pytest.raises(ValueError):
        attribution_heatmap(heads, np.zeros(3), "bad")
    zeros = attribution_heatmap(np.zeros((1, 2)), np.zeros(1), "all zero")
    assert zeros.data[0].zmax == 1.0  # an all-zero grid still has a colour range
