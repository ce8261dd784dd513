"""Pure figure builders for images read by a Vision Transformer: numbers in, plotly out.

- :func:`attention_overlay`: weights over the patch grid drawn on the image the model saw,
  the grid's lines on top (Dosovitskiy et al. 2021, Fig. 6; Abnar & Zuidema 2020 for
  rollout maps). Clicking a cell selects that patch in Streamlit (``on_select="rerun"``).
- :func:`probability_bars`: top classes of a ViT, or CLIP's captions against an image.
- :func:`class_lens_chart`: the class token's logit lens (nostalgebraist 2020) per layer.
- :func:`patch_pca_chart`: the patches' residuals on two principal axes, coloured by their
  row and by their column in the image.

The image goes to the browser as a PNG data URI (a 224 x 224 image is ~100 kB, where its
pixels as JSON numbers would be ~1 MB). Labels are escaped for plotly here, so a caption
such as ``<img src=x onerror=alert(1)>`` is drawn as text. Shapes: gh x gw patch grid,
H x W pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from explorer.viz.heatmap_cells import as_array
from explorer.viz.tokens import escape_for_plotly, plotly_title

OVERLAY_COLOURS = "Inferno"


def png_data_uri(image: Any) -> str:
    """A PIL image or uint8 array [H, W, 3] as a ``data:image/png;base64,...`` URI."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def attention_overlay(
    image: Any,
    weights: Any,
    title: str = "",
    note: str = "",
    query: tuple[int, int] | None = None,
    opacity: float = 0.6,
    show_grid: bool = True,
) -> go.Figure:
    """Weights [gh, gw] over ``image`` (PIL image or uint8 [H, W, 3]), one cell per patch.

    Colours are scaled to the largest weight shown (the range is in the colour bar); hover
    gives each patch's row, column and raw weight. ``query`` (row, col) outlines the patch
    whose attention is drawn. Cells carry ``customdata`` [row, col] for click selection.
    """
    values = as_array(weights)
    if values.ndim != 2:
        raise ValueError(f"expected weights [gh, gw], got shape {values.shape}")
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    width, height = image.size
    gh, gw = values.shape
    ph, pw = height / gh, width / gw
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    # plotly centres pixel i on i: x0 = y0 = 0.5 puts the image on [0, width] x [0, height]
    fig = go.Figure(go.Image(source=png_data_uri(image), x0=0.5, y0=0.5, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=values, x=(np.arange(gw) + 0.5) * pw, y=(np.arange(gh) + 0.5) * ph,
        customdata=np.stack([rows, cols], axis=-1), opacity=opacity,
        colorscale=OVERLAY_COLOURS, zmin=0.0, zmax=float(np.nanmax(values)) or 1.0,
        colorbar={"title": {"text": "weight"}},
        hovertemplate="patch row %{customdata[0]}, col %{customdata[1]}<br>"
                      "weight %{z:.4f}<extra></extra>",
    ))
    shapes = []
    if show_grid:
        line = {"color": "rgba(255,255,255,0.45)", "width": 1}
        shapes += [{"type": "line", "x0": c * pw, "x1": c * pw, "y0": 0, "y1": height,
                    "line": line} for c in range(1, gw)]
        shapes += [{"type": "line", "x0": 0, "x1": width, "y0": r * ph, "y1": r * ph,
                    "line": line} for r in range(1, gh)]
    if query is not None:
        r, c = query
        shapes.append({"type": "rect", "x0": c * pw, "x1": (c + 1) * pw, "y0": r * ph,
                       "y1": (r + 1) * ph, "line": {"color": "#00e5ff", "width": 3}})
    fig.update_layout(
        title=plotly_title(title, note), shapes=shapes,
        xaxis={"visible": False, "range": [0, width], "constrain": "domain"},
        yaxis={"visible": False, "range": [height, 0], "scaleanchor": "x"},
        margin={"l": 10, "r": 10, "t": 70, "b": 10}, clickmode="event+select",
    )
    return fig


def probability_bars(labels: Sequence[str], probs: Any, title: str = "",
                     note: str = "", value_name: str = "probability") -> go.Figure:
    """Horizontal bars of ``probs`` [k] with escaped ``labels``, the first at the top."""
    values = as_array(probs).reshape(-1)
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values")
    shown = [escape_for_plotly(label) for label in labels]
    fig = go.Figure(go.Bar(
        x=values, y=list(range(len(values))), orientation="h",
        text=[f"{v:.1%}" if value_name == "probability" else f"{v:.3g}" for v in values],
        textposition="auto", customdata=shown,
        hovertemplate="%{customdata}<br>" + value_name + " %{x:.4f}<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_title(title, note),
        yaxis={"tickvals": list(range(len(values))), "ticktext": shown,
               "autorange": "reversed"},
        xaxis={"title": {"text": value_name}},
        height=120 + 38 * len(values), margin={"l": 10, "r": 10, "t": 70, "b": 40},
    )
    return fig


def class_lens_chart(probs: Any, top_labels: Sequence[str], target: str,
                     title: str = "") -> go.Figure:
    """The final prediction's probability after each layer [L] (line), with each layer's
    own top class in the hover: the class token read through the final norm and the
    classifier after every block."""
    values = as_array(probs).reshape(-1)
    layers = list(range(len(values)))
    shown = [escape_for_plotly(label) for label in top_labels]
    fig = go.Figure(go.Scatter(
        x=layers, y=values, mode="lines+markers", customdata=shown,
        hovertemplate="after block %{x}<br>p(" + escape_for_plotly(target)
                      + ") = %{y:.3f}<br>top class here: %{customdata}<extra></extra>",
    ))
    fig.update_layout(
        title=plotly_title(title, f"Probability of the final top class, {target}"),
        xaxis={"title": {"text": "after block"}, "dtick": 1},
        yaxis={"title": {"text": "probability"}, "range": [0, 1]},
        height=320, margin={"l": 10, "r": 10, "t": 80, "b": 40},
    )
    return fig


def patch_pca_chart(coords: Any, grid: tuple[int, int], explained: Any,
                    title: str = "") -> go.Figure:
    """Patches on two principal axes (coords [P, 2], row by row), twice: coloured by their
    row (left) and by their column (right) in the image."""
    points = as_array(coords)
    share = as_array(explained).reshape(-1)
    gh, gw = grid
    if points.shape != (gh * gw, 2):
        raise ValueError(f"expected coords [{gh * gw}, 2], got {points.shape}")
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("coloured by row", "coloured by column"),
                        horizontal_spacing=0.2)
    for i, (colour, name, span) in enumerate(((rows, "row", gh), (cols, "column", gw))):
        fig.add_trace(go.Scatter(
            x=points[:, 0], y=points[:, 1], mode="markers",
            marker={"color": colour, "colorscale": "Viridis", "cmin": 0,
                    "cmax": max(span - 1, 1), "size": 7,
                    "colorbar": {"title": {"text": name}, "x": 0.41 if i == 0 else 1.01,
                                 "len": 0.9, "thickness": 12}},
            customdata=np.stack([rows, cols], axis=-1), showlegend=False,
            hovertemplate="patch row %{customdata[0]}, col %{customdata[1]}<extra></extra>",
        ), row=1, col=i + 1)
    axes = f"PC1 {share[0]:.0%} and PC2 {share[1]:.0%} of the variance"
    fig.update_layout(title=plotly_title(title, axes), height=400,
                      margin={"l": 10, "r": 10, "t": 115, "b": 30})
    return fig
