"""Attention: every head of every layer, head-role scores, rollout and the induction test."""

from __future__ import annotations

import logging
import time

import streamlit as st

from explorer.analysis.attention import HEAD_SCORES, aggregate_heads
from explorer.ui import attention as ui
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel, show_chart, show_vega
from explorer.ui.gate import server_limits
from explorer.ui.resources import model_label
from explorer.ui.runs import PageRun, memo_figure, prompt_inputs, run_or_stop
from explorer.ui.url_state import in_url
from explorer.ui.widgets import chips_for, render_token_chips
from explorer.viz import (
    attention_lines,
    head_map_chart,
    head_small_multiples,
    query_attention_bars,
)

log = logging.getLogger(__name__)
SCALES = {"sqrt": "square root", "linear": "linear", "log": "log"}
AGGREGATIONS = {"mean": "Mean over heads", "max": "Max over heads",
                "rollout": "Rollout up to this layer"}

page_header(
    "Attention",
    "Where each token looks. Every cell of the **head map** is one head of one layer, coloured "
    "by a head-role score; click a cell (or use the select boxes) to open that head. Rows of a "
    "heatmap are queries (the token doing the looking), columns are keys; each row sums to 1.",
)
lm = require_model()
cfg = lm.config
begin_page("Attention")
ui.use_attention_default_prompt("prompt_box_attention")
text, target_text = prompt_inputs(lm, "attention", "attn_target", "attention")

started = time.perf_counter()
page_run = run_or_stop(lm, text, target_text)
share_panel(lm, page_run)
with st.expander(f"Tokens ({len(page_run.labels['source']):,})", expanded=False):
    source = page_run.stack(next(iter(page_run.run.stacks))).keys
    render_token_chips(chips_for(lm.tokenizer, source.ids.tolist(), source.pieces))
st.caption(f"Analysed in {page_run.run.seconds:.2f} s (this page: "
           f"{time.perf_counter() - started:.2f} s). Head scores use every token.")
if summary := ui.gqa_summary(cfg.n_heads, cfg.n_kv_heads):
    st.caption(summary)


@st.fragment
def head_explorer(page_run: PageRun) -> None:
    """Everything that changes with the stack, head, layer, query or view options."""
    started = time.perf_counter()
    stacks = page_run.run.stacks
    stack_name = next(iter(stacks))
    if len(stacks) > 1:
        stack_name = st.radio("Attention", list(stacks), horizontal=True, **in_url("attn_stack"),
                              format_func=lambda s: stacks[s].spec.label)
    stack = stacks[stack_name]
    n_layers, n_heads = stack.n_layers, stack.n_heads
    ui.sync_head_from_map(st.session_state.get(ui.MAP_KEY), n_layers, n_heads)
    ui.init_selection(page_run, stack_name)
    scores = page_run.run.scores(stack_name)
    names = ui.head_labels(n_heads, cfg.n_kv_heads)

    left, right = st.columns([2, 3], gap="large")
    with left:
        score_name = st.selectbox("Colour heads by", list(HEAD_SCORES), **in_url(ui.SCORE_KEY),
                                  format_func=lambda s: HEAD_SCORES[s].label)
        score = HEAD_SCORES[score_name]
        st.caption(score.description + (" Lower is more focused." if not
                                         score.higher_is_role else ""))
        map_slot = st.empty()  # drawn after the select boxes, which a link may set
        pick = st.columns(2)
        pick[0].selectbox("Layer", range(n_layers), **in_url(ui.LAYER_KEY))
        # Plain numbers: a label that depends on the model (its kv group) could stay stale
        # in the browser when the model changes and the value does not; the heatmap title
        # and the grouped-query note name the kv group.
        pick[1].selectbox("Head", range(n_heads), **in_url(ui.HEAD_KEY))
        layer, head = st.session_state[ui.LAYER_KEY], st.session_state[ui.HEAD_KEY]
        spec = ui.head_map_spec((page_run.key, stack_name), scores[score_name],
                                score.label, not score.higher_is_role, (layer, head),
                                min(max(22 * n_layers + 40, 200), 560))
        with map_slot.container():
            show_vega(spec, on_select="rerun", selection_mode="head", key=ui.MAP_KEY,
                      width="stretch")
        has_special = bool(stack.queries.special.any() or stack.keys.special.any())
        hide = st.toggle("Hide special tokens and renormalise", **in_url("attn_hide_special"),
                         disabled=not has_special,
                         help="Drop [CLS]/[SEP]/BOS-like tokens from the views and rescale "
                              "each row to sum to 1 over the remaining keys.")
        scale = st.radio("Colour scale", list(SCALES), horizontal=True, **in_url("attn_scale"),
                         format_func=SCALES.get,
                         help="Square root and log keep small weights visible next to a "
                              "head that puts most of its weight on one token.")
    layer, head = st.session_state[ui.LAYER_KEY], st.session_state[ui.HEAD_KEY]
    view = ui.layer_view(page_run, stack_name, layer, hide and has_special)
    memo = (page_run.key, stack_name, layer, hide and has_special)  # what a view depends on
    with right:
        title = f"Layer {layer} · {names[head]}"
        if stack.spec.cross:
            title += " · cross-attention"
        show_chart(ui.heatmap_of(view.pattern[head], view.q_labels, view.k_labels, title,
                              scale, "attn_head_heatmap", memo, "head"),
                   key="attn_head_fig", csv=False)
        matrix = view.pattern[head]
        st.download_button(
            "Download this head's matrix (CSV)",
            data=lambda: ui.pattern_csv(matrix, view.q_labels, view.k_labels),
            file_name=f"attention_L{layer}_H{head}.csv", mime="text/csv", on_click="ignore",
            icon=":material/download:")

    st.subheader("One query token")
    # Options are the labels themselves ("31: ␣watches"), not indices with a format_func:
    # with indices, a new prompt kept index 31 and the browser kept showing the old prompt's
    # label for it. A label that is not in the new prompt falls back to the last token.
    q_labels = list(view.q_labels)
    if st.session_state.get("attn_query") not in q_labels:
        st.session_state["attn_query"] = q_labels[-1]
    query = q_labels.index(st.selectbox("Query token", q_labels, **in_url("attn_query")))
    # Labels that do not change with the head or layer: the URL holds the label.
    lines_for = st.radio("Lines for", ["head", "layer"], horizontal=True,
                         **in_url("attn_lines"),
                         format_func={"head": "the selected head",
                                      "layer": "every head of this layer"}.get)
    rows = view.pattern[:, query] if lines_for == "layer" else view.pattern[head, query]
    line_names = names if lines_for == "layer" else [names[head]]
    columns = st.columns(2, gap="large")
    with columns[0]:
        if stack.spec.cross:
            st.caption("The line view is for self-attention; the strip on the right shows "
                       "where this decoder token looks in the encoder's tokens.")
        else:
            show_chart(memo_figure(
                (*memo, "lines", query, tuple(line_names)),
                lambda: attention_lines(rows, view.k_labels, query, line_names), "head"),
                key="attn_lines_fig")
    with columns[1]:
        show_chart(memo_figure((*memo, "bars", query), lambda: query_attention_bars(
            view.pattern[:, query], view.k_labels, query, head_labels=names,
            query_label=view.q_labels[query] if stack.spec.cross else None)),
            key="attn_bars_fig")

    st.subheader(f"All heads of layer {layer}")
    columns = st.columns(2, gap="large")
    with columns[0]:
        show_chart(memo_figure((*memo, "multiples", scale), lambda: (
            head_small_multiples(view.pattern, view.q_labels, head_labels=names, scale=scale,
                            columns=3) if not stack.spec.cross else
            head_small_multiples(view.pattern, view.k_labels, head_labels=names, scale=scale,
                            columns=3, q_labels=view.q_labels))),
            key="attn_multiples_fig")
    with columns[1]:
        how = st.radio("Combine", list(AGGREGATIONS), horizontal=True, **in_url("attn_aggregate"),
                       format_func=AGGREGATIONS.get)
        if how == "rollout" and stack.spec.cross:
            st.info("Rollout follows self-attention through the residual stream; pick a "
                    "self-attention stack.")
        elif how == "rollout":
            with st.spinner("Rolling attention out through the layers…"):
                rollout = page_run.run.rollout(stack_name)
            block_labels = (page_run.labels[stack.spec.queries] if rollout.exact else
                            [f"tok {s}–{e - 1}" for s, e in zip(
                                rollout.starts, [*rollout.starts[1:], len(stack.queries)],
                                strict=True)])
            note = "" if rollout.exact else " (approximate: layers pooled before the product)"
            st.caption("Rollout (Abnar & Zuidema 2020): how much each position after this "
                       f"layer draws from each input token, with the residual path mixed in as "
                       f"half the identity{note}. Special tokens are kept.")
            show_chart(ui.heatmap_of(rollout.values[layer], block_labels, block_labels,
                                  f"Rollout through layer {layer}", scale,
                                  "attn_rollout", memo), key="attn_rollout_fig", slot="combine")
        else:
            show_chart(ui.heatmap_of(aggregate_heads(view.pattern, how), view.q_labels,
                                  view.k_labels, f"{AGGREGATIONS[how]} · layer {layer}",
                                  scale, "attn_agg", memo), key="attn_agg_fig", slot="combine")
            if how == "max":
                st.caption("Max over heads: each cell is the largest weight any head put "
                           "there, so rows sum to more than 1.")
    elapsed_ms = 1000 * (time.perf_counter() - started)
    st.session_state["attn_fragment_ms"] = elapsed_ms
    log.info("attention views rendered in %.0f ms", elapsed_ms)
    st.caption(f"Views computed in {elapsed_ms:.0f} ms.")


@st.fragment
def induction_section() -> None:
    """Rank heads on repeated random tokens (Olsson et al. 2022)."""
    st.subheader("Induction test")
    st.markdown(
        "Feeds the model a random token sequence repeated twice. In the second copy an "
        "*induction head* attends to the token right after the previous occurrence of the "
        "current token; its score is the mean weight on that token (1 = perfect).")
    if cfg.kind == "encoder":
        st.caption("This is an encoder: it sees both copies at once, so high scores can also "
                   "come from plain copying.")
    lengths = [n for n in (20, 50, 100) if n <= server_limits().max_induction_len] or [20]
    half_len = st.select_slider("Random tokens per copy", lengths, value=min(50, lengths[-1]),
                                key="attn_induction_len")
    if st.button("Run the induction test", key="attn_induction_run"):
        st.session_state["attn_induction_done"] = True
    if not st.session_state.get("attn_induction_done"):
        return
    with st.spinner("Running the induction test…"):
        result = ui.run_induction_test(model_label(lm), half_len, 0, lm)
    columns = st.columns([2, 3], gap="large")
    names = ui.head_labels(cfg.n_heads, cfg.n_kv_heads)
    columns[0].dataframe(
        {"layer": [r[0] for r in result.ranking[:10]],
         "head": [names[r[1]] for r in result.ranking[:10]],
         "induction score": [round(r[2], 3) for r in result.ranking[:10]]},
        hide_index=True, width="stretch")
    with columns[1]:
        show_vega(head_map_chart(result.scores, "Induction score"), width="stretch",
                  key="attn_induction_map")


head_explorer(page_run)
induction_section()
