"""The numbers a chart shows, as a tidy table: :func:`figure_frame`.

One row per heatmap cell (its row and column labels, its value) or per plotted point (its
series, x and y), read from the plotly figure itself, so every chart can hand over exactly
what it draws (pooled or windowed heatmaps included) without a second code path. Labels
come back as text: the HTML escapes the figure builders added for the browser
(``&lt;``, ``&#36;``) are undone, and the tags plotly reads (``<br>``, ``<b>``) removed.
Vega-Lite charts give their own data rows (:func:`vega_frame`).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

_TAGS = re.compile(r"<\s*/?\s*(br|b|i|sub|sup|span)\b[^>]*>", re.IGNORECASE)


def label_text(value: Any) -> Any:
    """A figure label as plain text (escapes undone, plotly's formatting tags removed)."""
    if not isinstance(value, str):
        return value
    return html.unescape(_TAGS.sub(" ", value)).strip()


def plotly_array(value: Any) -> np.ndarray:
    """An array of a figure's JSON: a list, an ndarray, or plotly's typed-array encoding
    (``{"dtype": "f4", "bdata": <base64>, "shape": "2, 3"}``)."""
    if isinstance(value, Mapping) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(n) for n in shape.split(",")]
        return flat.reshape(shape) if shape else flat
    return np.asarray(value, dtype=object if not _numeric(value) else float)


def _numeric(value: Any) -> bool:
    try:
        np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def _axis_title(layout: Any, axis: str, fallback: str) -> str:
    try:
        text = layout[axis]["title"]["text"]
    except (KeyError, TypeError):
        text = None
    return label_text(text) if text else fallback


def figure_frame(figure: Any) -> pd.DataFrame:
    """Tidy rows of every trace of a plotly figure (object or dict).

    Heatmaps: ``series, <y axis>, <x axis>, value`` with one row per cell; lines, markers
    and bars: ``series, <x axis>, <y axis>`` with one row per point. Axis columns are named
    by the axis titles (``x``/``y`` when untitled).
    """
    data = figure.to_plotly_json() if hasattr(figure, "to_plotly_json") else dict(figure)
    layout = data.get("layout", {}) or {}
    frames = []
    for index, trace in enumerate(data.get("data", [])):
        trace = trace if isinstance(trace, Mapping) else trace.to_plotly_json()
        name = label_text(trace.get("name")) or f"trace {index}"
        suffix = "" if index == 0 else str(index + 1)
        x_name = _axis_title(layout, f"xaxis{suffix}", "x")
        y_name = _axis_title(layout, f"yaxis{suffix}", "y")
        if y_name == x_name:
            x_name, y_name = f"{x_name} (x)", f"{y_name} (y)"
        kind = trace.get("type", "scatter")
        if kind == "heatmap" and trace.get("z") is not None:
            z = plotly_array(trace["z"]).astype(float)
            if z.ndim != 2:
                continue
            raw = trace.get("customdata")  # the true values when z is a colour transform
            if raw is not None and _numeric(plotly_array(raw)):
                raw = plotly_array(raw).astype(float)
                z = raw if raw.shape == z.shape else z
            xs = list(plotly_array(trace["x"]) if trace.get("x") is not None
                      else range(z.shape[1]))
            ys = list(plotly_array(trace["y"]) if trace.get("y") is not None
                      else range(z.shape[0]))
            rows, cols = np.meshgrid(np.arange(z.shape[0]), np.arange(z.shape[1]),
                                     indexing="ij")
            frames.append(pd.DataFrame({
                "series": name,
                y_name: [label_text(ys[r]) for r in rows.ravel()],
                x_name: [label_text(xs[c]) for c in cols.ravel()],
                "value": z.ravel()}))
        elif kind in ("scatter", "scattergl", "bar") and trace.get("y") is not None:
            ys = list(plotly_array(trace["y"]).ravel())
            xs = list(plotly_array(trace["x"]).ravel() if trace.get("x") is not None
                      else range(len(ys)))
            frames.append(pd.DataFrame({
                "series": name, x_name: [label_text(v) for v in xs],
                y_name: [label_text(v) for v in ys]}))
    if not frames:
        return pd.DataFrame({"series": []})
    return pd.concat(frames, ignore_index=True)


def vega_frame(spec: Mapping[str, Any]) -> pd.DataFrame:
    """The data rows of a Vega-Lite spec (inline ``values`` or its named ``datasets``)."""
    rows: list[dict] = []
    for layer in [spec, *spec.get("layer", [])]:
        data = layer.get("data") or {}
        if "values" in data:
            rows = list(data["values"])
        elif data.get("name") in spec.get("datasets", {}):
            rows = list(spec["datasets"][data["name"]])
        if rows:
            break
    frame = pd.DataFrame.from_records(rows)
    return frame.drop(columns=[c for c in ("selected",) if c in frame.columns])
