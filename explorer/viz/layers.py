"""Pure figure builders for the Layers page: numbers in, plotly figures out.

- :func:`logit_lens_grid`: rows = residual-stream points, columns = positions, each cell its
  top-1 token coloured by a statistic, top-5 on hover (nostalgebraist 2020's plots; the
  tuned lens's, Belrose et al. 2023).
- :func:`trajectory_chart`: a token's probability and rank at every row.
- :func:`contributions_chart`: direct logit attribution per layer, bars or a waterfall
  (Elhage et al. 2021).
- :func:`value_heatmap`: any rows x positions matrix (norms, cosines), columns averaged in
  blocks past ``max_cells``.
- :func:`pca_scatter`: tokens on two principal axes, axes fixed by the caller.

Every token string is untrusted: labels, cell texts and hover texts are escaped with
:func:`explorer.viz.tokens.escape_for_plotly`. Shapes: ``R`` rows, ``C``/``N`` positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz.heatmap_cells import as_array, distinct_labels
from explorer.viz.tokens import escape_for_plotly, plotly_title

# statistic -> (colour bar title, colour scale, fixed range or None). Light scales: the
# cells carry dark text.
LENS_STATS = {
    "prob": ("probability of the top token", [[0.0, "#f7fbff"], [1.0, "#4f93cf"]], (0.0, 1.0)),
    "entropy": ("entropy (nats)", [[0.0, "#fff7ec"], [1.0, "#f4a261"]], None),
    "kl": ("KL(final ‖ row) (nats)", [[0.0, "#fcfbfd"], [1.0, "#a89ad4"]], None),
}
CELL_CHARS = 7  # top-1 token text cut to this many characters inside a cell


def _escaped(labels: Sequence[str]) -> list[str]:
    return [escape_for_plotly(label) for label in distinct_labels(labels)]


def _cell_text(token: str) -> str:
    short = token if len(token) <= CELL_CHARS else token[: CELL_CHARS - 1] + "…"
    return escape_for_plotly(short)


def logit_lens_grid(
    top_tokens: Sequence[Sequence[Sequence[str]]],
    top_probs: Any,
    values: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    stat: str = "prob",
    title: str = "Logit lens",
) -> go.Figure:
    """The lens grid. ``top_tokens[r][c]`` lists the top-k token texts (display form),
    ``top_probs`` ``[R, C, k]`` their probabilities, ``values`` ``[R, C]`` the colour.
    Row 0 is drawn at the bottom (the embeddings) and the last row (the output) on top."""
    probs, colour = as_array(top_probs), as_array(values)
    n_rows, n_cols = colour.shape
    if probs.shape[:2] != (n_rows, n_cols) or (len(row_labels), len(col_labels)) != colour.shape:
        raise ValueError(f"shapes {probs.shape}, {colour.shape}, "
                         f"{len(row_labels)} rows, {len(col_labels)} columns")
    if stat not in LENS_STATS:
        raise KeyError(f"unknown statistic {stat!r}; known: {sorted(LENS_STATS)}")
    bar_title, scale, fixed = LENS_STATS[stat]
    text = [[_cell_text(top_tokens[r][c][0]) for c in range(n_cols)] for r in range(n_rows)]
    hover = [["<br>".join(f"{escape_for_plotly(t)}: {p:.3f}" for t, p in
                          zip(top_tokens[r][c], probs[r, c], strict=False))
              for c in range(n_cols)] for r in range(n_rows)]
    trace = go.Heatmap(
        z=colour, x=_escaped(col_labels), y=_escaped(row_labels), text=text,
        texttemplate="%{text}", textfont={"size": 10, "color": "#111827"}, customdata=hover,
        hovertemplate="%{y} · %{x}<br>" + escape_for_plotly(bar_title)
        + ": %{z:.3f}<br><b>top tokens</b><br>%{customdata}<extra></extra>",
        colorscale=scale, colorbar={"title": {"text": escape_for_plotly(bar_title)}},
        zmin=fixed[0] if fixed else None, zmax=fixed[1] if fixed else None,
        xgap=1, ygap=1,
    )
    fig = go.Figure(trace)
    fig.update_layout(
        title=plotly_title(title), height=max(300, 22 * n_rows + 200),
        margin={"l": 10, "r": 10, "t": 140, "b": 10},
        xaxis={"side": "top", "tickangle": -45, "type": "category"},
        yaxis={"type": "category", "autorange": True},
    )
    return fig


def trajectory_chart(
    row_labels: Sequence[str], probs: Any, ranks: Any, series: Sequence[str],
    title: str = "Target token through the layers",
) -> go.Figure:
    """Probability (top) and rank (bottom, log scale, 1 = top token) ``[R, S]`` per row,
    one line per series (a position and its target token)."""
    probs, ranks = as_array(probs), as_array(ranks)
    if probs.shape != ranks.shape or probs.shape != (len(row_labels), len(series)):
        raise ValueError(f"shapes {probs.shape}, {ranks.shape} for {len(row_labels)} rows "
                         f"and {len(series)} series")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("probability", "rank (1 = top token)"))
    xs = _escaped(row_labels)
    for s, name in enumerate(series):
        label = escape_for_plotly(name)
        fig.add_trace(go.Scatter(x=xs, y=probs[:, s], mode="lines+markers", name=label,
                                 legendgroup=str(s), hovertemplate="%{x}: %{y:.4f}"
                                 "<extra>" + label + "</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=ranks[:, s] + 1, mode="lines+markers", name=label,
                                 legendgroup=str(s), showlegend=False,
                                 hovertemplate="%{x}: rank %{y:.0f}<extra>" + label
                                 + "</extra>"), row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(type="log", autorange="reversed", row=2, col=1)
    fig.update_xaxes(type="category", tickangle=-45)
    fig.update_layout(title=plotly_title(title), height=520, hovermode="x unified",
                      margin={"l": 10, "r": 10, "t": 80, "b": 10},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def contributions_chart(
    labels: Sequence[str], values: Any, constant: float, logit: float, how: str = "bars",
    title: str = "Direct contributions to the logit",
) -> go.Figure:
    """Each part's share of the logit. ``how="bars"``: one bar per part, coloured by kind
    (embeddings, attention, cross-attention, MLP, biases); ``"waterfall"``: the running sum
    from the embeddings to the logit."""
    shares = as_array(values).astype(np.float64)
    if len(labels) != len(shares):
        raise ValueError(f"{len(labels)} labels for {len(shares)} values")
    names = [escape_for_plotly(label) for label in [*labels, "biases"]]
    all_values = [*shares.tolist(), float(constant)]
    note = f"sum of the parts {sum(all_values):.4f} · the model's logit {logit:.4f}"
    if how == "waterfall":
        fig = go.Figure(go.Waterfall(
            x=[*names, "logit"], y=[*all_values, 0.0],
            measure=["relative"] * len(all_values) + ["total"],
            hovertemplate="%{x}: %{y:+.4f}<extra></extra>"))
    else:  # one group of bars per layer: x = the layer, one trace per kind of part
        groups = [_group(label) for label in [*labels, "biases"]]
        xs = [escape_for_plotly(g) for g in dict.fromkeys(g for g, _ in groups)]
        fig = go.Figure()
        for kind in dict.fromkeys(k for _, k in groups):
            idx = [i for i, (_, k) in enumerate(groups) if k == kind]
            fig.add_trace(go.Bar(x=[escape_for_plotly(groups[i][0]) for i in idx],
                                 y=[all_values[i] for i in idx], name=kind,
                                 customdata=[names[i] for i in idx],
                                 hovertemplate="%{customdata}: %{y:+.4f}<extra></extra>"))
        fig.update_layout(barmode="group")
        fig.update_xaxes(categoryorder="array", categoryarray=xs)
    fig.update_layout(title=plotly_title(title, note), height=440, showlegend=how != "waterfall",
                      margin={"l": 10, "r": 10, "t": 80, "b": 10},
                      xaxis={"type": "category", "tickangle": -45},
                      yaxis={"title": {"text": "logit"}})
    return fig


def _group(label: str) -> tuple[str, str]:
    """(x group, kind) of a part label: ``"L3 attn"`` -> ``("L3", "attention")``."""
    for suffix, kind in ((" cross-attn", "cross-attention"), (" attn", "attention"),
                         (" mlp", "MLP")):
        if label.endswith(suffix):
            return label.removesuffix(suffix), kind
    return label, label  # "embeddings", "biases"


def column_blocks(n: int, max_cells: int) -> list[int]:
    """The first position of each block when ``n`` columns are averaged down to at most
    ``max_cells`` (every position when they fit)."""
    return list(range(0, n, math.ceil(n / max_cells))) if n > max_cells else list(range(n))


def value_heatmap(
    values: Any, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
    colour_title: str, colourscale: str = "Viridis", max_cells: int = 256,
    zrange: tuple[float, float] | None = None, note: str = "", square: bool = False,
) -> go.Figure:
    """A rows x positions heatmap of ``values`` ``[R, C]``; past ``max_cells`` columns (and
    rows) blocks are averaged and the subtitle says so. ``square``: a token x token matrix,
    drawn top-down with equal axes."""
    matrix = as_array(values)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"{matrix.shape} values for {len(row_labels)} x {len(col_labels)}")
    xs, ys = _escaped(col_labels), _escaped(row_labels)
    col_starts = column_blocks(matrix.shape[1], max_cells)
    if len(col_starts) < matrix.shape[1]:
        matrix = np.add.reduceat(matrix, col_starts, axis=1) / np.diff(
            [*col_starts, len(col_labels)])
        xs = _block_labels(col_starts, len(col_labels))
        note = (note + " · " if note else "") + (
            f"{len(col_labels):,} positions averaged in blocks of "
            f"{col_starts[1] - col_starts[0]}")
    row_starts = column_blocks(matrix.shape[0], max_cells)
    if len(row_starts) < matrix.shape[0]:
        matrix = np.add.reduceat(matrix, row_starts, axis=0) / np.diff(
            [*row_starts, len(row_labels)])[:, None]
        ys = _block_labels(row_starts, len(row_labels))
    fig = go.Figure(go.Heatmap(
        z=matrix.astype(np.float32), x=xs, y=ys, colorscale=colourscale,
        zmin=zrange[0] if zrange else None, zmax=zrange[1] if zrange else None,
        colorbar={"title": {"text": escape_for_plotly(colour_title)}},
        hovertemplate="%{y} · %{x}<br>" + escape_for_plotly(colour_title)
        + ": %{z:.4g}<extra></extra>"))
    height = 520 if square else max(300, min(16 * len(ys) + 160, 700))
    fig.update_layout(title=plotly_title(title, note), height=height,
                      margin={"l": 10, "r": 10, "t": 80, "b": 10},
                      xaxis={"type": "category", "tickangle": -45},
                      yaxis={"type": "category", "autorange": "reversed" if square else True})
    if square:
        fig.update_yaxes(scaleanchor="x", constrain="domain")
    return fig


def _block_labels(starts: list[int], n: int) -> list[str]:
    spans = zip(starts, [*starts[1:], n], strict=True)
    return [f"tok {s}–{e - 1}" if e - s > 1 else f"tok {s}" for s, e in spans]


def lines_chart(
    x_labels: Sequence[str], series: dict[str, Any], title: str, y_title: str,
    log_y: bool = False,
) -> go.Figure:
    """One line per named series ``[X]`` over category ``x_labels``."""
    fig = go.Figure()
    xs = _escaped(x_labels)
    for name, ys in series.items():
        label = escape_for_plotly(name)
        fig.add_trace(go.Scatter(x=xs, y=as_array(ys), mode="lines+markers", name=label,
                                 hovertemplate="%{x}: %{y:.4g}<extra>" + label + "</extra>"))
    fig.update_layout(title=plotly_title(title), height=380, hovermode="x unified",
                      margin={"l": 10, "r": 10, "t": 60, "b": 10},
                      xaxis={"type": "category", "tickangle": -45},
                      yaxis={"title": {"text": escape_for_plotly(y_title)},
                             "type": "log" if log_y else "linear"})
    return fig


def pca_scatter(
    coords: Any, labels: Sequence[str], explained: Any, title: str,
    axis_range: tuple[float, float] | None = None, max_labels: int = 64,
    positions: Sequence[int] | None = None,
) -> go.Figure:
    """Tokens ``[N, 2]`` on two principal axes; ``axis_range`` fixes both axes (so a layer
    slider keeps them comparable). Points are coloured by ``positions`` (default 0..N-1);
    up to ``max_labels`` points also show their token as text."""
    points, share = as_array(coords), as_array(explained)
    if points.shape != (len(labels), 2):
        raise ValueError(f"{points.shape} coordinates for {len(labels)} labels")
    escaped = [escape_for_plotly(label) for label in labels]
    fig = go.Figure(go.Scatter(
        x=points[:, 0], y=points[:, 1], mode="markers+text" if len(labels) <= max_labels
        else "markers", text=escaped, textposition="top center", textfont={"size": 10},
        marker={"color": np.arange(len(labels)) if positions is None else list(positions),
                "colorscale": "Viridis", "size": 8,
                "colorbar": {"title": {"text": "position"}}},
        hovertemplate="%{text}<br>(%{x:.3g}, %{y:.3g})<extra></extra>"))
    axis = {"range": list(axis_range)} if axis_range else {}
    fig.update_layout(
        title=plotly_title(title, f"PC1 {100 * share[0]:.1f}% · PC2 {100 * share[1]:.1f}% of the "
                            "variance"),
        height=480, margin={"l": 10, "r": 10, "t": 80, "b": 10},
        xaxis={"title": {"text": "PC1"}, "zeroline": True, **axis},
        yaxis={"title": {"text": "PC2"}, "zeroline": True, **axis})
    return fig
