"""Pure figure builders for the Interventions page: numbers in, plotly/altair figures out.

- :func:`distribution_comparison`: two next-token distributions over the same tokens, as
  paired bars (before / after an ablation, prompt A / prompt B, clean / patched).
- :func:`lens_difference_grid`: the logit lens before and after an intervention: each cell is
  the new top-1 token, coloured by how the old top-1 token's probability moved
  (nostalgebraist 2020's lens, read on an edited run).
- :func:`patching_heatmap`: an activation-patching grid (layer x position or layer x head),
  clickable in Streamlit (Meng et al. 2022; Heimersheim and Nanda 2024).
- :func:`attribution_heatmap`: direct logit attribution of a logit difference to every head
  (layer x head) with the MLPs as one more column (Elhage et al. 2021).

Token strings are untrusted. Plotly reads labels as HTML, so they go through
:func:`explorer.viz.tokens.escape_for_plotly`; Vega-Lite (altair) draws text as text, so its
labels stay plain (display form, invisible characters already spelled out by the caller).
Shapes: ``R`` rows (layers), ``C`` columns (positions or heads), ``k`` top tokens, ``T``
tokens compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz.heatmap_cells import as_array, distinct_labels
from explorer.viz.layers import CELL_CHARS
from explorer.viz.tokens import escape_for_plotly, plotly_title

PAIR_COLOURS = ("#9ca3af", "#2563eb")  # first (before, A, corrupted) grey, second blue
DIVERGING = "RdBu"
MAX_GRID_CELLS = 40_000  # a clickable grid sends one row per cell to the browser
MIN_CHANGE_RANGE = 0.05  # the lens difference's colour range never shrinks below ±5 points


def _escaped(labels: Sequence[str]) -> list[str]:
    return [escape_for_plotly(label) for label in distinct_labels(labels)]


def _short(token: str) -> str:
    return token if len(token) <= CELL_CHARS else token[: CELL_CHARS - 1] + "…"


def distribution_comparison(
    tokens: Sequence[str], first: Any, second: Any, names: tuple[str, str] = ("before", "after"),
    title: str = "Next-token distribution",
) -> go.Figure:
    """Paired horizontal bars: the probability ``[T]`` of each token under two runs, the
    first token on top. ``tokens`` are display texts (escaped here)."""
    p, q = as_array(first), as_array(second)
    if p.shape != (len(tokens),) or q.shape != (len(tokens),):
        raise ValueError(f"{len(tokens)} tokens, probabilities {p.shape} and {q.shape}")
    labels = _escaped([f"{i + 1}. {token}" for i, token in enumerate(tokens)])
    fig = go.Figure()
    for name, probs, colour in zip(names, (p, q), PAIR_COLOURS, strict=True):
        label = escape_for_plotly(name)
        fig.add_trace(go.Bar(
            x=probs, y=labels, orientation="h", name=label, marker={"color": colour},
            text=[f"{v:.1%}" for v in probs], textposition="outside", cliponaxis=False,
            hovertemplate="%{y}<br>p = %{x:.4f}<extra>" + label + "</extra>"))
    fig.update_layout(
        title=plotly_title(title), barmode="group", height=max(260, 34 * len(tokens) + 120),
        margin={"l": 10, "r": 40, "t": 100, "b": 10},
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"title": {"text": "probability"}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0, "xanchor": "left"})
    return fig


def lens_difference_grid(
    before_tokens: Sequence[Sequence[Sequence[str]]], before_probs: Any,
    after_tokens: Sequence[Sequence[Sequence[str]]], after_probs: Any, delta: Any,
    row_labels: Sequence[str], col_labels: Sequence[str],
    title: str = "Logit lens: what the intervention changed",
) -> go.Figure:
    """Rows x positions: each cell shows the edited run's top-1 token (``→`` marks a new
    one) and is coloured by ``delta`` ``[R, C]``, the change in probability of the original
    top-1 token (blue: more likely, red: less), on a symmetric range fitted to the largest
    change (at least ±``MIN_CHANGE_RANGE``). Hover lists both top-k ``[R, C, k]``."""
    change = as_array(delta)
    p, q = as_array(before_probs), as_array(after_probs)
    n_rows, n_cols = change.shape
    if (p.shape[:2] != change.shape or q.shape[:2] != change.shape
            or (len(row_labels), len(col_labels)) != change.shape):
        raise ValueError(f"shapes {p.shape}, {q.shape}, {change.shape}, {len(row_labels)} "
                         f"rows, {len(col_labels)} columns")

    def cell(r: int, c: int) -> str:
        new = after_tokens[r][c][0]
        mark = "" if new == before_tokens[r][c][0] else "→"
        return escape_for_plotly(mark + _short(new))

    def top(tokens: Sequence[str], probs: np.ndarray) -> str:
        return ", ".join(f"{escape_for_plotly(t)} {v:.2f}" for t, v in
                         zip(tokens, probs, strict=False))

    text = [[cell(r, c) for c in range(n_cols)] for r in range(n_rows)]
    bound = max(float(np.abs(change).max(initial=0.0)), MIN_CHANGE_RANGE)
    hover = [[f"<b>before</b> {top(before_tokens[r][c], p[r, c])}<br>"
              f"<b>after</b> {top(after_tokens[r][c], q[r, c])}"
              for c in range(n_cols)] for r in range(n_rows)]
    fig = go.Figure(go.Heatmap(
        z=change, x=_escaped(col_labels), y=_escaped(row_labels), text=text,
        texttemplate="%{text}", textfont={"size": 10, "color": "#111827"}, customdata=hover,
        hovertemplate="%{y} · %{x}<br>Δ p(old top token) = %{z:+.3f}<br>%{customdata}"
                      "<extra></extra>",
        colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound, xgap=1, ygap=1,
        colorbar={"title": {"text": "Δ p(old top-1)"}}))
    fig.update_layout(
        title=plotly_title(title),
        height=max(300, 22 * n_rows + 200), margin={"l": 10, "r": 10, "t": 140, "b": 10},
        xaxis={"side": "top", "tickangle": -45, "type": "category"},
        yaxis={"type": "category", "autorange": True})
    return fig


def patching_frame(values: Any, normalised: Any, row_labels: Sequence[str],
                   col_labels: Sequence[str]) -> pd.DataFrame:
    """Tidy frame of a patching grid: one record per cell (row, column, raw metric and
    normalised value), the shape the clickable chart and the CSV share."""
    raw, norm = as_array(values), as_array(normalised)
    if raw.shape != norm.shape or raw.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values {raw.shape}, normalised {norm.shape} for "
                         f"{len(row_labels)} x {len(col_labels)} labels")
    rows, cols = np.meshgrid(np.arange(raw.shape[0]), np.arange(raw.shape[1]), indexing="ij")
    return pd.DataFrame({
        "row_index": rows.ravel(), "col_index": cols.ravel(),
        "row": np.asarray(list(row_labels), dtype=object)[rows.ravel()],
        "column": np.asarray(list(col_labels), dtype=object)[cols.ravel()],
        "metric": raw.ravel().astype(float).round(6),
        "normalised": norm.ravel().astype(float).round(6)})


def patching_heatmap(
    values: Any, normalised: Any, row_labels: Sequence[str], col_labels: Sequence[str],
    title: str, column_title: str = "position", selected: tuple[int, int] | None = None,
) -> alt.Chart:
    """A clickable rows x columns grid of a patched metric, coloured by ``normalised``
    ``[R, C]`` (1 = the clean run's metric, 0 = the corrupted run's; diverging around 0),
    the raw metric ``values`` on hover. The chart carries
    ``alt.selection_point(name="cell", fields=["row_index", "col_index"])``, so
    ``st.altair_chart(chart, on_select="rerun")`` returns the clicked cell; ``selected``
    is outlined. Labels are plain text (Vega draws them as text)."""
    frame = patching_frame(values, normalised, row_labels, col_labels)
    if len(frame) > MAX_GRID_CELLS:
        raise ValueError(f"{len(frame):,} cells: at most {MAX_GRID_CELLS:,} fit a chart")
    frame["selected"] = False
    if selected is not None:
        frame["selected"] = ((frame["row_index"] == selected[0])
                             & (frame["col_index"] == selected[1]))
    click = alt.selection_point(name="cell", fields=["row_index", "col_index"], on="click")
    n_rows = len(row_labels)
    return (
        alt.Chart(frame, title=alt.Title(title, anchor="start"))
        .mark_rect()
        .encode(
            x=alt.X("column:N", sort=list(dict.fromkeys(col_labels)), title=column_title,
                    axis=alt.Axis(labelAngle=-45, labelLimit=120, orient="top",
                                  labelOverlap=False)),
            y=alt.Y("row:N", sort=list(dict.fromkeys(row_labels)), title="layer"),
            color=alt.Color("normalised:Q", title="1 = clean, 0 = corrupted",
                            scale=alt.Scale(scheme="redblue", domainMid=0),
                            legend=alt.Legend(orient="bottom", direction="horizontal")),
            stroke=alt.condition(alt.datum.selected, alt.value("#111827"), alt.value(None)),
            strokeWidth=alt.condition(alt.datum.selected, alt.value(3), alt.value(0)),
            tooltip=[alt.Tooltip("row:N", title="layer"),
                     alt.Tooltip("column:N", title=column_title),
                     alt.Tooltip("normalised:Q", title="normalised", format=".3f"),
                     alt.Tooltip("metric:Q", title="metric", format=".3f")],
        )
        .add_params(click)
        # the height includes the title, the slanted labels and the legend (autosize fit)
        .properties(width="container", height=min(max(16 * n_rows + 220, 320), 860))
    )


def attribution_heatmap(
    heads: Any, mlps: Any, title: str, note: str = "",
    head_labels: Sequence[str] | None = None,
) -> go.Figure:
    """Each head's ``[L, H]`` and each MLP's ``[L]`` direct contribution to a logit
    difference: a layer x head heatmap and, beside it, one MLP column, on one diverging
    colour scale centred at 0 (blue: towards the target, red: towards the distractor)."""
    per_head, per_mlp = as_array(heads), as_array(mlps)
    n_layers, n_heads = per_head.shape
    if per_mlp.shape != (n_layers,):
        raise ValueError(f"heads {per_head.shape}, MLPs {per_mlp.shape}")
    names = list(head_labels) if head_labels is not None else [f"H{h}" for h in range(n_heads)]
    if len(names) != n_heads:
        raise ValueError(f"{len(names)} head labels for {n_heads} heads")
    bound = float(max(np.abs(per_head).max(initial=0.0), np.abs(per_mlp).max(initial=0.0))) or 1.0
    layers = [f"L{layer}" for layer in range(n_layers)]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.02,
                        column_widths=[n_heads / (n_heads + 1.5), 1.5 / (n_heads + 1.5)])
    common = {"colorscale": DIVERGING, "zmid": 0.0, "zmin": -bound, "zmax": bound,
              "xgap": 1, "ygap": 1}
    fig.add_trace(go.Heatmap(
        z=per_head, x=_escaped(names), y=layers, colorbar={"title": {"text": "logit diff"}},
        hovertemplate="%{y} %{x}: %{z:+.4f}<extra></extra>", **common), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=per_mlp[:, None], x=["MLP"], y=layers, showscale=False,
        hovertemplate="%{y} MLP: %{z:+.4f}<extra></extra>", **common), row=1, col=2)
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(type="category", side="top")
    fig.update_layout(title=plotly_title(title, note), height=max(320, 18 * n_layers + 160),
                      margin={"l": 10, "r": 10, "t": 110, "b": 10})
    return fig
