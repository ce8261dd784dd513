"""explorer.export.report: one self-contained HTML file (plotly.js inlined, no external
resource, network forbidden by its CSP), every typed text escaped, Vega-Lite charts redrawn
from their own data. (Opening it offline in Chromium: tests/e2e/test_share_e2e.py.)"""

from __future__ import annotations

import json
import re

import plotly.graph_objects as go
import pytest
import torch

from explorer.export import html_report
from explorer.export.report import plotly_js, script_json, vega_lite_to_plotly
from explorer.viz import head_map_chart
from explorer.viz.params import parameter_bar_chart

HOSTILE = "</script><script>alert(1)</script><img src=x onerror=alert(1)> \u2028 &amp;"


def test_report_is_self_contained_and_escaped() -> None:
    figure = go.Figure(go.Heatmap(z=[[0.1, 0.9]], x=[HOSTILE, "b"], y=["q"]))
    figure.update_layout(title="heads")
    page = html_report(f"Attention {HOSTILE}", {"prompt": HOSTILE, "settings": {"k": HOSTILE}},
                       [(f"caption {HOSTILE}", figure)])
    assert plotly_js() in page and len(plotly_js()) > 3_000_000
    without_js = page.replace(plotly_js(), "")
    assert "<script>alert" not in without_js and "<img" not in without_js
    assert without_js.count("<script>") == 2  # plotly.js and the drawing code, nothing else
    assert "&lt;img src=x onerror=alert(1)&gt;" in without_js  # header and caption as text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", without_js)  # nothing fetched
    assert "default-src 'none'" in without_js
    drawn = re.search(r'draw\("fig0", (.*)\);', without_js).group(1)
    assert json.loads(drawn)["data"][0]["x"][0] == HOSTILE  # the label survives, as data


def test_script_json_cannot_close_its_script() -> None:
    text = script_json({"a": "</script><!-- \u2029"})
    assert "<" not in text and ">" not in text and "\u2029" not in text
    assert json.loads(text) == {"a": "</script><!-- \u2029"}


def test_head_map_is_redrawn_as_a_heatmap_with_its_scores() -> None:
    scores = torch.tensor([[0.1, 0.2, 0.3], [0.4, float("nan"), 0.6]])
    spec = head_map_chart(scores, "Induction score").to_dict()
    figure = vega_lite_to_plotly(spec)
    trace = figure.data[0]
    assert trace.type == "heatmap" and list(trace.x) == ["0", "1", "2"]
    assert list(trace.y) == ["0", "1"]
    assert list(trace.z[0]) == pytest.approx([0.1, 0.2, 0.3])
    assert trace.z[1][1] is None and trace.z[1][2] == pytest.approx(0.6)
    assert trace.colorbar.title.text == "Induction score"


def test_parameter_bars_are_redrawn_as_bars() -> None:
    spec = parameter_bar_chart({"embedding": 300, "attention": 100}).to_dict()
    trace = vega_lite_to_plotly(spec).data[0]
    assert trace.type == "bar" and trace.orientation == "h"
    assert list(trace.y) == ["embedding", "attention"] and list(trace.x) == [300, 100]


def test_other_marks_become_a_table() -> None:
    spec = {"mark": "point", "data": {"values": [{"a": 1, "b": "x"}]},
            "encoding": {"x": {"field": "a"}}}
    trace = vega_lite_to_plotly(spec).data[0]
    assert trace.type == "table" and list(trace.header.values) == ["a", "b"]
