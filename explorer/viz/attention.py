"""Pure figure builders for attention patterns: numbers in, plotly/altair figure out.

- :func:`attention_heatmap`: one pattern as a query x key heatmap (Vaswani et al. 2017's
  attention visualisations; The Annotated Transformer), block-pooled past ``max_cells``.
- :func:`head_map_chart`: a layer x head grid of one head score, clickable in Streamlit
  (head roles after Clark et al. 2019; induction heads after Olsson et al. 2022).
- :func:`attention_lines`: BertViz's "head view" for one query (Vig 2019).
- :func:`head_small_multiples`, :func:`query_attention_bars`, :func:`pattern_frame`.

Inputs are numpy arrays or CPU/GPU torch tensors (converted by duck typing; this module does
not import torch). Labels are plain display text, e.g. from
:func:`explorer.viz.tokens.unique_labels`; every builder escapes them for plotly. A browser
chart should stay under about 2 MB, so long inputs are pooled or windowed and the figure says
so; pooling, colour scales and axis labels live in :mod:`explorer.viz.heatmap_cells`.
Shapes: ``H`` heads, ``Q`` queries, ``K`` keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from explorer.viz.heatmap_cells import (
    COLOURSCALE,
    as_array,
    axis_labels,
    colour_axis,
    colour_scale,
    distinct_labels,
    heatmap_trace,
    pool_matrix,
    pooled_note,
)
from explorer.viz.tokens import escape_for_plotly, plotly_title

logger = logging.getLogger(__name__)

HEAD_COLOURS = qualitative.Plotly + qualitative.Dark24


def _head_labels(head_labels: Sequence[str] | None, n_heads: int) -> list[str]:
    return list(head_labels) if head_labels is not None else [f"head {h}" for h in range(n_heads)]


def _query_rows(pattern_rows: Any, tokens: Sequence[str], query_index: int) -> np.ndarray:
    """One query's attention rows as ``[H, K]`` (a single ``[K]`` row becomes one head)."""
    rows = as_array(pattern_rows)
    rows = rows[None] if rows.ndim == 1 else rows
    if rows.ndim != 2 or len(tokens) != rows.shape[1] or not 0 <= query_index < len(tokens):
        raise ValueError(f"{len(tokens)} tokens, query {query_index}, rows {rows.shape}")
    return rows


# --------------------------------------------------------------------------- figures


def attention_heatmap(
    pattern_2d: Any,
    q_labels: Sequence[str],
    k_labels: Sequence[str],
    title: str = "",
    scale: str = "sqrt",
    max_cells: int = 256,
) -> go.Figure:
    """Query x key heatmap of one pattern ``[Q, K]``: queries down (top to bottom), keys across.

    ``scale`` is ``"linear"``, ``"sqrt"`` (default: small weights stay visible next to an
    attention sink) or ``"log"``; hover always shows the raw weight. A side longer than
    ``max_cells`` is block-pooled (:func:`pool_matrix`), its labels become ranges
    (``tok 12–15``) and the subtitle says so.
    """
    weights = as_array(pattern_2d)
    if weights.ndim != 2:
        raise ValueError(f"expected a [Q, K] pattern, got shape {weights.shape}")
    n_q, n_k = weights.shape
    pooled, q_starts, k_starts = pool_matrix(weights, max_cells)
    notes = [] if pooled.shape == weights.shape else [
        pooled_note(n_q, n_k, pooled.shape, q_starts, k_starts)
    ]
    if scale != "linear":
        notes.append(colour_scale(scale).note.capitalize() + ".")
    xs = axis_labels(k_labels, k_starts, n_k)
    ys = axis_labels(q_labels, q_starts, n_q)
    fig = go.Figure(heatmap_trace(pooled, xs, ys, scale))
    fig.update_traces(zmin=colour_axis(scale)["cmin"], zmax=colour_axis(scale)["cmax"])
    fig.update_traces(colorscale=COLOURSCALE, colorbar=colour_axis(scale)["colorbar"])
    fig.update_layout(
        title=plotly_title(title, " ".join(notes)),
        xaxis={"title": {"text": "key"}, "type": "category", "tickangle": -60},
        yaxis={"title": {"text": "query"}, "type": "category", "autorange": "reversed"},
    )
    return fig


def head_map_chart(
    scores: Any,
    score_label: str,
    selected: tuple[int, int] | None = None,
    reverse: bool = False,
) -> alt.Chart:
    """Layer x head grid of one score ``[n_layers, n_heads]`` with a click selection.

    The chart carries ``alt.selection_point(name="head", fields=["layer", "head"])``, so
    ``st.altair_chart(chart, on_select="rerun")`` returns the clicked ``layer``/``head``.
    ``selected`` (layer, head) is outlined. NaN scores (undefined, e.g. no repeated tokens for
    the induction score) are left blank. ``reverse`` flips the colours, e.g. for entropy.
    """
    values = as_array(scores)
    if values.ndim != 2:
        raise ValueError(f"expected scores [n_layers, n_heads], got shape {values.shape}")
    layer, head = np.meshgrid(np.arange(values.shape[0]), np.arange(values.shape[1]), indexing="ij")
    frame = pd.DataFrame(
        {"layer": layer.ravel(), "head": head.ravel(), "score": values.ravel().astype(float)}
    )
    frame["selected"] = False
    if selected is not None:
        frame["selected"] = (frame["layer"] == selected[0]) & (frame["head"] == selected[1])
    click = alt.selection_point(name="head", fields=["layer", "head"], on="click")
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("head:O", title="head"),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color(
                "score:Q", title=score_label, scale=alt.Scale(scheme="viridis", reverse=reverse)
            ),
            stroke=alt.condition(alt.datum.selected, alt.value("#ff2b2b"), alt.value(None)),
            strokeWidth=alt.condition(alt.datum.selected, alt.value(3), alt.value(0)),
            opacity=alt.condition(click, alt.value(1.0), alt.value(0.4)),
            tooltip=[
                alt.Tooltip("layer:O"),
                alt.Tooltip("head:O"),
                alt.Tooltip("score:Q", title=score_label, format=".3f"),
            ],
        )
        .add_params(click)
    )


def _visible_rows(
    n_k: int, query_index: int, keys_by_weight: list[int], max_tokens: int, context: int
) -> list[int]:
    """Positions to show: the query and the drawn keys, with ``context`` neighbours when room."""
    if n_k <= max_tokens:
        return list(range(n_k))
    anchors = [query_index, *keys_by_weight][:max_tokens]
    for pad in (context, 0):
        rows = {p for a in anchors for p in range(a - pad, a + pad + 1) if 0 <= p < n_k}
        if len(rows) <= max_tokens:
            return sorted(rows)
    return sorted(set(anchors))


def attention_lines(
    pattern_rows: Any,
    tokens: Sequence[str],
    query_index: int,
    head_labels: Sequence[str] | None = None,
    threshold: float = 0.02,
    max_tokens: int = 48,
    context: int = 1,
) -> go.Figure:
    """BertViz-style head view for one query: ``pattern_rows [H, K]`` (or ``[K]``).

    Tokens are listed twice, queries on the left and keys on the right; a line goes from the
    query to each key with opacity equal to the weight, one colour per head, and hovering a
    key's dot gives the exact weight. Sequences up to ``max_tokens`` show every token and
    every non-zero line. Longer ones draw only lines with weight >= ``threshold``, and show
    only the query, those keys (strongest first, at most ``max_tokens``) and ``context``
    neighbours each side when they fit; ``⋯`` rows mark hidden tokens and the subtitle says so.
    """
    rows = _query_rows(pattern_rows, tokens, query_index)
    n_heads, n_k = rows.shape
    head_labels = _head_labels(head_labels, n_heads)
    windowed = n_k > max_tokens
    min_weight = threshold if windowed else 1e-9
    strongest = np.argsort(-rows.max(0), kind="stable")
    keys = [int(k) for k in strongest if rows[:, k].max() >= min_weight]
    shown = _visible_rows(n_k, query_index, keys, max_tokens, context)
    drawn = set(keys) & set(shown)

    # One display row per shown token, plus a "⋯" row wherever positions were skipped.
    y_of: dict[int, int] = {}
    left, right = [], []

    def add_gap(hidden: int) -> None:
        if hidden > 0:
            left.append("⋯")
            right.append(f"⋯ {hidden} hidden")

    previous = -1
    for position in shown:
        add_gap(position - previous - 1)
        y_of[position] = len(left)
        label = escape_for_plotly(tokens[position])
        left.append(f"<b>{label}</b>" if position == query_index else label)
        right.append(label)
        previous = position
    add_gap(n_k - 1 - previous)
    row_y = list(range(len(left)))

    fig = go.Figure()
    text_style = {"mode": "text", "hoverinfo": "skip", "showlegend": False}
    fig.add_trace(go.Scatter(x=[0.0] * len(left), y=row_y, text=left,
                             textposition="middle left", **text_style))
    fig.add_trace(go.Scatter(x=[1.0] * len(right), y=row_y, text=right,
                             textposition="middle right", **text_style))
    query_text = escape_for_plotly(tokens[query_index])
    for h in range(n_heads):
        colour = HEAD_COLOURS[h % len(HEAD_COLOURS)]
        head_keys = [k for k in sorted(drawn) if rows[h, k] >= min_weight]
        end_x = 0.92 + 0.06 * h / max(n_heads - 1, 1)
        for k in head_keys:
            fig.add_trace(go.Scatter(
                x=[0.03, end_x], y=[y_of[query_index], y_of[k]], mode="lines",
                line={"color": colour, "width": 2}, opacity=float(rows[h, k]),
                hoverinfo="skip", legendgroup=str(h), showlegend=False,
            ))
        fig.add_trace(go.Scatter(
            x=[end_x] * len(head_keys), y=[y_of[k] for k in head_keys], mode="markers",
            marker={"color": colour, "size": [4 + 8 * float(rows[h, k]) for k in head_keys]},
            name=escape_for_plotly(head_labels[h]), legendgroup=str(h),
            text=[f"{escape_for_plotly(head_labels[h])}<br>query: {query_text}<br>"
                  f"key: {escape_for_plotly(tokens[k])}<br>weight: {rows[h, k]:.4f}"
                  for k in head_keys],
            hovertemplate="%{text}<extra></extra>",
        ))
    note = ""
    if windowed:
        note = (f"{len(shown)} of {n_k} tokens shown: lines with weight ≥ {threshold:g}"
                f" and their neighbours; ⋯ marks hidden tokens.")
    fig.update_layout(
        title=plotly_title(f"Attention from {tokens[query_index]} (position {query_index})", note),
        xaxis={"visible": False, "range": [-0.9, 1.9]},
        yaxis={"visible": False, "autorange": "reversed"},
        height=max(300, 22 * len(row_y) + 120),
        plot_bgcolor="white",
        hovermode="closest",
        legend={"itemsizing": "constant"},
    )
    return fig


def head_small_multiples(
    patterns: Any,
    labels: Sequence[str],
    max_cells: int = 64,
    head_labels: Sequence[str] | None = None,
    scale: str = "sqrt",
    columns: int = 4,
    q_labels: Sequence[str] | None = None,
) -> go.Figure:
    """One small heatmap per head, ``patterns [H, N, N]``, sharing one colour scale.

    Each head is pooled to at most ``max_cells`` per side (harder than the single heatmap)
    so the whole figure stays small; labels only appear on hover. ``labels`` name the keys and,
    unless ``q_labels`` is given (cross-attention), the queries too.
    """
    weights = as_array(patterns)
    if weights.ndim != 3:
        raise ValueError(f"expected patterns [H, Q, K], got shape {weights.shape}")
    n_heads, n_q, n_k = weights.shape
    head_labels = _head_labels(head_labels, n_heads)
    pooled, q_starts, k_starts = pool_matrix(weights, max_cells)
    xs = axis_labels(labels, k_starts, n_k)
    ys = axis_labels(labels if q_labels is None else q_labels, q_starts, n_q)
    columns = min(columns, n_heads)
    n_rows = math.ceil(n_heads / columns)
    height = 220 * n_rows + 100
    fig = make_subplots(
        rows=n_rows, cols=columns, horizontal_spacing=0.02, vertical_spacing=40 / height,
        subplot_titles=[escape_for_plotly(label) for label in head_labels],
    )
    for h in range(n_heads):
        who = f"{escape_for_plotly(head_labels[h])}<br>"
        fig.add_trace(heatmap_trace(pooled[h], xs, ys, scale, who), row=h // columns + 1,
                      col=h % columns + 1)
    fig.update_traces(coloraxis="coloraxis")
    fig.update_xaxes(type="category", showticklabels=False)
    fig.update_yaxes(type="category", showticklabels=False, autorange="reversed")
    note = "" if pooled.shape[-2:] == (n_q, n_k) else pooled_note(
        n_q, n_k, pooled.shape, q_starts, k_starts)
    fig.update_layout(
        coloraxis=colour_axis(scale), title=plotly_title("Attention by head", note),
        height=height,
    )
    return fig


def query_attention_bars(
    pattern_rows: Any,
    tokens: Sequence[str],
    query_index: int,
    top_k: int = 10,
    head_labels: Sequence[str] | None = None,
    query_label: str | None = None,
) -> go.Figure:
    """Where one query attends, across heads: a head x key heat strip ``[H, top_k]``.

    ``pattern_rows [H, K]`` is each head's attention row for the query. The ``top_k`` keys
    with the largest weight in *any* head are kept (so a key one head focuses on is not
    averaged away), shown in position order and annotated with the weight. ``query_label``
    names a query that is not one of ``tokens`` (cross-attention: decoder queries, encoder
    keys); ``query_index`` is then its position among the queries.
    """
    rows = _query_rows(pattern_rows, tokens, query_index if query_label is None else 0)
    n_heads, n_k = rows.shape
    head_labels = _head_labels(head_labels, n_heads)
    keys = np.sort(np.argsort(-rows.max(0), kind="stable")[:top_k])
    key_labels = distinct_labels(tokens)
    fig = go.Figure(go.Heatmap(
        z=rows[:, keys],
        x=[escape_for_plotly(key_labels[k]) for k in keys],
        y=[escape_for_plotly(label) for label in distinct_labels(head_labels)],
        zmin=0.0, zmax=1.0, colorscale=COLOURSCALE, colorbar={"title": {"text": "weight"}},
        texttemplate="%{z:.2f}",
        hovertemplate="%{y}<br>key: %{x}<br>weight: %{z:.4f}<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_title(
            f"Where {query_label or tokens[query_index]} (position {query_index}) attends",
            f"Top {len(keys)} of {n_k} keys by their largest weight in any head."),
        xaxis={"title": {"text": "key"}, "type": "category"},
        yaxis={"title": {"text": "head"}, "type": "category", "autorange": "reversed"},
        height=max(250, 28 * n_heads + 140),
    )
    return fig


def pattern_frame(
    pattern_2d: Any, q_labels: Sequence[str], k_labels: Sequence[str]
) -> pd.DataFrame:
    """Tidy frame of a pattern ``[Q, K]``: columns query_pos, query, key_pos, key, weight.

    One row per cell in row-major order (``Q * K`` rows), labels unescaped, for CSV
    download. A spreadsheet may read a label starting with ``=``, ``+``, ``-`` or ``@`` as a
    formula: quote such cells when writing for spreadsheets.
    """
    weights = as_array(pattern_2d)
    n_q, n_k = weights.shape
    if len(q_labels) != n_q or len(k_labels) != n_k:
        raise ValueError(f"labels {len(q_labels)}x{len(k_labels)} for a {n_q}x{n_k} pattern")
    query_pos, key_pos = np.meshgrid(np.arange(n_q), np.arange(n_k), indexing="ij")
    return pd.DataFrame({
        "query_pos": query_pos.ravel(),
        "query": np.asarray(q_labels, dtype=object)[query_pos.ravel()],
        "key_pos": key_pos.ravel(),
        "key": np.asarray(k_labels, dtype=object)[key_pos.ravel()],
        "weight": weights.ravel(),
    })
