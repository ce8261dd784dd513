"""A page's figures as one self-contained HTML file: :func:`html_report`.

The file inlines plotly.js (the ``plotly.min.js`` shipped inside the ``plotly`` package), so it
opens with no network: its Content-Security-Policy forbids every fetch, and no script or
style comes from elsewhere. Plotly figures are drawn as they are in the app (same JSON,
the chart toolbar included: PNG download, zoom). Vega-Lite charts (the head maps and the
parameter bars) become plotly charts with the same data: this environment ships no
standalone vega bundle (Streamlit's is split into modules that import each other), and a
rect or bar mark maps one to one onto a plotly heatmap or bar chart.

Everything typed or tokenised is text: the header is ``html.escape``d and figure JSON has
``<``, ``>``, ``&`` and the JavaScript line separators written as ``\\uXXXX`` escapes, so no
label can close the ``<script>`` it sits in.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import plotly.io as pio

CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
       "style-src 'unsafe-inline'; img-src data: blob:; font-src data:")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}


@cache
def plotly_js() -> str:
    """The plotly.js bundle shipped in the ``plotly`` package (about 4.6 MB)."""
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside an inline ``<script>``: no ``</script>``, ``<!--`` or line breaks
    that JavaScript would read as the end of a string."""
    text = value if isinstance(value, str) else json.dumps(value, allow_nan=False, default=str)
    for raw, escaped in _JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def figure_json(figure: Any) -> str:
    """A plotly figure (object or dict) or a Vega-Lite spec (dict) as plotly JSON."""
    if isinstance(figure, Mapping) and ("mark" in figure or "layer" in figure):
        figure = vega_lite_to_plotly(figure)
    if isinstance(figure, Mapping):
        figure = go.Figure(figure)
    return pio.to_json(figure, validate=False, remove_uids=True)


def html_report(title: str, header: Mapping[str, Any], figures: Sequence[tuple[str, Any]],
                created: dt.datetime | None = None) -> str:
    """One HTML page: ``title``, a table of ``header`` (model, prompt, settings...) and every
    ``(caption, figure)``; nothing in it needs the network."""
    created = created or dt.datetime.now(dt.UTC)
    rows = "".join(
        f"<tr><th>{html.escape(str(name))}</th><td><pre>{html.escape(_text(value))}</pre>"
        "</td></tr>" for name, value in header.items())
    blocks, calls = [], []
    for index, (caption, figure) in enumerate(figures):
        blocks.append(f'<figure><div id="fig{index}" class="chart"></div>'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        calls.append(f'draw("fig{index}", {script_json(figure_json(figure))});')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2937; padding: 0 1rem; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; width: 100%; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: .3rem .6rem; text-align: left;
          vertical-align: top; }}
th {{ width: 14rem; font-weight: 600; }}
pre {{ margin: 0; white-space: pre-wrap; word-break: break-word; font: inherit; }}
figure {{ margin: 0 0 2.5rem 0; }}
figcaption {{ color: #6b7280; font-size: .9rem; }}
.chart {{ min-height: 420px; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Transformer Explorer report · {html.escape(created.strftime("%Y-%m-%d %H:%M UTC"))} ·
{len(blocks)} figure{"" if len(blocks) == 1 else "s"}</p>
<table>{rows}</table>
{"".join(blocks)}
<script>{plotly_js()}</script>
<script>
function draw(id, figure) {{
  Plotly.newPlot(id, figure.data || [], figure.layout || {{}},
                 {script_json(PLOTLY_CONFIG)});
}}
{chr(10).join(calls)}
</script>
</body></html>
"""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- Vega-Lite


def vega_lite_to_plotly(spec: Mapping[str, Any]) -> go.Figure:
    """A plotly figure with the data of a rect (heatmap) or bar Vega-Lite chart; any other
    mark becomes a table of its data (nothing is dropped silently)."""
    layers = spec.get("layer") or [spec]
    base = next((layer for layer in layers if _mark(layer) in ("rect", "bar")), layers[0])
    encoding = {**spec.get("encoding", {}), **base.get("encoding", {})}
    rows = _values(spec, base)
    x, y, colour = (encoding.get(c, {}).get("field") for c in ("x", "y", "color"))
    title = encoding.get("color", {}).get("title") or colour or ""
    mark = _mark(base)
    if mark == "rect" and x and y and colour:
        xs = sorted({r.get(x) for r in rows}, key=_order)
        ys = sorted({r.get(y) for r in rows}, key=_order)
        z = [[None] * len(xs) for _ in ys]
        for r in rows:
            value = r.get(colour)
            z[ys.index(r.get(y))][xs.index(r.get(x))] = value
        figure = go.Figure(go.Heatmap(z=z, x=[str(v) for v in xs], y=[str(v) for v in ys],
                                      colorscale="Viridis", colorbar={"title": str(title)},
                                      hovertemplate=f"{x} %{{x}} · {y} %{{y}}<br>"
                                                    "%{z:.3f}<extra></extra>"))
        figure.update_layout(xaxis_title=x, yaxis_title=y, yaxis_autorange="reversed")
    elif mark == "bar" and x and y:
        horizontal = encoding.get("x", {}).get("type") == "quantitative"
        values, names = ([r.get(x) for r in rows], [str(r.get(y)) for r in rows])
        figure = go.Figure(go.Bar(x=values if horizontal else names,
                                  y=names if horizontal else values,
                                  orientation="h" if horizontal else "v"))
        figure.update_layout(xaxis_title=x, yaxis_title=y,
                             yaxis_autorange="reversed" if horizontal else True)
    else:
        columns = list(rows[0]) if rows else []
        figure = go.Figure(go.Table(header={"values": columns},
                                    cells={"values": [[r.get(c) for r in rows]
                                                      for c in columns]}))
    figure.update_layout(title=str(spec.get("title", "") or ""), template="plotly_white",
                         height=max(320, 22 * len({str(r.get(y)) for r in rows}) + 120))
    return figure


def _mark(layer: Mapping[str, Any]) -> str:
    mark = layer.get("mark", "")
    return mark.get("type", "") if isinstance(mark, Mapping) else str(mark)


def _values(spec: Mapping[str, Any], layer: Mapping[str, Any]) -> list[dict]:
    data = layer.get("data") or spec.get("data") or {}
    if "values" in data:
        return list(data["values"])
    return list(spec.get("datasets", {}).get(data.get("name", ""), []))


def _order(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))
