"""Attention figure builders: shapes, labels, escaping and payload size."""

import json

import numpy as np
import pytest
import torch

from explorer.analysis import pool_pattern
from explorer.viz import (
    attention_heatmap,
    attention_lines,
    head_map_chart,
    head_small_multiples,
    pattern_frame,
    pool_matrix,
    query_attention_bars,
    unique_labels,
)

HOSTILE = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "**bold** $x$", "Ġcat"]
MAX_PAYLOAD = 2_000_000


def causal(n: int, seed: int = 0, heads: int | None = None) -> np.ndarray:
    """Random causal pattern [n, n] (or [heads, n, n]) with rows summing to 1."""
    shape = (n, n) if heads is None else (heads, n, n)
    weights = np.tril(np.random.default_rng(seed).random(shape, dtype=np.float32) ** 4)
    return weights / weights.sum(-1, keepdims=True)


def strings_in(fig) -> list[str]:
    """Every string in the figure's JSON, decoded (to_json writes '<' as \\u003c)."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(fig.to_json()))
    return found


def assert_escaped(fig):
    text = "\n".join(strings_in(fig))
    assert "<img" not in text and "<script" not in text and "$x$" not in text
    assert "&lt;img" in text and "&lt;script&gt;" in text and "**bold**" in text


def test_pool_matrix_matches_analysis_pool_pattern():
    weights = causal(37, heads=2)
    pooled, q_starts, k_starts = pool_matrix(weights, 8)
    reference = pool_pattern(torch.from_numpy(weights), 8)
    np.testing.assert_allclose(pooled, reference.values.numpy(), rtol=1e-5)
    assert (q_starts, k_starts) == (reference.query_starts, reference.key_starts)
    np.testing.assert_allclose(pooled.sum(-1), 1.0, rtol=1e-5)


def test_heatmap_small_has_token_axes_and_transformed_colours():
    weights = causal(4)
    labels = unique_labels(["a", "Ġb", "a", "c"])
    fig = attention_heatmap(weights, labels, labels, title="L0 H1", scale="sqrt")
    trace = fig.data[0]
    assert list(trace.y) == ["0: a", "1: ␣b", "2: a", "3: c"]
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.xaxis.type == "category"
    np.testing.assert_allclose(trace.z, np.sqrt(weights), rtol=1e-6)
    np.testing.assert_allclose(trace.customdata, weights)
    assert "weight: %{customdata:.4f}" in trace.hovertemplate
    linear = attention_heatmap(torch.from_numpy(weights), labels, labels, scale="linear").data[0]
    np.testing.assert_allclose(linear.z, weights)
    log_z = attention_heatmap(weights, labels, labels, scale="log").data[0].z
    assert np.isnan(log_z[0, 1]) and log_z[0, 0] == pytest.approx(0.0)  # zero blank, 1 -> 0
    with pytest.raises(ValueError):
        attention_heatmap(weights, labels[:3], labels)


def test_heatmap_pools_1024_tokens_under_payload_budget():
    n = 1024
    labels = unique_labels([f"t{i}" for i in range(n)])
    fig = attention_heatmap(causal(n), labels, labels, title="big", max_cells=256)
    trace = fig.data[0]
    assert trace.z.shape == (256, 256)
    assert trace.y[0] == "tok 0–3" and trace.x[-1] == "tok 1020–1023"
    np.testing.assert_allclose(trace.customdata.sum(-1), 1.0, rtol=1e-4)
    assert "Pooled 1024×1024 into 256×256" in fig.layout.title.subtitle.text
    assert len(fig.to_json()) < MAX_PAYLOAD


def test_heatmap_escapes_tokens_and_title():
    labels = unique_labels(HOSTILE)
    fig = attention_heatmap(causal(4), labels, labels, title="<script>alert(1)</script>")
    assert_escaped(fig)
    assert fig.layout.title.text == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_head_map_chart_selection_and_outline():
    scores = np.arange(6, dtype=np.float32).reshape(3, 2)
    spec = head_map_chart(scores, "Previous-token score", selected=(1, 0)).to_dict()
    (param,) = spec["params"]
    assert param["name"] == "head"
    assert param["select"] == {"type": "point", "fields": ["layer", "head"], "on": "click"}
    (rows,) = spec["datasets"].values()
    assert len(rows) == 6
    assert [(r["layer"], r["head"]) for r in rows if r["selected"]] == [(1, 0)]
    assert rows[5] == {"layer": 2, "head": 1, "score": 5.0, "selected": False}
    assert spec["mark"]["type"] == "rect"
    assert {t["field"] for t in spec["encoding"]["tooltip"]} == {"layer", "head", "score"}


def test_attention_lines_short_sequence_draws_every_line():
    rows = np.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]], dtype=np.float32)
    fig = attention_lines(rows, ["a", "b", "c"], query_index=2, head_labels=["h0", "h1"])
    lines = [t for t in fig.data if t.mode == "lines"]
    assert sorted(round(t.opacity, 4) for t in lines) == [0.3, 0.5, 0.5, 0.7]
    assert all(t.y[0] == 2 for t in lines)  # every line starts at the query row
    assert [t.name for t in fig.data if t.mode == "markers"] == ["h0", "h1"]
    assert list(fig.data[1].text) == ["a", "b", "c"]  # key column


def test_attention_lines_windows_long_sequences():
    n = 300
    row = np.full(n, 0.001, dtype=np.float32)
    row[[0, 100, 250]] = [0.5, 0.2, 0.2]
    row /= row.sum()
    tokens = unique_labels([f"t{i}" for i in range(n)])
    fig = attention_lines(row, tokens, query_index=250, threshold=0.02, context=1)
    key_column = list(fig.data[1].text)
    shown = [t for t in key_column if not t.startswith("⋯")]
    assert shown == ["0: t0", "1: t1", "99: t99", "100: t100", "101: t101",
                     "249: t249", "250: t250", "251: t251"]
    assert key_column[2] == "⋯ 97 hidden" and key_column[-1] == "⋯ 48 hidden"
    assert len([t for t in fig.data if t.mode == "lines"]) == 3
    assert "8 of 300 tokens shown" in fig.layout.title.subtitle.text


def test_small_multiples_share_colour_axis_and_stay_small():
    n, heads = 1024, 9
    labels = unique_labels([f"t{i}" for i in range(n)])
    fig = head_small_multiples(causal(n, heads=heads), labels, max_cells=64)
    assert len(fig.data) == heads
    assert all(t.z.shape == (64, 64) and t.coloraxis == "coloraxis" for t in fig.data)
    assert len(fig.to_json()) < MAX_PAYLOAD
    small = head_small_multiples(causal(4, heads=2), unique_labels(HOSTILE),
                                 head_labels=["<img src=x onerror=alert(1)>", "h1"])
    assert_escaped(small)


def test_query_attention_bars_top_keys_in_position_order():
    rows = np.array([[0.1, 0.6, 0.0, 0.3], [0.0, 0.1, 0.8, 0.1]], dtype=np.float32)
    fig = query_attention_bars(rows, HOSTILE, query_index=3, top_k=2)
    trace = fig.data[0]
    assert list(trace.x) == ["&lt;script&gt;alert(1)&lt;/script&gt;", "**bold** &#36;x&#36;"]
    np.testing.assert_allclose(trace.z, [[0.6, 0.0], [0.1, 0.8]])
    assert list(trace.y) == ["head 0", "head 1"]
    full = query_attention_bars(rows, HOSTILE, query_index=0, top_k=4)
    assert_escaped(full)


def test_attention_lines_escapes_tokens_and_head_labels():
    rows = causal(4)[3]
    fig = attention_lines(np.stack([rows, rows]), HOSTILE, query_index=3,
                          head_labels=["<script>h0", "h1"])
    assert_escaped(fig)
    assert [t.name for t in fig.data if t.mode == "markers"] == ["&lt;script&gt;h0", "h1"]


def test_pattern_frame_is_tidy():
    weights = causal(3)
    frame = pattern_frame(weights, ["a", "b", "c"], ["a", "b", "c"])
    assert list(frame.columns) == ["query_pos", "query", "key_pos", "key", "weight"]
    assert len(frame) == 9
    row = frame.iloc[5]
    assert (row.query_pos, row.query, row.key_pos, row.key) == (1, "b", 2, "c")
    assert row.weight == pytest.approx(weights[1, 2])
    np.testing.assert_allclose(frame.groupby("query_pos").weight.sum(), 1.0, rtol=1e-6)
