"""Share and export on every page: charts that leave the app, the page's report, the run.

- :func:`show_chart` / :func:`show_vega` draw a chart (plotly / Vega-Lite) with a toolbar
  image download at a readable size (:func:`chart_config`), a CSV of its numbers
  (:func:`explorer.export.tables.figure_frame`; off where the page has a dedicated CSV)
  and remember it for the page's report.
- :func:`share_panel` (in the sidebar) offers this page as one self-contained HTML report
  (:func:`explorer.export.html_report`) and the run as an NPZ file
  (:func:`explorer.export.save_run`), with their sizes; both are built only when clicked
  (``st.download_button`` with a callable), so nothing blocks the page. It also opens a
  saved run without its model (:mod:`explorer.ui.saved_run_view`).

A page calls :func:`begin_page` first: every full run of a page starts an empty collection
(all its fragments run too and draw their charts again), and a fragment's rerun replaces
the charts it draws. Charts that take each other's place in a fragment (the Attention
page's aggregate or rollout) share a ``slot``, so the report holds the one on screen. The
figures, the view's settings and its link are kept in ``st.session_state[REPORT]``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from explorer.export import generation_arrays, html_report, run_arrays, save_run
from explorer.export.report import plotly_js
from explorer.export.saved_run import run_nbytes
from explorer.export.tables import figure_frame, label_text, vega_frame
from explorer.ui.downloads import csv_button
from explorer.ui.saved_run_view import upload_box
from explorer.ui.url_state import view_settings

log = logging.getLogger(__name__)

REPORT = "report_figures"  # {"page", "figures": {key: (caption, figure)}, "settings", "link"}
LARGE_BYTES = 5 * 2**20  # sizes above this are stated next to the button
IMAGE_SCALE = 3  # toolbar PNGs at 3x the size on screen (a 700 px chart -> 2,100 px)


def chart_config(name: str) -> dict[str, Any]:
    """Plotly's config: the toolbar's camera saves a PNG named after the chart, at
    :data:`IMAGE_SCALE` times its size on screen."""
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": _file_name(name),
                                     "scale": IMAGE_SCALE}}


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_")[:80] or "chart"


def begin_page(title: str) -> None:
    """Collect the figures of this run of the page for its report."""
    st.session_state[REPORT] = {"page": title, "figures": {}, "settings": {}, "link": ""}


def remember(key: str, caption: str, figure: Any) -> None:
    """Keep ``figure`` (by reference: figures are only read) for the report, with the
    view's current settings and link."""
    store = st.session_state.get(REPORT)
    if store is None:
        return
    store["figures"][key] = (caption, figure)
    store["settings"] = view_settings()
    try:
        query = urlencode(st.query_params.to_dict())
        store["link"] = f"{st.context.url}?{query}" if query else st.context.url
    except Exception:  # AppTest has no browser URL
        store["link"] = ""


def _title(figure: Any) -> str:
    try:
        text = figure.layout.title.text if hasattr(figure, "layout") else (
            figure.get("title") or "")
    except AttributeError:
        text = ""
    if isinstance(text, dict):
        text = text.get("text", "")
    return str(label_text(text or ""))


def show_chart(figure: Any, *, key: str, csv: bool = True, slot: str | None = None,
               **kwargs: Any) -> Any:
    """``st.plotly_chart`` with a readable toolbar PNG, kept for the report (under ``slot``,
    default ``key``); ``csv`` adds a download of the numbers it draws (built on click)."""
    remember(slot or key, _title(figure), figure)
    result = st.plotly_chart(figure, key=key, config=chart_config(key), **kwargs)
    if csv:
        csv_button("CSV", lambda: figure_frame(figure), f"{_file_name(key)}.csv",
                   f"{key}_csv")
    return result


def show_in(container: Any, vega: bool = False) -> Callable[..., Any]:
    """:func:`show_chart` (or :func:`show_vega`) drawn inside ``container`` (a column, a
    tab), its CSV button with it: ``show_in(left)(figure, key=...)``."""
    show = show_vega if vega else show_chart

    def draw(figure: Any, **kwargs: Any) -> Any:
        with container:
            return show(figure, **kwargs)

    return draw


def show_vega(chart: Any, *, key: str, csv: bool = True, **kwargs: Any) -> Any:
    """``st.vega_lite_chart`` of a spec dict or an Altair chart (its menu saves SVG/PNG),
    kept for the report; ``csv`` adds a download of its data rows."""
    spec = chart if isinstance(chart, dict) else chart.to_dict()
    remember(key, str(label_text(spec.get("title", "") or "")), spec)
    result = st.vega_lite_chart(spec, key=key, **kwargs)
    if csv:
        csv_button("CSV", lambda: vega_frame(spec), f"{_file_name(key)}.csv", f"{key}_csv")
    return result


# --------------------------------------------------------------------------- downloads


def size_text(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.1f} MB" if n_bytes >= 2**20 else f"{n_bytes / 1024:,.0f} kB"


def report_bytes(extra: dict[str, Any] | None = None) -> bytes:
    """The page's report (HTML) from what :func:`remember` kept."""
    store = st.session_state[REPORT]
    return _report(store, extra or {})()


def _report(store: dict, extra: dict[str, Any]) -> Callable[[], bytes]:
    def build() -> bytes:  # runs when clicked, outside the script: no st.* here
        settings = dict(store["settings"])
        header = {"page": store["page"], "model": settings.pop("model", ""),
                  "prompt": settings.pop("prompt", ""), **extra,
                  "settings": "\n".join(f"{name} = {json.dumps(value, ensure_ascii=False)}"
                                        for name, value in settings.items())}
        if store.get("link"):
            header["link"] = store["link"]
        figures = list(store["figures"].values())
        return html_report(f"{store['page']} · Transformer Explorer", header,
                           figures).encode("utf-8")

    return build


def _meta(store: dict, lm: Any, extra: dict[str, Any]) -> dict[str, Any]:
    settings = dict(store["settings"])
    settings.pop("model", None)
    return {"model": {"name": lm.name, "config": lm.config.to_dict(),
                      "dtype": str(lm.dtype).removeprefix("torch.")},
            "prompt": settings.pop("prompt", ""), "page": store["page"], **extra,
            "settings": settings, "link": store.get("link", ""),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def share_panel(lm: Any, page_run: Any = None, record: Any = None,
                extra: dict[str, Any] | None = None) -> None:
    """The sidebar's "Share and export" box: the link, the HTML report, the NPZ run."""
    store = st.session_state.get(REPORT)
    if store is None:
        return
    extra = extra or {}
    opened = st.session_state.get("export_upload") is not None  # keep an upload's answer shown
    with st.sidebar.expander("Share and export", expanded=opened, icon=":material/ios_share:"):
        st.caption("The address bar's link reopens this view: the page and every choice "
                   "on it are in the URL.")
        report_size = len(plotly_js()) + 200_000
        st.download_button("This page as HTML", data=_report(store, extra),
                           file_name=f"{_file_name(store['page'].lower())}_report.html",
                           mime="text/html", on_click="ignore", icon=":material/article:",
                           key="export_report", width="stretch",
                           help="Every chart of this page in one file that opens offline.")
        st.caption(f"About {size_text(report_size)}: plotly.js is inside, so it opens "
                   "without a network.")
        if page_run is not None or record is not None:
            _analysis_button(lm, store, page_run, record, extra)
        upload_box()


def _analysis_button(lm: Any, store: dict, page_run: Any, record: Any,
                     extra: dict[str, Any]) -> None:
    """The "Download this analysis" button: the run's arrays and the generation's steps as NPZ."""
    residuals = True
    if page_run is not None:
        full = run_nbytes(page_run.run)
        residuals = st.toggle(f"Include the residual streams ({size_text(full)})",
                              value=full <= LARGE_BYTES * 20, key="export_residuals")

    def analysis() -> bytes:  # runs when clicked, outside the script: no st.* here
        from explorer.ui.layers import token_texts

        arrays = {}
        if page_run is not None:
            arrays |= run_arrays(page_run.run, residuals=residuals,
                                 token_text=lambda ids: token_texts(lm.tokenizer, ids))
        if record is not None and len(record):
            arrays |= generation_arrays(record)
        return save_run(None, arrays, _meta(store, lm, extra))

    size = run_nbytes(page_run.run, residuals) if page_run is not None else 0
    st.download_button("Download this analysis (NPZ)", data=analysis,
                       file_name=f"{_file_name(store['page'].lower())}_run.npz",
                       mime="application/octet-stream", on_click="ignore",
                       icon=":material/download:", key="export_npz", width="stretch",
                       help="Tokens, residual streams, head scores, logit-lens top-5 and "
                            "generated steps, with the model, prompt and settings (read "
                            "back with explorer.load_run, or opened below).")
    if size > LARGE_BYTES:
        st.caption(f"About {size_text(size)}; built when you click.")
