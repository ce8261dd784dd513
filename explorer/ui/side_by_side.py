"""Two runs side by side on the Interventions page: the prompt's greedy continuation
without and with the ablation (streamed, one token of each in turn), and prompt A vs prompt
B (a chosen head's attention, the logit lens at the last position, both next-token
distributions), read from the shared runs (no forward of their own for A vs B).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

import explorer
from explorer.models.tokenizer import tokenizer_lock
from explorer.runs import lens
from explorer.ui.attention import pattern_csv
from explorer.ui.downloads import csv_button
from explorer.ui.export import show_chart
from explorer.ui.families import readout, stack_choice
from explorer.ui.gate import heavy_work, session_connected
from explorer.ui.interventions import (
    LENS_K,
    SECTION_MS,
    AblationChoice,
    ablation_edits_for,
    comparison_figure,
    current_choice,
    final_probs,
    lens_rows_of,
    or_message,
    prompt_ids,
)
from explorer.ui.layers import timed, token_texts
from explorer.ui.runs import PageRun, memo_figure, shared_run
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown
from explorer.viz import attention_heatmap
from explorer.viz.generation import alternatives_text, token_stream_html
from explorer.viz.layers import logit_lens_grid

log = logging.getLogger(__name__)

GENERATED = "int_generated"
REDRAW_EVERY_S = 0.1
DEFAULT_PROMPT_B = "The Colosseum is in the city of"
DECODER_TEXT_KEY = "int_decoder_text"  # the page's decoder-text box (T5)


# --------------------------------------------------------------------------- generate


@dataclass
class Continuation:
    """One generated continuation as drawn: pieces, probabilities, hovers, token labels."""

    texts: list[str]
    probs: list[float]
    hovers: list[str]
    tokens: list[str]

    def add(self, step: Any, lm: Any) -> None:
        labels = token_texts(lm.tokenizer, torch.tensor(step.top_ids)).tolist()
        self.texts.append(step.text)
        self.probs.append(step.prob)
        self.tokens.append(step.token)
        self.hovers.append(alternatives_text(labels, step.top_probs, step.token, step.entropy))


def draw_continuations(slots: list[Any], prompt: str, pair: list[Continuation]) -> None:
    for slot, continuation in zip(slots, pair, strict=True):
        slot.html(token_stream_html(continuation.texts, continuation.probs,
                                    continuation.hovers, continuation.tokens, prompt=prompt))


def generate_pair(lm: Any, page_run: PageRun, choice: AblationChoice, max_new: int,
                  slots: list[Any], prompt: str) -> list[Continuation]:
    """Greedy continuations without and with the ablation, one token of each in turn,
    redrawn as they grow."""
    ids = prompt_ids(lm, page_run)
    streams = [explorer.generate(lm, ids, max_new_tokens=max_new, temperature=0.0),
               explorer.generate(lm, ids, max_new_tokens=max_new, temperature=0.0,
                                 edits=ablation_edits_for(lm, page_run, choice))]
    pair = [Continuation([], [], [], []) for _ in streams]
    active, drawn = [True, True], 0.0
    while any(active):
        for i, steps in enumerate(streams):
            if active[i]:
                step = next(steps, None)
                active[i] = step is not None
                if step is not None:
                    pair[i].add(step, lm)
        if time.perf_counter() - drawn >= REDRAW_EVERY_S or not any(active):
            if not session_connected():  # the tab closed: free the slot for others
                break
            draw_continuations(slots, prompt, pair)
            drawn = time.perf_counter()
    return pair


@st.fragment
def generate_section(lm: Any, page_run: PageRun) -> None:
    with timed("generate", SECTION_MS):
        if lm.config.kind == "encoder":
            st.info(f"{escape_markdown(lm.name)} is an encoder: it fills in masked tokens but "
                    "does not generate text. Pick a decoder or a T5 to generate.")
            return
        seq2seq = lm.config.kind == "encoder-decoder"
        st.caption("Greedy continuations of the page's prompt, without and with the ablation "
                   "set on the **Ablate** tab." + (
                       " T5 reads the prompt with its encoder and writes new text from its "
                       "decoder start token." if seq2seq else ""))
        columns = st.columns([2, 1, 5])
        max_new = columns[0].number_input("New tokens", 1, 64, 24, **in_url("int_gen_max"))
        start = columns[1].button("Generate", type="primary", key="int_gen_start")
        choice = current_choice(lm)
        if choice is None:
            st.info("Pick something to ablate on the **Ablate** tab first.")
            return
        st.markdown(f"**{escape_markdown(choice.summary)}**")
        prompt = ""  # T5 writes new text: nothing to continue
        if not seq2seq:
            with tokenizer_lock(lm.tokenizer):
                prompt = lm.tokenizer.decode(prompt_ids(lm, page_run)[0].tolist(),
                                             skip_special_tokens=True)
        left, right = st.columns(2, gap="large")
        left.markdown("**Without the ablation**")
        right.markdown("**With the ablation**")
        slots = [left.empty(), right.empty()]
        key = (page_run.key, choice, int(max_new))
        if start:
            def generate() -> list[Continuation]:
                with heavy_work("generation"):
                    return generate_pair(lm, page_run, choice, int(max_new), slots, prompt)

            if (pair := or_message(generate)) is not None:
                st.session_state[GENERATED] = (key, pair)
        stored = st.session_state.get(GENERATED)
        if stored is None or stored[0] != key:
            st.caption("Press **Generate**.")
            return
        draw_continuations(slots, prompt, stored[1])
        same = sum(1 for _ in _common_prefix(stored[1][0].texts, stored[1][1].texts))
        st.caption(f"The two continuations agree on their first {same} of "
                   f"{len(stored[1][0].texts)} tokens. Colour: the probability of each chosen "
                   "token (red unlikely, blue sure); hover for the alternatives.")


def _common_prefix(a: list[str], b: list[str]):
    for x, y in zip(a, b, strict=False):
        if x != y:
            return
        yield x


# --------------------------------------------------------------------------- compare A vs B


def run_b(lm: Any) -> PageRun | None:
    """The shared run of prompt B (T5: with the page's decoder text), or None after saying
    why there is none."""
    text = st.text_area("Prompt B", DEFAULT_PROMPT_B, **in_url("int_prompt_b"), height=70,
                        max_chars=4_000)
    if not text.strip():
        st.info("Type a second prompt to compare with.")
        return None
    try:
        return shared_run(lm, text, st.session_state.get(DECODER_TEXT_KEY) or None)
    except Exception as exc:  # the model may refuse the text: say so, keep the page
        log.exception("prompt B failed")
        st.error(f"The model could not run prompt B: {type(exc).__name__}.")
        return None


@st.fragment
def compare_section(lm: Any, page_run: PageRun) -> None:
    cfg = lm.config
    other = run_b(lm)
    if other is None:
        return
    with timed("compare", SECTION_MS):
        runs = {"A": page_run, "B": other}
        stack = stack_choice(lm, "Attention of", "int_cmp_stack")
        n_layers = page_run.run.stacks[stack].n_layers
        if st.session_state.get("int_cmp_layer") not in range(n_layers):
            st.session_state["int_cmp_layer"] = n_layers - 1
        pick = st.columns(2)
        layer = pick[0].selectbox("Layer", range(n_layers), **in_url("int_cmp_layer"))
        head = pick[1].selectbox("Head", range(cfg.n_heads), **in_url("int_cmp_head"))
        columns = st.columns(2, gap="large")
        for column, (name, each) in zip(columns, runs.items(), strict=True):
            with column:
                attention_panel(name, each, stack, layer, head)
        compare_outputs(lm, runs)


def attention_panel(name: str, page_run: PageRun, stack: str, layer: int, head: int) -> None:
    spec = page_run.stack(stack).spec
    queries, keys = page_run.labels[spec.queries], page_run.labels[spec.keys]
    where = "" if stack == "self" else f" ({stack})"
    show_chart(memo_figure((page_run.key, name, "attn", stack, layer, head), lambda: (
        attention_heatmap(page_run.run.layer(stack, layer)[head], queries, keys,
                          f"{name}{where} · layer {layer} · head {head}")), "int_compare"),
        key=f"int_cmp_attn_{name}", csv=False)
    st.download_button(f"Download {name}'s pattern (CSV)", key=f"int_cmp_attn_csv_{name}",
                       data=lambda: pattern_csv(page_run.run.layer(stack, layer)[head],
                                                queries, keys),
                       file_name=f"attention_{name}_{stack}_L{layer}_H{head}.csv",
                       mime="text/csv", on_click="ignore", icon=":material/download:")


def compare_outputs(lm: Any, runs: dict[str, PageRun]) -> None:
    """The lens rows at each prompt's read-out position (the last one, or an encoder's mask
    token) and both output distributions there."""
    rows = lens_rows_of(runs["A"])
    where = {name: readout(lm, each) for name, each in runs.items()}
    summaries = {name: lens(each.run, rows, [where[name].position], LENS_K)
                 for name, each in runs.items()}
    top_ids = torch.cat([s.top_ids for s in summaries.values()], 1)  # [R, 2, k]
    top_probs = torch.cat([s.top_probs for s in summaries.values()], 1)
    col_labels = [f"{name} · {each.labels[where[name].sequence][where[name].position]}"
                  for name, each in runs.items()]
    row_labels = [row.label for row in rows]
    keys = tuple(each.key for each in runs.values())
    left, right = st.columns(2, gap="large")
    with left:
        show_chart(memo_figure((*keys, "lens"), lambda: logit_lens_grid(
            token_texts(lm.tokenizer, top_ids), top_probs, top_probs[..., 0], row_labels,
            col_labels, "prob", "Logit lens where A and B are read out"), "int_compare"),
            key="int_cmp_lens", csv=False)
        csv_button("Download the lens rows (CSV)", lambda: pd.DataFrame.from_records(
            [{"row": row, "prompt": col[0], "input": col, "rank": rank + 1,
              "token": texts[r, c, rank], "probability": float(top_probs[r, c, rank])}
             for texts in [token_texts(lm.tokenizer, top_ids)]
             for r, row in enumerate(row_labels) for c, col in enumerate(col_labels)
             for rank in range(top_ids.shape[-1])]), "compare_lens.csv", "int_cmp_lens_csv")
    first, second = (final_probs(runs[name], where[name].position) for name in ("A", "B"))
    figure, frame = comparison_figure(lm, first, second, ("A", "B"),
                                      f"{where['A'].title}: A and B")
    with right:
        show_chart(memo_figure((*keys, "dist"), lambda: figure, "int_compare"),
                   key="int_cmp_dist", csv=False)
        csv_button("Download both distributions (CSV)", lambda: frame,
                   "compare_next_token.csv", "int_cmp_csv")
