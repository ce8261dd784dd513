"""explorer.export.tables: every chart's numbers as a tidy table read from the figure itself,
with its token labels as plain text (the HTML escapes of the figure undone)."""

from __future__ import annotations

import torch

from explorer.export.tables import figure_frame, label_text, vega_frame
from explorer.ui.downloads import frame_csv
from explorer.viz import attention_heatmap, head_map_chart
from explorer.viz.generation import candidates_figure, timeline_figure


def test_heatmap_gives_one_row_per_cell_with_token_labels() -> None:
    pattern = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    labels = ["0: <img src=x>", "1: =SUM(A1)"]
    frame = figure_frame(attention_heatmap(pattern, labels, labels, "t", "linear", 256))
    assert len(frame) == 4
    cells = {(row[1], row[2]): row[3] for row in frame.itertuples(index=False)}
    assert cells[("1: =SUM(A1)", "0: <img src=x>")] == 0.25
    assert cells[("1: =SUM(A1)", "1: =SUM(A1)")] == 0.75
    csv = frame_csv(frame).decode()
    assert "'1: =SUM(A1)" not in csv  # the label starts with a digit: not a formula
    assert "0: <img src=x>" in csv


def test_lines_and_bars_give_one_row_per_point() -> None:
    timeline = figure_frame(timeline_figure([0.5, 0.25, 1.0], [1.0, 2.0, 0.1], 1))
    assert {"series"} < set(timeline.columns) and len(timeline) >= 6
    bars = figure_frame(candidates_figure(["=a", "b"], [0.7, 0.2], 0))
    assert bars["probability"].tolist() == [0.7, 0.2]  # the x axis of horizontal bars
    assert bars["y"].tolist() == ["1. =a", "2. b"]
    assert frame_csv(bars).decode().splitlines()[0] == "series,probability,y"


def test_label_text_undoes_escapes_and_tags() -> None:
    assert label_text("&lt;b&gt; &#36;x<br>y") == "<b> $x y"
    assert label_text(3) == 3


def test_vega_frame_is_the_charts_data() -> None:
    spec = head_map_chart(torch.tensor([[0.5, 0.25]]), "score").to_dict()
    frame = vega_frame(spec)
    assert list(frame.columns) == ["layer", "head", "score"]
    assert frame["score"].tolist() == [0.5, 0.25]
