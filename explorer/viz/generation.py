"""Figures of a generation: tokens coloured by probability, the probability/entropy timeline,
the top candidates of a step and where that step's query looked (Vig 2019's per-token
attention view, grown one row per generated token).

Pure builders: lists and arrays in, HTML strings or plotly figures out (no model, no
streamlit). Every piece of model or user text is escaped: ``html.escape`` for the token
stream (rendered by ``st.html``), `escape_for_plotly` for chart labels and hovers.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import plotly.graph_objects as go

from explorer.viz.tokens import display_token, escape_for_plotly

# Probability -> background: light red (unlikely) through light yellow to light blue (sure);
# a diverging scheme readable for red-green colour blindness (ColorBrewer RdYlBu tints).
_STOPS = ((0.0, (244, 165, 130)), (0.5, (255, 255, 191)), (1.0, (146, 197, 222)))
CHOSEN, OTHER = "#2b8cbe", "#bdbdbd"
MAX_CONTEXT_BARS = 512
MAX_MAP_COLUMNS = 256

STREAM_CSS = """<style>
.gen-stream{font-family:ui-monospace,monospace;font-size:0.95rem;line-height:1.9;
white-space:pre-wrap;word-break:break-word}
.gen-prompt{color:#777}
.gen-tok{border-radius:3px;padding:1px 0;cursor:help}
.gen-tok.gen-empty{color:#999;font-size:0.75rem}
.gen-tok.gen-selected{outline:2px solid #08519c}
.gen-cut{color:#b35806;font-style:italic}
</style>"""


def probability_colour(prob: float) -> str:
    """CSS rgb() background for a probability in [0, 1] (clipped)."""
    p = min(max(float(prob), 0.0), 1.0)
    for (x0, c0), (x1, c1) in pairwise(_STOPS):
        if p <= x1:
            t = (p - x0) / (x1 - x0)
            rgb = [round(a + (b - a) * t) for a, b in zip(c0, c1, strict=True)]
            return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"
    return "rgb(146,197,222)"


def alternatives_text(
    labels: Sequence[str], probs: Sequence[float], chosen: str, entropy: float, n: int = 5
) -> str:
    """Plain-text hover for one token: its probability, the entropy, the top alternatives."""
    lines = [f"chosen {display_token(chosen)!s}", f"entropy {entropy:.2f} nats"]
    lines += [f"{p:6.1%}  {display_token(label)}" for label, p in zip(labels[:n], probs[:n],
                                                                         strict=False)]
    return "\n".join(lines)


def token_stream_html(
    texts: Sequence[str],
    probs: Sequence[float],
    hovers: Sequence[str],
    tokens: Sequence[str] | None = None,
    prompt: str = "",
    selected: int | None = None,
    cut_notice: str = "",
) -> str:
    """The prompt (grey) then each generated piece on a background coloured by its
    probability, with ``hovers`` as tooltips. A step whose text is empty (part of a
    multi-byte character, an end token) shows its token label small and grey."""
    parts = [STREAM_CSS, '<div class="gen-stream">']
    if cut_notice:
        parts.append(f'<span class="gen-cut">{html.escape(cut_notice)}</span> ')
    if prompt:
        parts.append(f'<span class="gen-prompt">{html.escape(prompt)}</span>')
    for i, (text, prob, hover) in enumerate(zip(texts, probs, hovers, strict=True)):
        classes = ["gen-tok"]
        shown = text
        if not text:
            classes.append("gen-empty")
            shown = display_token(tokens[i]) if tokens is not None else "·"
        if i == selected:
            classes.append("gen-selected")
        parts.append(
            f'<span class="{" ".join(classes)}" style="background:{probability_colour(prob)}"'
            f' title="{html.escape(f"step {i}: p = {prob:.1%}" + chr(10) + hover)}">'
            f"{html.escape(shown)}</span>"
        )
    parts.append("</div>")
    return "".join(parts)


# A clicked point picks a step (the page draws its own marker); the others stay undimmed.
KEEP_UNSELECTED = {"marker": {"opacity": 1.0}}


def timeline_figure(
    probs: Sequence[float], entropies: Sequence[float], selected: int | None = None
) -> go.Figure:
    """Chosen-token probability (left axis) and entropy in nats (right axis) per step."""
    steps = list(range(len(probs)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=steps, y=list(probs), name="p(chosen)", mode="lines+markers",
        line={"color": CHOSEN}, hovertemplate="step %{x}<br>p = %{y:.3f}<extra></extra>",
        unselected=KEEP_UNSELECTED,
    ))
    fig.add_trace(go.Scatter(
        x=steps, y=list(entropies), name="entropy (nats)", mode="lines+markers", yaxis="y2",
        line={"color": "#e6550d", "dash": "dot"},
        hovertemplate="step %{x}<br>entropy = %{y:.2f} nats<extra></extra>",
        unselected=KEEP_UNSELECTED,
    ))
    if selected is not None and 0 <= selected < len(steps):
        fig.add_vline(x=selected, line={"color": "#08519c", "width": 2, "dash": "dash"})
    fig.update_layout(
        height=260, margin={"l": 50, "r": 50, "t": 30, "b": 40},
        xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": "p(chosen)"}, "range": [0, 1.02]},
        yaxis2={"title": {"text": "entropy (nats)"}, "overlaying": "y", "side": "right",
                "rangemode": "tozero"},
        legend={"orientation": "h", "y": 1.15}, hovermode="x unified",
    )
    return fig


def candidates_figure(labels: Sequence[str], probs: Sequence[float], chosen: int) -> go.Figure:
    """Horizontal bars of a step's top candidates (most likely on top), the chosen one
    highlighted. ``chosen`` indexes ``labels`` (-1 when the chosen token is not among them)."""
    shown = [f"{i + 1}. {display_token(label)}" for i, label in enumerate(labels)]
    fig = go.Figure(go.Bar(
        x=list(probs), y=[escape_for_plotly(s) for s in shown], orientation="h",
        marker={"color": [CHOSEN if i == chosen else OTHER for i in range(len(labels))]},
        text=[f"{p:.1%}" for p in probs], textposition="auto",
        hovertemplate="%{y}<br>p = %{x:.4f}<extra></extra>",
    ))
    fig.update_layout(
        height=max(200, 28 * len(labels) + 60), margin={"l": 10, "r": 10, "t": 30, "b": 30},
        yaxis={"autorange": "reversed"}, xaxis={"title": {"text": "probability"}},
        title={"text": "Top candidates"},
    )
    return fig


def _window(n: int, limit: int) -> int:
    """First position kept when only the last ``limit`` of ``n`` positions are drawn."""
    return max(0, n - limit)


def context_attention_figure(
    labels: Sequence[str], weights: np.ndarray, title: str, limit: int = MAX_CONTEXT_BARS
) -> go.Figure:
    """Bars of one query's attention over the context positions (the last ``limit``)."""
    start = _window(len(weights), limit)
    names = [escape_for_plotly(f"{i}: {display_token(labels[i])}")
             for i in range(start, len(weights))]
    note = f" (last {len(weights) - start} of {len(weights)} positions)" if start else ""
    fig = go.Figure(go.Bar(
        x=names, y=np.round(np.asarray(weights[start:], dtype=np.float64), 5),
        marker={"color": CHOSEN}, hovertemplate="%{x}<br>weight %{y:.4f}<extra></extra>",
    ))
    fig.update_layout(
        height=300, margin={"l": 50, "r": 10, "t": 40, "b": 90},
        title={"text": escape_for_plotly(title + note)},
        xaxis={"tickangle": -60, "type": "category"}, yaxis={"title": {"text": "weight"}},
    )
    return fig


def growing_attention_figure(
    rows: Sequence[np.ndarray],
    labels: Sequence[str],
    n_prompt: int,
    selected: int | None = None,
    limit: int = MAX_MAP_COLUMNS,
    title: str = "Attention of each generated step over its context",
) -> go.Figure:
    """Heatmap: row i is generation step i's attention over positions 0..n_prompt+i-1 (the
    map grows one row and one column per token; for an encoder-decoder's cross-attention
    every row spans the n_prompt input positions); the last ``limit`` positions are drawn."""
    width = max(len(r) for r in rows)
    start = _window(width, limit)
    z = np.full((len(rows), width - start), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        z[i, : len(row) - start] = row[start:]
    x = [escape_for_plotly(f"{i}: {display_token(labels[i])}") for i in range(start, width)]
    y = [escape_for_plotly(f"step {i}: {display_token(labels[n_prompt + i])}")
         if n_prompt + i < len(labels) else f"step {i}" for i in range(len(rows))]
    fig = go.Figure(go.Heatmap(
        z=np.round(z, 4), x=x, y=y, colorscale="Blues", zmin=0, zmax=float(np.nanmax(z) or 1),
        hovertemplate="%{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>",
        colorbar={"title": {"text": "weight"}},
    ))
    if selected is not None and 0 <= selected < len(rows):
        fig.add_hline(y=selected, line={"color": "#e6550d", "width": 1})
    note = f" (last {width - start} of {width} positions)" if start else ""
    fig.update_layout(
        height=max(260, 16 * len(rows) + 120), margin={"l": 10, "r": 10, "t": 40, "b": 90},
        title={"text": escape_for_plotly(title) + note},
        xaxis={"tickangle": -60, "type": "category"},
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return fig
