"""The tour's figures (explorer.viz.tour): values land where they should, hostile token text
is escaped for plotly, masked keys are marked, long vectors become lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.viz.tour import (
    BAR_LIMIT,
    activation_chart,
    heads_heatmap,
    key_chart,
    layer_strip,
    token_bars,
    vector_chart,
)

HOSTILE = "<img src=x onerror=alert(1)> $x$"


def test_vector_chart_bars_when_short_lines_when_long() -> None:
    short = vector_chart({"q": torch.arange(8.0)}, HOSTILE)
    assert short.data[0].type == "bar" and list(short.data[0].y) == list(range(8))
    assert "<img" not in short.layout.title.text and "&lt;img" in short.layout.title.text
    long = vector_chart({"a": np.ones(BAR_LIMIT + 1), "b": np.zeros(BAR_LIMIT + 1)}, "x")
    assert [t.type for t in long.data] == ["scatter", "scatter"]
    with pytest.raises(ValueError, match="different lengths"):
        vector_chart({"a": np.ones(3), "b": np.ones(4)}, "x")


def test_key_chart_marks_masked_keys_and_escapes_labels() -> None:
    keys = ["0: <s>", f"1: {HOSTILE}", "2: cat"]
    fig = key_chart(keys, {"score": [1.0, float("-inf"), 2.0]}, "t", blocked=[False, True,
                                                                             True], query=0)
    bar = fig.data[0]
    assert list(bar.x) == ["0: &lt;s&gt;", "1: &lt;img src=x onerror=alert(1)&gt; &#36;x&#36;",
                           "2: cat"]
    assert np.isnan(bar.y[1])  # -inf is not drawn
    grey = [s for s in fig.layout.shapes if s.fillcolor == "lightgrey"]
    assert [(s.x0, s.x1) for s in grey] == [(0.5, 2.5)]  # one band for the run of two
    assert [a.text for a in fig.layout.annotations] == ["✕"]
    many = key_chart([str(i) for i in range(600)], {"w": np.ones(600)}, "t",
                     blocked=[i > 10 for i in range(600)])
    assert len(many.layout.shapes) == 1 and many.layout.annotations[0].text == "masked"
    with pytest.raises(ValueError, match="values for 3 keys"):
        key_chart(keys, {"score": [1.0]}, "t")


def test_activation_chart_puts_each_unit_on_the_curve() -> None:
    pre = np.array([-2.0, 0.0, 3.0])
    fig = activation_chart(lambda x: np.maximum(x, 0), pre, "ReLU", "t")
    curve, dots = fig.data
    assert list(dots.y) == [0.0, 0.0, 3.0]
    assert curve.x[0] < -2.0 and curve.x[-1] > 3.0


def test_layer_strip_and_bars() -> None:
    fig = layer_strip(["emb", "L1", "L2"], {"‖residual‖": [1.0, 2.0, 3.0],
                                             "‖attention wrote‖": [0.5, 0.7]},
                      "t", top_tokens=["a", HOSTILE, "c"], top_probs=[0.1, 0.9, 0.5])
    lens, _, attn = fig.data
    assert list(lens.customdata[0])[1].startswith("&lt;img")
    assert list(attn.x) == ["L1", "L2"]  # what a block wrote starts at block 1
    assert [a.font.color for a in fig.layout.annotations] == ["black", "white", "black"]
    bars = token_bars(["a", "b"], {"p": [0.7, 0.2]}, "t", highlight=1)
    assert list(bars.data[0].x) == pytest.approx([0.7, 0.2])
    assert bars.data[0].texttemplate == "%{x:.1%}"  # each bar says its value
    grouped = token_bars(["a"], {"p": [0.7], "q": [0.1]}, "t")
    assert grouped.data[0].texttemplate is None
    assert bars.layout.shapes[0].y0 == 0.5
    heads = heads_heatmap(torch.eye(3), ["0: a", "1: b", "2: <c>"], "t", head=2)
    assert list(heads.data[0].x)[2] == "2: &lt;c&gt;" and heads.layout.shapes[0].y0 == 1.5
