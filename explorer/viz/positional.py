"""Pure figure builders for the positional-encodings page: numbers in, plotly figures out.

- :func:`value_heatmap`: any matrix on numeric axes (a sinusoidal or learned position table,
  position x position dot products or cosines, an ALiBi bias, heads x rotary pairs), with a
  diverging colour scale centred on 0; a side longer than ``max_cells`` shows every s-th row
  or column and the subtitle says so, so one chart stays well under 2 MB.
- :func:`line_chart` and :func:`bar_chart`: several named series over one numeric x (curves
  of chosen dimensions, a score against offset, a bias per head, errors per layer).
- :func:`pair_rotation_chart`: one rotary pair's 2-D point as the position grows (Su et al.
  2021).
- :func:`pca_trajectory`: positions on their top principal components, coloured by position.

Titles, series names and category labels may hold token text from the user: every builder
escapes them with :func:`explorer.viz.tokens.escape_for_plotly`. Inputs are numpy arrays or
torch tensors (converted by duck typing; no torch import). Shapes: ``R`` rows, ``C`` columns,
``N`` points, ``k`` components.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from explorer.viz.tokens import escape_for_plotly, plotly_title

MAX_CELLS = 256  # per side of a heatmap
DIVERGING = "RdBu_r"


def _array(values: Any) -> np.ndarray:
    """A float64 numpy copy of a numpy array, list or torch tensor (any device)."""
    if hasattr(values, "detach"):
        values = values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _axis(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": escape_for_plotly(title)}, **extra}


def _finite(values: np.ndarray) -> np.ndarray:
    """float32 for plotly (sent as a compact typed array) with inf as NaN: blank cells, gaps
    in lines."""
    return np.where(np.isfinite(values), values, np.nan).astype(np.float32)


def value_heatmap(
    matrix: Any,
    x: Sequence[float] | None = None,
    y: Sequence[float] | None = None,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    value_title: str = "value",
    diverging: bool = True,
    max_cells: int = MAX_CELLS,
    y_labels: Sequence[str] | None = None,
) -> go.Figure:
    """Heatmap of ``matrix [R, C]``: rows down the y axis (first row on top), columns across.

    ``x`` and ``y`` are the numeric coordinates of the columns and rows (default 0..C-1,
    0..R-1); ``y_labels`` names the rows instead (heads, say). NaN cells stay blank.
    ``diverging`` centres a red-blue scale on 0 (signed values such as sin/cos, dot products);
    otherwise the scale runs from the minimum to the maximum (Viridis).
    """
    values = _array(matrix)
    if values.ndim != 2:
        raise ValueError(f"expected a matrix [R, C], got shape {values.shape}")
    n_rows, n_cols = values.shape
    xs = np.arange(n_cols) if x is None else _array(x)
    ys = np.arange(n_rows) if y is None else _array(y)
    if len(xs) != n_cols or len(ys) != n_rows:
        raise ValueError(f"{len(ys)} x {len(xs)} coordinates for a {values.shape} matrix")
    row_step, col_step = math.ceil(n_rows / max_cells), math.ceil(n_cols / max_cells)
    shown = values[::row_step, ::col_step]
    notes = []
    if row_step > 1:
        notes.append(f"1 in {row_step} of {n_rows} rows")
    if col_step > 1:
        notes.append(f"1 in {col_step} of {n_cols} columns")
    note = ("Showing " + " and ".join(notes) + " (the CSV has all).") if notes else ""
    trace: dict[str, Any] = {
        "z": _finite(shown),
        "x": xs[::col_step],
        "colorbar": {"title": {"text": escape_for_plotly(value_title)}},
        "hovertemplate": (f"{escape_for_plotly(y_title)}: %{{y}}<br>"
                          f"{escape_for_plotly(x_title)}: %{{x}}<br>"
                          f"{escape_for_plotly(value_title)}: %{{z:.4g}}<extra></extra>"),
    }
    if y_labels is not None:
        if len(y_labels) != n_rows:
            raise ValueError(f"{len(y_labels)} row labels for {n_rows} rows")
        trace["y"] = [escape_for_plotly(label) for label in list(y_labels)[::row_step]]
    else:
        trace["y"] = ys[::row_step]
    finite = shown[np.isfinite(shown)]
    if diverging:
        limit = float(np.abs(finite).max()) if finite.size else 1.0
        trace.update(colorscale=DIVERGING, zmid=0.0, zmin=-limit or -1.0, zmax=limit or 1.0)
    else:
        trace.update(colorscale="Viridis")
    fig = go.Figure(go.Heatmap(**trace))
    y_axis = _axis(y_title, autorange="reversed")
    if y_labels is not None:
        y_axis["type"] = "category"
    fig.update_layout(title=plotly_title(title, note), xaxis=_axis(x_title), yaxis=y_axis)
    return fig


def line_chart(
    x: Any,
    series: Mapping[str, Any],
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    log_y: bool = False,
    step: bool = False,
    note: str = "",
    marker_x: float | None = None,
    y_range: tuple[float, float] | None = None,
) -> go.Figure:
    """One line per named series ``[N]`` over the numeric ``x [N]``.

    ``step`` draws a staircase (bucket indices), ``log_y`` a log y axis, ``marker_x`` a
    dotted vertical line (an actual offset, say), ``y_range`` a fixed y axis (so a constant
    series reads as constant instead of autoscaling onto its rounding). Non-finite values
    leave gaps.
    """
    xs = _array(x)
    fig = go.Figure()
    for name, values in series.items():
        ys = _array(values)
        if ys.shape != xs.shape:
            raise ValueError(f"series {name!r} has shape {ys.shape}, x has {xs.shape}")
        label = escape_for_plotly(name)
        fig.add_trace(go.Scatter(
            x=xs, y=_finite(ys), mode="lines", name=label,
            line={"shape": "hv" if step else "linear"},
            hovertemplate=f"{label}<br>%{{x}}: %{{y:.4g}}<extra></extra>",
        ))
    if marker_x is not None:
        fig.add_vline(x=float(marker_x), line_dash="dot", line_color="grey")
    fig.update_layout(title=plotly_title(title, note), xaxis=_axis(x_title),
                      yaxis=_axis(y_title, type="log" if log_y else "linear",
                                  **({"range": list(y_range)} if y_range else {})),
                      showlegend=len(series) > 1, hovermode="x unified" if len(xs) < 2000
                      else "closest")
    return fig


def bar_chart(
    categories: Sequence[Any],
    series: Mapping[str, Any],
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    log_y: bool = False,
    note: str = "",
    hover: Sequence[str] | None = None,
) -> go.Figure:
    """Grouped bars: one bar per category per named series ``[C]``; ``hover`` adds a line of
    text per category (a rotary pair's wavelength, say)."""
    labels = [escape_for_plotly(str(c)) for c in categories]
    extra = [escape_for_plotly(h) for h in hover] if hover is not None else [""] * len(labels)
    fig = go.Figure()
    for name, values in series.items():
        ys = _array(values)
        if len(ys) != len(labels):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(labels)} bars")
        label = escape_for_plotly(name)
        fig.add_trace(go.Bar(
            x=labels, y=_finite(ys), name=label, customdata=extra,
            hovertemplate=f"{label}<br>%{{x}}: %{{y:.4g}}<br>%{{customdata}}<extra></extra>",
        ))
    fig.update_layout(title=plotly_title(title, note), barmode="group",
                      xaxis=_axis(x_title, type="category"),
                      yaxis=_axis(y_title, type="log" if log_y else "linear"),
                      showlegend=len(series) > 1)
    return fig


def pair_rotation_chart(points: Any, positions: Any, title: str = "",
                        note: str = "") -> go.Figure:
    """A rotary pair's 2-D point ``points [N, 2]`` at each position ``[N]``: the points lie on
    a circle (rotation keeps the length), coloured by position, joined in order."""
    xy, where = _array(points), _array(positions)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(where) != len(xy):
        raise ValueError(f"expected points [N, 2] and positions [N], got {xy.shape}, {where.shape}")
    radius = float(np.hypot(xy[:, 0], xy[:, 1]).max()) if len(xy) else 1.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), mode="lines",
                             line={"color": "lightgrey"}, hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(
        x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), mode="markers", showlegend=False,
        marker={"color": where.tolist(), "colorscale": "Viridis", "size": 7,
                "colorbar": {"title": {"text": "position"}}},
        customdata=where.tolist(),
        hovertemplate="position %{customdata}<br>(%{x:.3g}, %{y:.3g})<extra></extra>",
    ))
    span = 1.1 * (radius or 1.0)
    fig.update_layout(
        title=plotly_title(title, note),
        xaxis=_axis("first dimension of the pair", range=[-span, span], zeroline=True),
        yaxis=_axis("second dimension", range=[-span, span], scaleanchor="x", zeroline=True),
    )
    return fig


def pca_trajectory(coords: Any, positions: Any, explained: Any, title: str = "",
                   dims: int = 2) -> go.Figure:
    """Positions on their first 2 or 3 principal components ``coords [N, k]``, coloured by
    position and joined in order; axis titles give each component's share of the variance."""
    xyz, where, share = _array(coords), _array(positions), _array(explained)
    if xyz.ndim != 2 or xyz.shape[1] < dims or len(where) != len(xyz):
        raise ValueError(f"need coords [N, >= {dims}] and positions [N], got {xyz.shape}")
    names = [f"PC{i + 1} ({100 * share[i]:.1f}%)" for i in range(dims)]
    marker = {"color": where.tolist(), "colorscale": "Viridis", "size": 4 if dims == 3 else 6,
              "colorbar": {"title": {"text": "position"}}}
    line = {"color": "lightgrey", "width": 2}
    hover = "position %{customdata}<extra></extra>"
    if dims == 3:
        trace = go.Scatter3d(x=xyz[:, 0].tolist(), y=xyz[:, 1].tolist(), z=xyz[:, 2].tolist(),
                             mode="lines+markers", marker=marker, line=line,
                             customdata=where.tolist(), hovertemplate=hover)
        fig = go.Figure(trace)
        fig.update_layout(scene={"xaxis": _axis(names[0]), "yaxis": _axis(names[1]),
                                 "zaxis": _axis(names[2])})
    else:
        fig = go.Figure(go.Scatter(x=xyz[:, 0].tolist(), y=xyz[:, 1].tolist(),
                                   mode="lines+markers", marker=marker, line=line,
                                   customdata=where.tolist(), hovertemplate=hover))
        fig.update_layout(xaxis=_axis(names[0]), yaxis=_axis(names[1]))
    fig.update_layout(title=plotly_title(title), showlegend=False)
    return fig
