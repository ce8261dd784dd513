"""The sections of the positional-encodings page, each a Streamlit fragment (its controls rerun
only that section, timed into ``st.session_state[TIMINGS_KEY]``): the sinusoidal formula
(Vaswani et al. 2017), defined here, and the sections about the loaded model (its own scheme,
the live "why position matters" checks), defined in :mod:`explorer.ui.positional_model_views`
and importable from here.

Numbers come from `explorer.analysis.positional`, figures from `explorer.viz.positional`;
every chart has a CSV download (:func:`explorer.ui.positional.chart_with_csv`). Widget keys
start with ``pos_``.
"""

from __future__ import annotations

import streamlit as st
import torch

from explorer.analysis.positional import (
    position_dot_products,
    sinusoid_dot_by_offset,
    sinusoid_rotation_residuals,
)
from explorer.nn.positional import sinusoidal_table
from explorer.ui import positional as glue
from explorer.ui.positional import TIMINGS_KEY
from explorer.ui.positional_model_views import model_section, why_section
from explorer.ui.url_state import in_url
from explorer.viz.positional import line_chart, value_heatmap

__all__ = ["TIMINGS_KEY", "model_section", "sinusoid_section", "why_section"]


# --------------------------------------------------------------------------- sinusoidal


@glue.section("sinusoid")
def sinusoid_section() -> None:
    """The fixed table, chosen dimensions as curves, dot products and the rotation property."""
    cols = st.columns(3)
    n = cols[0].slider("Positions", 8, 1024, 128, step=8, **in_url("pos_sin_n"))
    d_model = cols[1].slider("d_model", 4, 1024, 128, step=2, **in_url("pos_sin_d"))
    base = cols[2].number_input("Base", min_value=2.0, max_value=1e7, value=10000.0,
                                step=1000.0, format="%g", **in_url("pos_sin_base"))
    table = sinusoidal_table(n, d_model, base)  # [N, D]
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            value_heatmap(table, title="PE[position, dimension]", x_title="dimension",
                          y_title="position"),
            lambda: glue.matrix_csv(table, "position", "dimension", "value"),
            "sinusoid_table.csv", "pos_sin_table")
    with right:
        dims_options = list(range(d_model))
        wanted = [d for d in st.session_state.get("pos_sin_dims", []) if d < d_model]
        st.session_state["pos_sin_dims"] = wanted or sorted({0, 1, d_model // 2, d_model - 2})
        dims = st.multiselect("Dimensions to draw", dims_options, **in_url("pos_sin_dims"),
                              max_selections=8)
        positions = torch.arange(n)
        glue.chart_with_csv(
            line_chart(positions, {f"dim {d}": table[:, d] for d in dims},
                       "Chosen dimensions against position", "position", "PE value"),
            lambda: glue.columns_csv({"position": positions,
                                      **{f"dim {d}": table[:, d] for d in dims}}),
            "sinusoid_dimensions.csv", "pos_sin_dims_chart")
    dots = position_dot_products(table)  # [N, N]
    left, right = st.columns(2, gap="large")
    with left:
        glue.chart_with_csv(
            value_heatmap(dots, title="PE(p) · PE(q): constant along each diagonal",
                          x_title="position q", y_title="position p", value_title="dot"),
            lambda: glue.matrix_csv(dots, "p", "q", "dot"), "sinusoid_dots.csv",
            "pos_sin_dots")
    with right:
        glue.clamp("pos_sin_k", 1, n - 1, 8)
        k = st.slider("Offset k", 1, n - 1, **in_url("pos_sin_k"))
        residuals = sinusoid_rotation_residuals(table, k, base)  # [N - k]
        st.markdown(f"**PE(pos + {k}) = R<sub>{k}</sub> · PE(pos)** for all {n - k} positions: "
                    f"largest residual {residuals.max():.1e} (float32 rounding). R<sub>k</sub> "
                    "rotates each (sin, cos) pair by k·w<sub>i</sub>, whatever pos is.",
                    unsafe_allow_html=True)
        along = dots.diagonal(k)  # [N - k]
        closed = sinusoid_dot_by_offset(torch.tensor([k]), d_model, base).expand(n - k)
        starts = torch.arange(n - k)
        glue.chart_with_csv(
            line_chart(starts, {"from the table": along, "closed form Σ cos(k·w_i)": closed},
                       f"PE(p) · PE(p + {k}) for every p", "p", "dot product",
                       y_range=(-d_model / 2, d_model / 2)),  # the heatmap's range
            lambda: glue.columns_csv({"p": starts, "table": along, "closed_form": closed,
                                      "rotation_residual": residuals}),
            "sinusoid_offset.csv", "pos_sin_offset")
