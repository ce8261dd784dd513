"""Streamlit glue for the Layers page's *Information flow* tab: the routes information took
into one token's final residual (`explorer.analysis.flow`, Ferrando & Voita 2024; the LLM
Transparency Tool's contribution graph), read from the prompt's shared run, with a table
of its edges and any attention edge split by head."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from explorer.analysis.flow import Edge, flow_graph
from explorer.runs.flow import edge_heads, flow_unavailable, information_flow
from explorer.ui.downloads import csv_button
from explorer.ui.export import show_chart
from explorer.ui.gate import heavy_work
from explorer.ui.interventions import or_message
from explorer.ui.layers import stream_labels, timed
from explorer.ui.resources import model_label
from explorer.ui.runs import PageRun, memo_figure
from explorer.ui.url_state import in_url
from explorer.viz.flow import flow_figure
from explorer.viz.positional import bar_chart

THRESHOLDS = ("0.02", "0.04", "0.08", "0.15", "0.3")  # below 0.02: tens of thousands of edges
DEFAULT_THRESHOLD = "0.04"  # the LLM Transparency Tool's default
MAX_LISTED_EDGES = 40  # attention edges offered for the split by head
KINDS = {"attn": "attention", "resid": "residual (attention)", "mlp": "MLP",
         "mlp_resid": "residual (MLP)"}


def edges_frame(edges: list[Edge], labels: list[str]) -> pd.DataFrame:
    """One row per edge: layer, kind, source and target token, importance."""
    return pd.DataFrame.from_records([
        {"layer": e.layer, "kind": KINDS[e.kind], "source_position": e.source,
         "source": labels[e.source], "target_position": e.target, "target": labels[e.target],
         "importance": round(e.importance, 5)} for e in edges],
        columns=["layer", "kind", "source_position", "source", "target_position", "target",
                 "importance"])


def edge_label(edge: Edge, labels: list[str]) -> str:
    return (f"L{edge.layer}: {labels[edge.target]} reads {labels[edge.source]} "
            f"({edge.importance:.2f})")


@st.fragment
def flow_view(lm: Any, page_run: PageRun) -> None:
    run = page_run.run
    if (why := flow_unavailable(run)) is not None:
        st.info(f"No flow graph for {model_label(lm)}: {why}.")
        return
    with timed("flow"):
        labels = stream_labels(page_run, "main")
        left, right = st.columns([3, 2])
        choice = left.selectbox("Follow the information into", labels, index=len(labels) - 1,
                                **in_url("layers_flow_token"),
                                help="The graph explains this token's final residual (what "
                                     "the output head reads there).")
        position = labels.index(choice)
        threshold = float(right.select_slider(
            "Keep edges of importance at least", THRESHOLDS, value=DEFAULT_THRESHOLD,
            **in_url("layers_flow_threshold"),
            help="Each node's incoming edges are shares (summing to 1) of what it holds. "
                 "Lower shows more routes."))

        def compute() -> Any:
            with heavy_work("information flow"):
                return information_flow(run)

        flow = or_message(compute)
        if flow is None:
            return
        edges = flow_graph(flow, position, threshold)
        show_chart(memo_figure((page_run.key, "flow", position, threshold), lambda: flow_figure(
            edges, labels, flow.n_layers, position, threshold), "layers"),
            key="layers_flow_fig", csv=False)
        st.caption("Every block adds to each token's vector. An edge's importance is how close "
                   "that one part of the sum (a token read through attention, the MLP's write, "
                   "or the vector carried on by the residual) lands to the result, as a share "
                   "(Ferrando & Voita 2024). Followed back from the chosen token, the kept "
                   "edges are the routes its prediction was built along.")
        csv_button("Download the graph's edges (CSV)", lambda: edges_frame(edges, labels),
                   "information_flow.csv", "layers_flow_csv")
        heads_view(run, [e for e in edges if e.kind == "attn"], labels)


def heads_view(run: Any, attn_edges: list[Edge], labels: list[str]) -> None:
    """An attention edge split into its heads' shares."""
    if not attn_edges:
        st.caption("No attention edge passes the threshold: lower it to see which tokens "
                   "were read.")
        return
    listed = sorted(attn_edges, key=lambda e: -e.importance)[:MAX_LISTED_EDGES]
    names = [edge_label(e, labels) for e in listed]
    name = st.selectbox("Split an attention edge by head", names, **in_url("layers_flow_edge"))
    picked = listed[names.index(name)]
    shares = edge_heads(run, picked.layer, picked.target, picked.source)
    heads = [f"H{h}" for h in range(len(shares))]
    show_chart(bar_chart(heads, {"share": shares}, title=f"Which heads carry {name}",
                         x_title="head", y_title="share of the edge",
                         note="each head's part of the edge, by the same proximity measure"),
               key="layers_flow_heads", csv=False)
