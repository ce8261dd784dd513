"""The information flow graph (`explorer.analysis.flow`) as a plotly figure: positions
across, layers up; each block is two rows of nodes (its input, and after its attention),
attention edges run from the token read to the token reading, the MLP's writes are orange,
the residual's grey; line width and opacity follow the importance. Every token string is
escaped (`explorer.viz.tokens`)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from explorer.analysis.flow import Edge
from explorer.viz.tokens import escape_for_plotly, plotly_title

COLOURS = {"attn": "#2b6cb0", "resid": "#a0aec0", "mlp_resid": "#a0aec0", "mlp": "#dd6b20"}
KIND_LABELS = {"attn": "attention (token read → token reading)", "resid": "residual",
               "mlp_resid": "residual", "mlp": "MLP write"}
BINS = ((0.3, 5.0, 0.95), (0.1, 3.0, 0.8), (0.0, 1.5, 0.6))  # (from, width, opacity)
MLP_SHIFT = 0.18  # the MLP's edge sits beside the residual's between the same two nodes


def _ends(edge: Edge) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x, y) of an edge's two ends: block l's input is at y = l, after attention l + 0.5."""
    if edge.kind in ("attn", "resid"):
        return (edge.source, edge.layer), (edge.target, edge.layer + 0.5)
    shift = MLP_SHIFT if edge.kind == "mlp" else 0.0
    return (edge.source + shift, edge.layer + 0.5), (edge.target + shift, edge.layer + 1)


def flow_figure(edges: Sequence[Edge], labels: Sequence[str], n_layers: int, position: int,
                threshold: float) -> go.Figure:
    """The graph of ``edges`` over ``labels`` (one per position) and ``n_layers`` blocks,
    explaining the final residual at ``position``."""
    fig = go.Figure()
    segments: dict[tuple[str, int], tuple[list, list]] = {}  # (kind, bin): xs, ys
    for edge in edges:
        band = next(i for i, (low, _, _) in enumerate(BINS) if edge.importance >= low)
        xs, ys = segments.setdefault((edge.kind, band), ([], []))
        (x0, y0), (x1, y1) = _ends(edge)
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    shown = set()
    for kind in ("resid", "mlp_resid", "mlp", "attn"):  # attention drawn on top
        for band, (_, width, opacity) in enumerate(BINS):
            if (kind, band) not in segments:
                continue
            xs, ys = segments[kind, band]
            name = KIND_LABELS[kind]
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="lines", hoverinfo="skip", opacity=opacity,
                line={"color": COLOURS[kind], "width": width}, name=name, legendgroup=name,
                showlegend=name not in shown))
            shown.add(name)
    escaped = [escape_for_plotly(label) for label in labels]
    hover_x, hover_y, hover_text = [], [], []
    for edge in edges:  # one invisible point per edge, at its middle, carries its hover
        (x0, y0), (x1, y1) = _ends(edge)
        hover_x.append((x0 + x1) / 2)
        hover_y.append((y0 + y1) / 2)
        what = {"attn": f"{escaped[edge.target]} reads {escaped[edge.source]}",
                "resid": f"{escaped[edge.target]}: residual through attention",
                "mlp_resid": f"{escaped[edge.target]}: residual through the MLP",
                "mlp": f"{escaped[edge.target]}: the MLP's write"}[edge.kind]
        hover_text.append(f"L{edge.layer} · {what}<br>importance {edge.importance:.3f}")
    fig.add_trace(go.Scatter(x=hover_x, y=hover_y, mode="markers", text=hover_text,
                             hovertemplate="%{text}<extra></extra>", showlegend=False,
                             marker={"size": 8, "opacity": 0}))
    nodes = {_ends(edge)[end] for edge in edges for end in (0, 1)
             if edge.kind != "mlp" or end == 1}
    nodes.add((position, n_layers))
    fig.add_trace(go.Scatter(x=[x for x, _ in nodes], y=[y for _, y in nodes], mode="markers",
                             hoverinfo="skip", showlegend=False,
                             marker={"size": 5, "color": "#2d3748"}))
    used = sorted({round(x) for x, _ in nodes})
    fig.update_layout(
        title=plotly_title(f"Information flow into {labels[position]} (position {position})",
                           f"edges of importance ≥ {threshold:g}; each node's incoming "
                           "edges are shares of what it holds"),
        height=max(420, 34 * n_layers + 160), hovermode="closest",
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        legend={"orientation": "h", "y": -0.08},
        xaxis={"tickmode": "array", "tickvals": used, "ticktext": [escaped[i] for i in used],
               "tickangle": -45, "title": {"text": "position"},
               "range": [min(used) - 0.6, max(used) + 0.6]},
        yaxis={"tickmode": "array", "tickvals": list(range(n_layers + 1)),
               "ticktext": [f"L{layer}" for layer in range(n_layers)] + ["output"],
               "title": {"text": "block input"}, "range": [-0.5, n_layers + 0.4]})
    return fig
