"""explorer.viz.generation: token stream HTML escaping and colours, timeline, candidates,
context attention windows and the growing attention map."""

from __future__ import annotations

import numpy as np
import plotly.io as pio

from explorer.viz.generation import (
    MAX_MAP_COLUMNS,
    alternatives_text,
    candidates_figure,
    context_attention_figure,
    growing_attention_figure,
    probability_colour,
    timeline_figure,
    token_stream_html,
)

HOSTILE = '<img src=x onerror=alert(1)>"$x$'


def test_probability_colours_run_red_to_blue() -> None:
    assert probability_colour(0.0) == "rgb(244,165,130)"
    assert probability_colour(0.5) == "rgb(255,255,191)"
    assert probability_colour(1.0) == "rgb(146,197,222)"
    assert probability_colour(7.0) == probability_colour(1.0)
    assert probability_colour(0.25) == "rgb(250,210,160)"


def test_token_stream_escapes_text_and_hovers() -> None:
    hover = alternatives_text([HOSTILE, " b"], [0.6, 0.3], HOSTILE, 1.234)
    assert "60.0%" in hover and "entropy 1.23 nats" in hover and "␣b" in hover
    html = token_stream_html([HOSTILE, ""], [0.9, 0.1], [hover, "h"], tokens=["x", "<|im_end|>"],
                             prompt=HOSTILE, selected=1, cut_notice="[3 cut]")
    assert "<img" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") >= 2
    assert html.count('class="gen-tok') == 2 and "gen-selected" in html and "gen-empty" in html
    assert "&lt;|im_end|&gt;" in html and "[3 cut]" in html
    assert f"background:{probability_colour(0.9)}" in html


def test_timeline_and_candidates() -> None:
    fig = timeline_figure([0.9, 0.2, 0.5], [0.3, 2.0, 1.0], selected=1)
    assert [t.name for t in fig.data] == ["p(chosen)", "entropy (nats)"]
    assert list(fig.data[1].y) == [0.3, 2.0, 1.0] and fig.data[1].yaxis == "y2"
    assert fig.layout.shapes[0].x0 == 1
    bars = candidates_figure([HOSTILE, " a"], [0.7, 0.2], chosen=1)
    assert list(bars.data[0].marker.color) == ["#bdbdbd", "#2b8cbe"]
    assert "<img" not in "".join(bars.data[0].y) and "&lt;img" in bars.data[0].y[0]


def test_context_attention_keeps_the_last_positions() -> None:
    weights = np.linspace(0, 1, 600)
    fig = context_attention_figure([f"t{i}" for i in range(600)], weights, "Step 3", limit=100)
    assert len(fig.data[0].x) == 100 and fig.data[0].x[0] == "500: t500"
    assert "last 100 of 600 positions" in fig.layout.title.text


def test_growing_map_rows_and_payload() -> None:
    rows = [np.full(5 + i, 1 / (5 + i)) for i in range(3)]
    labels = [f"t{i}" for i in range(8)]
    fig = growing_attention_figure(rows, labels, n_prompt=5, selected=2)
    z = np.array(fig.data[0].z, dtype=float)
    assert z.shape == (3, 7) and np.isnan(z[0, 5:]).all() and np.isclose(z[2].sum(), 1.0, atol=1e-3)
    assert fig.data[0].y[0] == "step 0: t5"
    big = [np.random.default_rng(0).random(1000 + i) for i in range(256)]
    fig = growing_attention_figure(big, [f"t{i}" for i in range(1300)], 1000)
    assert np.array(fig.data[0].z).shape == (256, MAX_MAP_COLUMNS)
    assert len(pio.to_json(fig)) < 2_000_000
