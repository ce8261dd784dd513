"""Streamlit glue for the attention page: its views of the shared run and their state.

The page reads the shared :class:`~explorer.ui.runs.PageRun` of its prompt (one forward per
prompt for every page; the run recomputes a layer's patterns from its ``resid_pre`` when a
view asks). :func:`layer_view` gives one layer as shown (special tokens hidden and rows
renormalised when asked), memoised in the run, so a head switch reuses the layer. The
selected layer/head live in ``st.session_state`` and are kept in sync between the clickable
head map and the select boxes (:func:`sync_head_from_map`). Head roles: Clark et al. 2019;
induction heads: Olsson et al. 2022; rollout: Abnar & Zuidema 2020.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from explorer.analysis.attention import aggregate_heads, gqa_groups, renormalise_without
from explorer.runs import InductionResult, induction_test
from explorer.runs.prompt_run import Rollout
from explorer.serving import shared_gate
from explorer.ui.downloads import spreadsheet_safe
from explorer.ui.export import show_chart, show_vega
from explorer.ui.runs import PageRun, memo_figure
from explorer.ui.state import DEFAULT_PROMPT, get_prompt
from explorer.ui.url_state import in_url
from explorer.ui.widgets import chips_for, is_new_click, render_token_chips
from explorer.viz import (
    attention_heatmap,
    attention_lines,
    head_map_chart,
    head_small_multiples,
    query_attention_bars,
)

log = logging.getLogger(__name__)

HEATMAP_CELLS = 256  # per side; past this the heatmap is pooled (or windowed)
LAYER_KEY, HEAD_KEY, MAP_KEY, SEEN_KEY = "attn_layer", "attn_head", "attn_head_map", "attn_seen"
SCORE_KEY, QUERY_KEY = "attn_score", "attn_query"
AGGREGATIONS = {"mean": "Mean over heads", "max": "Max over heads",
                "rollout": "Rollout up to this layer"}
DEFAULT_ATTENTION_PROMPT = (
    "The Eiffel Tower is in Paris and the Colosseum is in Rome. "
    "The Eiffel Tower is in Paris and the Colosseum is in Rome."
)


@st.cache_data(max_entries=8, show_spinner=False)
def run_induction_test(label: str, half_len: int, seed: int, _lm: Any) -> InductionResult:
    """Rank this model's heads by induction score on repeated random tokens (cached)."""
    tokenizer = _lm.tokenizer
    bos = getattr(tokenizer, "bos_token_id", None)
    specials = list(getattr(tokenizer, "all_special_ids", []) or [])
    with shared_gate().slot():  # inside a cached function: the wait is silent
        return induction_test(_lm.model, _lm.config.kind, _lm.config.d_vocab, bos, specials,
                              half_len, seed)


# --------------------------------------------------------------------------- layer views


@dataclass(frozen=True)
class LayerView:
    """One layer as displayed: pattern ``[H, Q, K]`` and the labels of its rows/columns."""

    pattern: torch.Tensor
    q_labels: list[str]
    k_labels: list[str]
    hidden: int  # special tokens hidden (0 when none)


def layer_view(page_run: PageRun, stack_name: str, layer: int, hide_special: bool) -> LayerView:
    """The layer's pattern, with special tokens dropped and rows renormalised when asked.

    Memoised in the shared run (within its byte budget), so switching heads reuses it.
    """
    stack = page_run.stack(stack_name)
    q_labels = page_run.labels[stack.spec.queries]
    k_labels = page_run.labels[stack.spec.keys]
    if not (hide_special and bool(stack.queries.special.any() or stack.keys.special.any())):
        return LayerView(page_run.run.layer(stack_name, layer), q_labels, k_labels, 0)

    def hidden_view() -> LayerView:
        q_keep, k_keep = ~stack.queries.special, ~stack.keys.special
        pattern = page_run.run.layer(stack_name, layer)
        if stack.spec.cross:  # keys and queries differ: drop keys, renormalise, drop queries
            kept = pattern[..., k_keep]
            pattern = (kept / kept.sum(-1, keepdim=True).clamp_min(1e-12))[:, q_keep]
        elif bool(q_keep.any()):
            pattern = renormalise_without(pattern, q_keep)
        else:
            q_keep = k_keep = torch.ones_like(q_keep)
        qs = [lab for lab, keep in zip(q_labels, q_keep.tolist(), strict=True) if keep]
        ks = [lab for lab, keep in zip(k_labels, k_keep.tolist(), strict=True) if keep]
        return LayerView(pattern, qs, ks, int((~k_keep).sum()))

    return page_run.run.derive(("hidden_view", stack_name, layer), hidden_view)


def heatmap_of(matrix: torch.Tensor, q_labels: list[str], k_labels: list[str], title: str,
               scale: str, key: str, memo_key: tuple, slot: str = "layer") -> Any:
    """The heatmap of one ``[Q, K]`` matrix; long inputs pooled or windowed (the user's
    choice, radio and slider keyed by ``key``), built once per session per ``memo_key``."""
    n = max(len(q_labels), len(k_labels))
    window = None
    if n > HEATMAP_CELLS and st.radio(
        "Long input", ["pooled", "window"], horizontal=True, **in_url(f"{key}_mode"),
        format_func=lambda m: {"pooled": "Whole prompt, pooled into blocks",
                               "window": f"A window of {HEATMAP_CELLS} tokens"}[m],
    ) == "window":
        window = st.slider("Window start (token)", 0, n - HEATMAP_CELLS, n - HEATMAP_CELLS,
                           **in_url(f"{key}_start"))
        st.caption("Window: weights on keys outside it are not shown, so rows can sum to "
                   "less than 1.")
    elif n > HEATMAP_CELLS:
        st.caption(f"{n:,} tokens: the heatmap is pooled into blocks (see its subtitle); "
                   "pick a window for single tokens.")

    def build() -> Any:
        m, qs, ks = matrix, q_labels, k_labels
        if window is not None:
            keys = slice(window, window + HEATMAP_CELLS)
            queries = keys if len(q_labels) == len(k_labels) else slice(None)  # cross: keys
            m, qs, ks = m[queries, keys], qs[queries], ks[keys]
        return attention_heatmap(m, qs, ks, title, scale, HEATMAP_CELLS)

    return memo_figure((*memo_key, title, scale, window), build, slot)


def head_map_spec(
    memo_key: tuple, scores: torch.Tensor, score_label: str, reverse: bool,
    selected: tuple[int, int], height: int,
) -> dict:
    """Vega-Lite spec of the clickable head map with ``selected`` outlined.

    The altair chart (:func:`explorer.viz.head_map_chart`) is built and converted once per
    score (its schema validation costs tens of ms); a head switch only rewrites the outline's
    test, keeping the shared data untouched.
    """
    base = memo_figure((*memo_key, "head_map", score_label), lambda: head_map_chart(
        scores, score_label, None, reverse).properties(height=height).to_dict(), slot="map")
    test = f"datum.layer === {int(selected[0])} && datum.head === {int(selected[1])}"
    encoding = dict(base["encoding"])
    encoding["stroke"] = {"condition": {"test": test, "value": "#ff2b2b"}, "value": None}
    encoding["strokeWidth"] = {"condition": {"test": test, "value": 3}, "value": 0}
    return {**base, "encoding": encoding}


def head_labels(n_heads: int, n_kv_heads: int) -> list[str]:
    """``head h`` or, under grouped-query attention, ``head h · kv g``."""
    if n_kv_heads >= n_heads:
        return [f"head {h}" for h in range(n_heads)]
    group = n_heads // n_kv_heads
    return [f"head {h} · kv {h // group}" for h in range(n_heads)]


def gqa_summary(n_heads: int, n_kv_heads: int) -> str | None:
    """One sentence on which query heads share each key/value head (None without GQA)."""
    if n_kv_heads >= n_heads or n_heads % n_kv_heads:
        return None
    groups = gqa_groups(n_heads, n_kv_heads)
    parts = "; ".join(f"kv {g}: heads {', '.join(map(str, heads))}"
                      for g, heads in enumerate(groups))
    return (f"Grouped-query attention: {n_heads} query heads share {n_kv_heads} key/value "
            f"heads ({parts}). Heads of one group read the same keys, so their patterns "
            "differ only through their queries.")


# --------------------------------------------------------------------------- selection state


DEFAULT_SCORES = ("induction", "previous_token", "entropy")


def default_head(stack_scores: dict[str, torch.Tensor], n_heads: int) -> tuple[str, int, int]:
    """(score, layer, head) to open first: the strongest induction head when the prompt
    repeats itself, else the strongest previous-token head (Olsson et al. 2022)."""
    for name in DEFAULT_SCORES:
        scores = stack_scores.get(name)
        if scores is None or not bool(torch.isfinite(scores).any()):
            continue
        best = torch.nan_to_num(scores, nan=-math.inf)
        if name == "entropy":
            best = -torch.nan_to_num(scores, nan=math.inf)
        flat = int(best.flatten().argmax())
        return name, flat // n_heads, flat % n_heads
    return DEFAULT_SCORES[-1], 0, 0


def init_selection(page_run: PageRun, stack_name: str) -> None:
    """First visit: open :func:`default_head`. Later: keep the selection valid for the current
    model (an out-of-range layer/head is reset)."""
    stack = page_run.stack(stack_name)
    score, layer, head = default_head(page_run.run.scores(stack_name), stack.n_heads)
    st.session_state.setdefault(SCORE_KEY, score)
    if st.session_state.get(LAYER_KEY) not in range(stack.n_layers):
        st.session_state[LAYER_KEY] = layer
    if st.session_state.get(HEAD_KEY) not in range(stack.n_heads):
        st.session_state[HEAD_KEY] = head


def sync_head_from_map(event: Any, n_layers: int, n_heads: int) -> bool:
    """Apply a new click on the head map to the layer/head select boxes.

    Only a click that differs from the last one applied counts, so choosing in the select
    boxes is not overridden by an old click. Returns whether the selection changed.
    """
    try:
        selection = event["selection"] if isinstance(event, dict) else event.selection
        points = list(selection.get("head", []) or [])
    except (AttributeError, KeyError, TypeError):
        return False
    if not points:
        return False
    point = points[0]
    try:
        layer, head = int(point["layer"]), int(point["head"])
    except (KeyError, TypeError, ValueError):
        return False
    if not is_new_click((layer, head), SEEN_KEY):
        return False
    if layer in range(n_layers) and head in range(n_heads):
        st.session_state[LAYER_KEY], st.session_state[HEAD_KEY] = layer, head
        return True
    return False


# --------------------------------------------------------------------------- CSV


def pattern_csv(pattern_2d: torch.Tensor, q_labels: list[str], k_labels: list[str]) -> bytes:
    """Tidy CSV of one head's matrix ``[Q, K]``: query_pos, query, key_pos, key, weight.

    Labels are guarded against spreadsheet formula injection (:func:`spreadsheet_safe`).
    """
    weights = pattern_2d.detach().float().cpu().numpy()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["query_pos", "query", "key_pos", "key", "weight"])
    safe_q = [spreadsheet_safe(label) for label in q_labels]
    safe_k = [spreadsheet_safe(label) for label in k_labels]
    for qi, row in enumerate(weights):
        writer.writerows((qi, safe_q[qi], ki, safe_k[ki], f"{w:.6g}") for ki, w in enumerate(row))
    return out.getvalue().encode("utf-8")


def use_attention_default_prompt(widget_key: str) -> None:
    """Start the prompt box on a repeated phrase (induction heads light up on the repeat)
    unless the user or the URL already gave a prompt."""
    fresh = widget_key not in st.session_state and "prompt" not in st.query_params
    if fresh and get_prompt() == DEFAULT_PROMPT:
        st.session_state[widget_key] = DEFAULT_ATTENTION_PROMPT


# --------------------------------------------------------------------------- page views


def tokens_expander(lm: Any, page_run: PageRun) -> None:
    """The prompt's tokens as chips, folded away."""
    with st.expander(f"Tokens ({len(page_run.labels['source']):,})", expanded=False):
        source = page_run.stack(next(iter(page_run.run.stacks))).keys
        render_token_chips(chips_for(lm.tokenizer, source.ids.tolist(), source.pieces))


def head_heatmap_view(view: LayerView, cross: bool, layer: int, head: int, names: list[str],
                      scale: str, memo: tuple) -> None:
    """The selected head's heatmap and its matrix as a CSV download."""
    title = f"Layer {layer} · {names[head]}"
    if cross:
        title += " · cross-attention"
    show_chart(heatmap_of(view.pattern[head], view.q_labels, view.k_labels, title, scale,
                          "attn_head_heatmap", memo, "head"), key="attn_head_fig", csv=False)
    matrix = view.pattern[head]
    st.download_button(
        "Download this head's matrix (CSV)",
        data=lambda: pattern_csv(matrix, view.q_labels, view.k_labels),
        file_name=f"attention_L{layer}_H{head}.csv", mime="text/csv", on_click="ignore",
        icon=":material/download:")


def keep_query_valid(q_labels: list[str]) -> None:
    """Point the query select box at the last token when its label is not in this prompt.

    Its options are the labels themselves ("31: ␣watches"), not indices with a format_func:
    with indices, a new prompt kept index 31 and the browser kept showing the old prompt's
    label for it.
    """
    if st.session_state.get(QUERY_KEY) not in q_labels:
        st.session_state[QUERY_KEY] = q_labels[-1]


def query_views(view: LayerView, cross: bool, names: list[str], head: int, query: int,
                lines_for: str, memo: tuple) -> None:
    """Where one query token looks: lines to its keys (self-attention) and a bar per head."""
    rows = view.pattern[:, query] if lines_for == "layer" else view.pattern[head, query]
    line_names = names if lines_for == "layer" else [names[head]]
    columns = st.columns(2, gap="large")
    with columns[0]:
        if cross:
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
            query_label=view.q_labels[query] if cross else None)),
            key="attn_bars_fig")


def multiples_view(view: LayerView, cross: bool, names: list[str], scale: str,
                   memo: tuple) -> None:
    """Every head of the layer as small heatmaps."""
    show_chart(memo_figure((*memo, "multiples", scale), lambda: (
        head_small_multiples(view.pattern, view.q_labels, head_labels=names, scale=scale,
                             columns=3) if not cross else
        head_small_multiples(view.pattern, view.k_labels, head_labels=names, scale=scale,
                             columns=3, q_labels=view.q_labels))),
        key="attn_multiples_fig")


def rollout_labels(rollout: Rollout, labels: list[str], n_queries: int) -> list[str]:
    """Row/column labels of a rollout: the tokens when exact, else its blocks' token ranges."""
    if rollout.exact:
        return labels
    ends = [*rollout.starts[1:], n_queries]
    return [f"tok {s}–{e - 1}" for s, e in zip(rollout.starts, ends, strict=True)]


def combine_view(page_run: PageRun, stack_name: str, view: LayerView, layer: int, how: str,
                 scale: str, memo: tuple) -> None:
    """The layer's heads combined: mean or max over heads, or rollout up to the layer."""
    stack = page_run.stack(stack_name)
    if how == "rollout" and stack.spec.cross:
        st.info("Rollout follows self-attention through the residual stream; pick a "
                "self-attention stack.")
    elif how == "rollout":
        with st.spinner("Rolling attention out through the layers…"):
            rollout = page_run.run.rollout(stack_name)
        labels = rollout_labels(rollout, page_run.labels[stack.spec.queries], len(stack.queries))
        note = "" if rollout.exact else " (approximate: layers pooled before the product)"
        st.caption("Rollout (Abnar & Zuidema 2020): how much each position after this "
                   f"layer draws from each input token, with the residual path mixed in as "
                   f"half the identity{note}. Special tokens are kept.")
        show_chart(heatmap_of(rollout.values[layer], labels, labels,
                              f"Rollout through layer {layer}", scale, "attn_rollout", memo),
                   key="attn_rollout_fig", slot="combine")
    else:
        show_chart(heatmap_of(aggregate_heads(view.pattern, how), view.q_labels, view.k_labels,
                              f"{AGGREGATIONS[how]} · layer {layer}", scale, "attn_agg", memo),
                   key="attn_agg_fig", slot="combine")
        if how == "max":
            st.caption("Max over heads: each cell is the largest weight any head put "
                       "there, so rows sum to more than 1.")


def induction_table(result: InductionResult, names: list[str], top: int = 10) -> dict:
    """The ``top`` induction heads, best first, as table columns."""
    best = result.ranking[:top]
    return {"layer": [r[0] for r in best], "head": [names[r[1]] for r in best],
            "induction score": [round(r[2], 3) for r in best]}


def induction_view(result: InductionResult, names: list[str]) -> None:
    columns = st.columns([2, 3], gap="large")
    columns[0].dataframe(induction_table(result, names), hide_index=True, width="stretch")
    with columns[1]:
        show_vega(head_map_chart(result.scores, "Induction score"), width="stretch",
                  key="attn_induction_map")
