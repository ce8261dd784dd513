"""Pure figure builders for the lab pages: small labelled tensors, masks side by side, and the
residual paths of pre- and post-norm blocks.

- :func:`tensor_heatmap`: a small matrix with its row and column labels (tokens, dimensions,
  experts) and, when it is small enough, every value written in its cell; ``-inf`` (a masked
  score) shows as a blank cell marked "−∞".
- :func:`mask_grid`: boolean masks side by side, one panel each: which query sees which key.
- :func:`residual_path_dot`: Graphviz source of one block's residual path, pre- or post-norm.

Line and bar charts come from `explorer.viz.positional` (`line_chart`, `bar_chart`). Every
label may hold user text: all of it is escaped with
:func:`explorer.viz.tokens.escape_for_plotly`. Inputs are numpy arrays or torch tensors
(duck typed; no torch import). Shapes: R rows, C columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.viz.tokens import escape_for_plotly, plotly_title

MAX_TEXT_CELLS = 400  # write values in the cells up to this many cells
CELL_PX = 34
SEES, HIDDEN = "#2563eb", "#f1f5f9"


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _labels(labels: Sequence[str] | None, n: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows or columns")
    return [escape_for_plotly(label) for label in labels]


def _cell_text(values: np.ndarray, digits: int) -> np.ndarray:
    text = np.empty(values.shape, dtype=object)
    for index, value in np.ndenumerate(values):
        if np.isneginf(value):
            text[index] = "−∞"
        elif np.isnan(value):
            text[index] = ""
        else:
            text[index] = f"{value:.{digits}f}"
    return text


def tensor_heatmap(
    matrix: Any,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    note: str = "",
    row_title: str = "",
    col_title: str = "",
    diverging: bool = True,
    digits: int | None = 2,
    height: int | None = None,
) -> go.Figure:
    """A small matrix [R, C] with labelled rows (top to bottom) and columns.

    ``diverging`` centres a red-blue scale on 0 (scores, q/k/v entries); otherwise the scale
    is a light-to-dark blue from 0 (weights in [0, 1]). -inf and NaN cells stay blank.
    ``digits``: decimals of the values written in the cells (None: none written; they are
    never written in more than `MAX_TEXT_CELLS` cells).
    """
    values = _array(matrix)
    if values.ndim != 2:
        raise ValueError(f"expected a matrix [R, C], got shape {values.shape}")
    n_rows, n_cols = values.shape
    rows, cols = _labels(row_labels, n_rows), _labels(col_labels, n_cols)
    finite = values[np.isfinite(values)]
    shown = np.where(np.isfinite(values), values, np.nan)
    trace: dict[str, Any] = {
        "z": shown.astype(np.float32), "x": cols, "y": rows, "xgap": 1, "ygap": 1,
        "hovertemplate": (f"{escape_for_plotly(row_title)} %{{y}}<br>"
                          f"{escape_for_plotly(col_title)} %{{x}}<br>%{{z:.4g}}<extra></extra>"),
    }
    if digits is not None and values.size <= MAX_TEXT_CELLS:
        trace.update(text=_cell_text(values, digits), texttemplate="%{text}",
                     textfont={"size": 11})
    if diverging:
        limit = float(np.abs(finite).max()) if finite.size else 1.0
        trace.update(colorscale="RdBu_r", zmid=0.0, zmin=-(limit or 1.0), zmax=limit or 1.0)
    else:
        top = float(finite.max()) if finite.size else 1.0
        trace.update(colorscale="Blues", zmin=0.0, zmax=max(top, 1e-9))
    fig = go.Figure(go.Heatmap(**trace))
    fig.update_layout(
        title=plotly_title(title, note),
        xaxis={"title": {"text": escape_for_plotly(col_title)}, "type": "category",
               "side": "bottom"},
        yaxis={"title": {"text": escape_for_plotly(row_title)}, "type": "category",
               "autorange": "reversed"},
        height=height or max(260, 150 + CELL_PX * n_rows),
        margin={"t": 80 if note else 60},
    )
    return fig


def mask_grid(masks: Mapping[str, Any], labels: Sequence[str], title: str = "") -> go.Figure:
    """Boolean masks [n, n] side by side: a blue cell where the query (row) sees the key
    (column), light grey where it is hidden; hover says which."""
    n = len(labels)
    names = list(masks)
    escaped = _labels(labels, n)
    fig = make_subplots(rows=1, cols=len(names), horizontal_spacing=0.06,
                        subplot_titles=[escape_for_plotly(name) for name in names])
    for i, name in enumerate(names):
        allowed = _array(masks[name])
        if allowed.shape != (n, n):
            raise ValueError(f"mask {name!r} has shape {allowed.shape}, expected ({n}, {n})")
        words = np.where(allowed > 0, "sees", "does not see")
        fig.add_trace(go.Heatmap(
            z=allowed.astype(np.float32), x=escaped, y=escaped, xgap=2, ygap=2,
            colorscale=[[0, HIDDEN], [1, SEES]], zmin=0, zmax=1, showscale=False,
            customdata=words,
            hovertemplate="query %{y}<br>%{customdata} key %{x}<extra></extra>",
        ), row=1, col=i + 1)
    fig.update_xaxes(type="category", tickangle=-45, title={"text": "key"})
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_yaxes(title={"text": "query"}, col=1)
    fig.update_layout(title=plotly_title(title), height=max(320, 170 + 30 * n))
    return fig


_NODE = ('node [shape=box, style="rounded,filled", fillcolor="#eef2ff", fontname="Helvetica", '
         'fontsize=11, height=0.3]')


def residual_path_dot(norm_position: str, norm: str = "LayerNorm") -> str:
    """Graphviz source of one block's two residual sub-layers, pre- or post-norm.

    Pre-norm (GPT-2, Llama): x + Attn(Norm(x)), then + MLP(Norm(·)): the input reaches the
    output along an unbroken identity path. Post-norm (original Transformer, BERT):
    Norm(x + Attn(x)), then Norm(· + MLP(·)): every path passes through the norms.
    """
    if norm_position not in ("pre", "post"):
        raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
    norm = escape_for_plotly(norm).replace('"', "")
    lines = ["digraph {", "rankdir=LR; bgcolor=transparent; nodesep=0.3; ranksep=0.35;",
             _NODE, 'edge [fontname="Helvetica", fontsize=10];',
             'x [label="x", fillcolor="#e2e8f0"];',
             f'out [label="{"x + attention + MLP" if norm_position == "pre" else "output"}",'
             ' fillcolor="#e2e8f0"];',
             'add1 [label="+", shape=circle, fillcolor="#fde68a", width=0.3];',
             'add2 [label="+", shape=circle, fillcolor="#fde68a", width=0.3];',
             'attn [label="attention"]; mlp [label="MLP"];']
    if norm_position == "pre":
        lines += [f'n1 [label="{norm}", fillcolor="#dcfce7"];',
                  f'n2 [label="{norm}", fillcolor="#dcfce7"];',
                  "x -> n1 -> attn -> add1;",
                  'x -> add1 [label=" identity", color="#dc2626", penwidth=2];',
                  "add1 -> n2 -> mlp -> add2;",
                  'add1 -> add2 [label=" identity", color="#dc2626", penwidth=2];',
                  'add2 -> out [color="#dc2626", penwidth=2];']
    else:
        lines += [f'n1 [label="{norm}", fillcolor="#dcfce7"];',
                  f'n2 [label="{norm}", fillcolor="#dcfce7"];',
                  "x -> attn -> add1;", 'x -> add1 [label=" skip"];',
                  "add1 -> n1 -> mlp -> add2;", 'n1 -> add2 [label=" skip"];',
                  "add2 -> n2 -> out;"]
    lines.append("}")
    return "\n".join(lines)
