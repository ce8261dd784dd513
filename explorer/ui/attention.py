"""Streamlit glue for the attention page: the cached analysis of a prompt and its views' state.

One :class:`PageRun` per (model, prompt) is held by ``st.cache_resource`` (shared read-only by
every session; :class:`explorer.analysis.attention_run.AttentionRun` keeps ``resid_pre`` per
layer and recomputes a layer's patterns when a view asks). :func:`layer_view` gives one layer as
shown (special tokens hidden and rows renormalised when asked), memoised per session so that a
head switch reuses the layer. The selected layer/head live in ``st.session_state`` and are kept
in sync between the clickable head map and the select boxes (:func:`sync_head_from_map`).
Head roles: Clark et al. 2019; induction heads: Olsson et al. 2022; rollout: Abnar & Zuidema
2020.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from explorer.analysis.attention import gqa_groups, renormalise_without
from explorer.analysis.attention_run import (
    AttentionRun,
    InductionResult,
    StackRun,
    Tokens,
    analyse_attention,
    induction_test,
)
from explorer.ui.resources import model_label
from explorer.ui.state import DEFAULT_PROMPT, get_prompt
from explorer.ui.widgets import chips_for, is_new_click, tokenize
from explorer.viz import head_map_chart

log = logging.getLogger(__name__)

MAX_TOKENS = 1_024
LAYER_KEY, HEAD_KEY, MAP_KEY, SEEN_KEY = "attn_layer", "attn_head", "attn_head_map", "attn_seen"
SCORE_KEY = "attn_score"
VIEW_MEMO_KEY = "attn_layer_views"
VIEW_MEMO_SIZE = 3
FIGURE_MEMO_KEY = "attn_figures"
FIGURE_MEMO_SIZES = {"head": 4, "layer": 8, "map": 4}
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
DEFAULT_ATTENTION_PROMPT = (
    "The Eiffel Tower is in Paris and the Colosseum is in Rome. "
    "The Eiffel Tower is in Paris and the Colosseum is in Rome."
)


@dataclass
class PageRun:
    """An analysed prompt: the run, each sequence's display labels, and what was cut."""

    key: str  # identifies (model, prompt) for per-session memos
    run: AttentionRun
    labels: dict[str, list[str]]  # "source" / "target" -> "pos: token" display labels
    cut: dict[str, int]  # sequence -> original token count, where it was cut

    def stack(self, name: str) -> StackRun:
        return self.run.stacks[name]


def _tokens(lm: Any, text: str, limit: int) -> tuple[Tokens, list[str], int | None]:
    """(Tokens, display labels, original count when cut) of ``text`` with special tokens."""
    ids, pieces = tokenize(model_label(lm), text, lm.tokenizer)
    cut = len(ids) if len(ids) > limit else None
    ids, pieces = ids[:limit], pieces[:limit]
    chips = chips_for(lm.tokenizer, ids, pieces)
    special = torch.tensor([chip.special for chip in chips], dtype=torch.bool)
    labels = [f"{chip.position}: {chip.label}" for chip in chips]
    return Tokens(torch.tensor(ids, dtype=torch.long), list(pieces), special), labels, cut


@st.cache_resource(max_entries=4, show_spinner=False)
def analyse_prompt(label: str, text: str, target_text: str | None, _lm: Any) -> PageRun:
    """Tokenize and analyse once per (model, prompt); shared by every session."""
    cfg = _lm.config
    limit = min(MAX_TOKENS, cfg.n_ctx)
    source, source_labels, source_cut = _tokens(_lm, text, limit)
    labels, cut = {"source": source_labels}, {}
    if source_cut:
        cut["source"] = source_cut
    target = None
    if cfg.kind == "encoder-decoder":
        target, labels["target"], target_cut = _tokens(_lm, target_text or text, limit)
        if target_cut:
            cut["target"] = target_cut
    run = analyse_attention(_lm.model, cfg.kind, cfg.n_heads, source, target)
    return PageRun(f"{label}|{hash((text, target_text))}", run, labels, cut)


@st.cache_data(max_entries=8, show_spinner=False)
def run_induction_test(label: str, half_len: int, seed: int, _lm: Any) -> InductionResult:
    """Rank this model's heads by induction score on repeated random tokens (cached)."""
    tokenizer = _lm.tokenizer
    bos = getattr(tokenizer, "bos_token_id", None)
    specials = list(getattr(tokenizer, "all_special_ids", []) or [])
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

    Memoised per session (the last few layers), so switching heads reuses the layer.
    """
    memo: OrderedDict = st.session_state.setdefault(VIEW_MEMO_KEY, OrderedDict())
    key = (page_run.key, stack_name, layer, hide_special)
    if key in memo:
        memo.move_to_end(key)
        return memo[key]
    stack = page_run.stack(stack_name)
    pattern = page_run.run.layer(stack_name, layer)
    q_labels = page_run.labels[stack.spec.queries]
    k_labels = page_run.labels[stack.spec.keys]
    hidden = 0
    q_keep, k_keep = ~stack.queries.special, ~stack.keys.special
    if hide_special and (stack.queries.special.any() or stack.keys.special.any()):
        if stack.spec.cross:  # keys and queries differ: drop keys, renormalise, drop queries
            kept = pattern[..., k_keep]
            pattern = (kept / kept.sum(-1, keepdim=True).clamp_min(1e-12))[:, q_keep]
        elif bool(q_keep.any()):
            pattern = renormalise_without(pattern, q_keep)
        else:
            q_keep = k_keep = torch.ones_like(q_keep)
        q_labels = [lab for lab, keep in zip(q_labels, q_keep.tolist(), strict=True) if keep]
        k_labels = [lab for lab, keep in zip(k_labels, k_keep.tolist(), strict=True) if keep]
        hidden = int((~k_keep).sum())
    view = LayerView(pattern, q_labels, k_labels, hidden)
    memo[key] = view
    while len(memo) > VIEW_MEMO_SIZE:
        memo.popitem(last=False)
    return view


def memo_figure(key: tuple, build: Callable[[], Any], slot: str = "layer") -> Any:
    """A figure built once per session for ``key`` (its inputs), kept in a small LRU per
    ``slot``: per-head figures ("head") churn on every head switch and must not push out the
    layer's figures ("layer"), which a head switch reuses. Figures are only read afterwards."""
    memos: dict = st.session_state.setdefault(FIGURE_MEMO_KEY, {})
    memo: OrderedDict = memos.setdefault(slot, OrderedDict())
    if key in memo:
        memo.move_to_end(key)
        return memo[key]
    memo[key] = figure = build()
    while len(memo) > FIGURE_MEMO_SIZES.get(slot, 4):
        memo.popitem(last=False)
    return figure


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


def default_head(stack: StackRun) -> tuple[str, int, int]:
    """(score, layer, head) to open first: the strongest induction head when the prompt
    repeats itself, else the strongest previous-token head (Olsson et al. 2022)."""
    for name in DEFAULT_SCORES:
        scores = stack.scores.get(name)
        if scores is None or not bool(torch.isfinite(scores).any()):
            continue
        best = torch.nan_to_num(scores, nan=-math.inf)
        if name == "entropy":
            best = -torch.nan_to_num(scores, nan=math.inf)
        flat = int(best.flatten().argmax())
        return name, flat // stack.n_heads, flat % stack.n_heads
    return DEFAULT_SCORES[-1], 0, 0


def init_selection(stack: StackRun) -> None:
    """First visit: open :func:`default_head`. Later: keep the selection valid for the current
    model (an out-of-range layer/head is reset)."""
    score, layer, head = default_head(stack)
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


def spreadsheet_safe(value: Any) -> Any:
    """Text that a spreadsheet would read as a formula (``= + - @``, tab, CR) gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


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
