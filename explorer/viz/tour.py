"""Figures of the guided tour: small charts of one token's real values at each step.

Pure builders (numbers in, plotly figures out): a vector's values per dimension, values per
key token (scores, masks, attention weights), an activation function with the real
pre-activations on it, the per-layer strip of the residual stream, and next-token bars.
Every label is escaped for plotly (`explorer.viz.tokens`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz.heatmap_cells import as_array
from explorer.viz.tokens import escape_for_plotly, plotly_title

HEIGHT = 300
BAR_LIMIT = 96  # up to this many dimensions as bars; more as a line
STRIP_CHARS = 12  # a lens token is cut to this many characters in the strip (hover: whole)
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2")


def _layout(fig: go.Figure, title: str, note: str, x_title: str, y_title: str,
            height: int = HEIGHT, **extra: Any) -> go.Figure:
    fig.update_layout(title=plotly_title(title, note), height=height,
                      margin={"l": 60, "r": 20, "t": 70 if note else 50, "b": 50},
                      xaxis={"title": {"text": escape_for_plotly(x_title)}},
                      yaxis={"title": {"text": escape_for_plotly(y_title)}},
                      legend={"orientation": "h", "y": -0.25}, **extra)
    return fig


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan).astype(np.float32)


def vector_chart(series: Mapping[str, Any], title: str, note: str = "",
                 x_title: str = "dimension", y_title: str = "value") -> go.Figure:
    """One or more vectors of equal length ``[D]`` by dimension: bars when short, lines when
    long (d_model of hundreds)."""
    fig = go.Figure()
    lengths = {len(as_array(v)) for v in series.values()}
    if len(lengths) != 1:
        raise ValueError(f"vectors of different lengths {sorted(lengths)}")
    n = lengths.pop()
    xs = np.arange(n)
    for i, (name, values) in enumerate(series.items()):
        label = escape_for_plotly(name)
        ys = _finite(as_array(values))
        colour = PALETTE[i % len(PALETTE)]
        hover = f"{label}<br>dim %{{x}}: %{{y:.4g}}<extra></extra>"
        if n <= BAR_LIMIT:
            fig.add_trace(go.Bar(x=xs, y=ys, name=label, marker_color=colour,
                                 hovertemplate=hover))
        else:
            fig.add_trace(go.Scatter(x=xs, y=ys, name=label, mode="lines",
                                     line={"color": colour, "width": 1}, hovertemplate=hover))
    fig.update_layout(barmode="group", showlegend=len(series) > 1)
    return _layout(fig, title, note, x_title, y_title)


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in ``flags``."""
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def key_chart(keys: Sequence[str], series: Mapping[str, Any], title: str, note: str = "",
              y_title: str = "value", blocked: Sequence[bool] | None = None,
              query: int | None = None) -> go.Figure:
    """Values per key token (``[M]`` per series): scores, biases, attention weights. Keys
    in ``blocked`` (masked) are marked with a grey band and an ✕; ``query`` outlines the
    query's own position."""
    labels = [escape_for_plotly(k) for k in keys]
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        ys = _finite(as_array(values))
        if len(ys) != len(labels):
            raise ValueError(f"{name!r} has {len(ys)} values for {len(labels)} keys")
        label = escape_for_plotly(name)
        fig.add_trace(go.Bar(x=labels, y=ys, name=label, marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate=f"{label}<br>%{{x}}: %{{y:.4g}}<extra></extra>"))
    for start, stop in _runs(blocked or []):  # one grey band per run of masked keys
        fig.add_vrect(x0=start - 0.5, x1=stop - 0.5, fillcolor="lightgrey", opacity=0.5,
                      line_width=0, layer="below")
        fig.add_annotation(x=(start + stop - 1) / 2, y=0, text="masked" if stop - start > 2
                           else "✕", showarrow=False, font={"color": "grey"}, yshift=10)
    if query is not None and 0 <= query < len(labels):
        fig.add_vrect(x0=query - 0.5, x1=query + 0.5, line={"color": "black", "dash": "dot"},
                      fillcolor="rgba(0,0,0,0)")
    tilted = len(labels) > 8
    fig.update_xaxes(type="category", tickangle=-45 if tilted else 0)
    fig = _layout(fig, title, note, "key token", y_title, height=HEIGHT + 40 * tilted)
    # slanted labels take room below the axis: the legend goes further down
    fig.update_layout(barmode="group", showlegend=len(series) > 1,
                      legend={"orientation": "h", "y": -0.5 if tilted else -0.3})
    return fig


def activation_chart(function: Callable[[np.ndarray], np.ndarray], pre: Any, name: str,
                     title: str, note: str = "") -> go.Figure:
    """The activation ``function`` as a curve over the range of the real pre-activations
    ``pre [F]``, with each of them as a dot on it."""
    xs = as_array(pre)
    lo, hi = float(np.nanmin(xs)), float(np.nanmax(xs))
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 200)
    label = escape_for_plotly(name)
    fig = go.Figure([
        go.Scatter(x=grid, y=function(grid), mode="lines", name=label,
                   line={"color": "grey"}, hoverinfo="skip"),
        go.Scatter(x=xs.astype(np.float32), y=_finite(function(xs)), mode="markers",
                   name="this token's units", marker={"size": 4, "color": PALETTE[0],
                                                      "opacity": 0.6},
                   hovertemplate="in %{x:.3g} → out %{y:.3g}<extra></extra>"),
    ])
    fig.update_layout(showlegend=True)
    return _layout(fig, title, note, "input to the activation", f"{name}(input)")


def layer_strip(layers: Sequence[str], norms: Mapping[str, Any], title: str,
                top_tokens: Sequence[str] | None = None, top_probs: Any = None,
                note: str = "") -> go.Figure:
    """Lines per layer (the stream's norm, what each sub-layer wrote) and, when the model
    has a head, a row of cells above: the token the logit lens reads at each layer (written
    upwards, so long pieces fit), coloured by its probability."""
    rows = 2 if top_tokens is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[0.3, 0.7] if rows == 2 else [1.0])
    xs = [escape_for_plotly(label) for label in layers]
    if top_tokens is not None:
        probs = as_array(top_probs)
        text = [escape_for_plotly(t) for t in top_tokens]
        fig.add_trace(go.Heatmap(
            x=xs, y=[""], z=[_finite(probs)], customdata=[text], colorscale="Blues", zmin=0,
            zmax=1, showscale=False,
            hovertemplate="%{x}: %{customdata} (p = %{z:.3f})<extra></extra>"), row=1, col=1)
        for x, label, p in zip(xs, text, probs, strict=True):
            fig.add_annotation(x=x, y=0, text=label[:STRIP_CHARS], textangle=-90,
                               showarrow=False, xref="x", yref="y",
                               font={"size": 11, "color": "white" if p > 0.5 else "black"})
        fig.update_yaxes(title_text="lens", row=1, col=1)
    for i, (name, values) in enumerate(norms.items()):
        ys = _finite(as_array(values))
        label = escape_for_plotly(name)
        fig.add_trace(go.Scatter(x=xs[-len(ys):], y=ys, name=label, mode="lines+markers",
                                 line={"color": PALETTE[i % len(PALETTE)]},
                                 hovertemplate=f"{label}<br>%{{x}}: %{{y:.4g}}<extra></extra>"),
                      row=rows, col=1)
    fig.update_layout(title=plotly_title(title, note), height=HEIGHT + 120 * (rows - 1),
                      margin={"l": 60, "r": 20, "t": 70 if note else 50, "b": 50},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_yaxes(title_text="vector length (L2)", row=rows, col=1)
    fig.update_xaxes(type="category", row=rows, col=1)
    return fig


def heads_heatmap(pattern: Any, keys: Sequence[str], title: str, head: int | None = None
                  ) -> go.Figure:
    """Attention weights of one query in every head ``[H, M]``: heads down, key tokens
    across; ``head`` (the one the tour follows) is outlined."""
    values = as_array(pattern)
    labels = [escape_for_plotly(k) for k in keys]
    heads = [f"head {i}" for i in range(values.shape[0])]
    fig = go.Figure(go.Heatmap(
        x=labels, y=heads, z=_finite(values), colorscale="Viridis", zmin=0,
        colorbar={"title": {"text": "weight"}},
        hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>"))
    if head is not None:
        fig.add_hrect(y0=head - 0.5, y1=head + 0.5, line={"color": "white", "width": 2})
    fig.update_xaxes(type="category", tickangle=-45 if len(labels) > 8 else 0)
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, title, "", "key token", "", height=max(HEIGHT, 24 * len(heads) + 120))


def token_bars(tokens: Sequence[str], series: Mapping[str, Any], title: str, note: str = "",
               x_title: str = "probability", highlight: int | None = None,
               value_format: str = ".1%") -> go.Figure:
    """Horizontal bars per candidate token (first on top): probabilities or logits, one
    group per named series; a single series is labelled with its values (``value_format``,
    a d3 format);
    ``highlight`` marks one token (the one drawn)."""
    labels = [escape_for_plotly(t) for t in tokens]
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        label = escape_for_plotly(name)
        fig.add_trace(go.Bar(y=labels, x=_finite(as_array(values)), name=label,
                             orientation="h", marker_color=PALETTE[i % len(PALETTE)],
                             # grouped bars are too thin to carry a label
                             texttemplate=f"%{{x:{value_format}}}" if len(series) == 1 else None,
                             textposition="outside", cliponaxis=False,
                             hovertemplate=f"{label}<br>%{{y}}: %{{x:.4g}}<extra></extra>"))
    if highlight is not None and 0 <= highlight < len(labels):
        fig.add_hrect(y0=highlight - 0.5, y1=highlight + 0.5, fillcolor="gold", opacity=0.3,
                      line_width=0, layer="below")
    fig.update_layout(barmode="group", showlegend=len(series) > 1)
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, title, note, x_title, "", height=max(HEIGHT, 28 * len(labels) + 120))
