"""Attention: every head of every layer, head-role scores, rollout and the induction test."""

from __future__ import annotations

import logging
import time

import streamlit as st

from explorer.analysis.attention import HEAD_SCORES
from explorer.ui import attention as ui
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel, show_vega
from explorer.ui.gate import server_limits
from explorer.ui.resources import model_label
from explorer.ui.runs import PageRun, prompt_inputs, run_or_stop
from explorer.ui.url_state import in_url

log = logging.getLogger(__name__)
SCALES = {"sqrt": "square root", "linear": "linear", "log": "log"}

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
ui.tokens_expander(lm, page_run)
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
        ui.head_heatmap_view(view, stack.spec.cross, layer, head, names, scale, memo)

    st.subheader("One query token")
    # Options are the labels themselves; one not in the new prompt falls back to the last token.
    q_labels = list(view.q_labels)
    ui.keep_query_valid(q_labels)
    query = q_labels.index(st.selectbox("Query token", q_labels, **in_url(ui.QUERY_KEY)))
    # Labels that do not change with the head or layer: the URL holds the label.
    lines_for = st.radio("Lines for", ["head", "layer"], horizontal=True,
                         **in_url("attn_lines"),
                         format_func={"head": "the selected head",
                                      "layer": "every head of this layer"}.get)
    ui.query_views(view, stack.spec.cross, names, head, query, lines_for, memo)

    st.subheader(f"All heads of layer {layer}")
    columns = st.columns(2, gap="large")
    with columns[0]:
        ui.multiples_view(view, stack.spec.cross, names, scale, memo)
    with columns[1]:
        how = st.radio("Combine", list(ui.AGGREGATIONS), horizontal=True,
                       **in_url("attn_aggregate"), format_func=ui.AGGREGATIONS.get)
        ui.combine_view(page_run, stack_name, view, layer, how, scale, memo)
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
    ui.induction_view(result, ui.head_labels(cfg.n_heads, cfg.n_kv_heads))


head_explorer(page_run)
induction_section()
