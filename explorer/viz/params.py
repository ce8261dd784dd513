"""Parameter count by component as a bar chart (counts from `explorer.analysis.params`).

Pure: a mapping component -> count in, an Altair (Vega-Lite) chart out. Kaplan et al. 2020 separate
embedding from non-embedding parameters; the chart shows every component and its share.
"""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import pandas as pd

from explorer.analysis.params import format_count


def parameter_frame(counts: Mapping[str, int]) -> pd.DataFrame:
    """Tidy frame: component, parameters, share (0-1), label ("134.5M (100.0%)")."""
    total = sum(counts.values()) or 1
    frame = pd.DataFrame(
        {"component": list(counts), "parameters": [int(c) for c in counts.values()]}
    )
    frame["share"] = frame["parameters"] / total
    frame["label"] = [
        f"{format_count(c)} ({s:.1%})" for c, s in zip(frame["parameters"], frame["share"],
                                                       strict=True)
    ]
    return frame


def parameter_bar_chart(counts: Mapping[str, int]) -> alt.LayerChart:
    """Horizontal bars, one per component, labelled with count and share (Vega-Lite)."""
    frame = parameter_frame(counts)
    base = alt.Chart(frame).encode(
        y=alt.Y("component:N", sort=None, title=None),
        x=alt.X("parameters:Q", title="parameters", axis=alt.Axis(format="~s")),
        tooltip=[alt.Tooltip("component:N"), alt.Tooltip("parameters:Q", format=","),
                 alt.Tooltip("share:Q", format=".1%")],
    )
    bars = base.mark_bar(color="#4c78a8")
    labels = base.mark_text(align="left", dx=4, color="#1f2937").encode(text="label:N")
    return (bars + labels).properties(height=40 * max(len(frame), 1))
