"""Streamlit glue for the Interventions page's causal views: activation patching of a clean
and a corrupted prompt (Meng et al. 2022; Heimersheim and Nanda 2024), and direct logit
attribution of a logit difference to every head and MLP (Elhage et al. 2021).

A patching grid is computed on request (a button; it runs one batched forward per chunk of
patches in `explorer.interventions.patch_grid`, inside :func:`heavy_work`, with a progress
bar) and kept per session; clicking a cell (or picking it in the select boxes) shows that
one patched run's next-token distribution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
import torch

from explorer.interventions import (
    SITE_LABELS,
    GridPlan,
    column_labels,
    head_attribution,
    logit_diff_metric,
    outcome,
    patch_grid,
    patched_outcome,
    plan_grid,
)
from explorer.runs import LRUMemo, contributions_unavailable
from explorer.ui.downloads import csv_button
from explorer.ui.export import show_chart, show_vega
from explorer.ui.families import mask_position, readout, stack_choice
from explorer.ui.gate import heavy_work, server_limits
from explorer.ui.interventions import (
    SECTION_MS,
    TOP_K,
    clicked_point,
    comparison_figure,
    final_probs,
    or_message,
    probs_of,
)
from explorer.ui.layers import resolve_target, timed, token_texts
from explorer.ui.resources import model_label
from explorer.ui.runs import PageRun, memo_figure, prompt_tokens
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown, is_new_click
from explorer.viz.interventions import attribution_heatmap, patching_frame, patching_heatmap

log = logging.getLogger(__name__)

DEFAULT_CLEAN = "When Mary and John went to the store, John gave a drink to"
DEFAULT_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
MAX_PATCH_TOKENS = 64
GRIDS, MAP_KEY, SEEN_KEY = "int_patch_grids", "int_patch_map", "int_patch_seen"
CELL_LAYER, CELL_COLUMN = "int_patch_layer", "int_patch_column"


def session_grids() -> LRUMemo:
    """This session's computed patching grids (a few, most recent kept)."""
    return st.session_state.setdefault(GRIDS, LRUMemo(max_entries=8))


def patch_prompts(lm: Any) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
    """Clean and corrupted ids ``[1, N]`` and the column labels, or None after saying why
    (an empty prompt, or prompts of different lengths)."""
    columns = st.columns(2)
    texts = [columns[0].text_input("Clean prompt", DEFAULT_CLEAN, **in_url("int_clean"),
                                   max_chars=1_000),
             columns[1].text_input("Corrupted prompt", DEFAULT_CORRUPT, **in_url("int_corrupt"),
                                   max_chars=1_000)]
    if not all(t.strip() for t in texts):
        st.info("Type a clean and a corrupted prompt.")
        return None
    limit = min(MAX_PATCH_TOKENS, lm.config.n_ctx)
    (clean, clean_labels, clean_cut), (corrupt, corrupt_labels, corrupt_cut) = (
        prompt_tokens(lm, t, limit) for t in texts)
    if clean_cut or corrupt_cut:
        st.warning(f"Patching reads at most {limit} tokens of each prompt; the rest is cut.")
    if len(clean) != len(corrupt):
        st.warning(
            f"The clean prompt is {len(clean)} tokens and the corrupted one {len(corrupt)}: "
            "patching swaps activations position by position, so both must tokenise to the "
            "same length. Change a word for another of the same token count (e.g. one name "
            "for another).")
        return None
    labels = [a if a == b else f"{a} / {b.split(': ', 1)[1]}"
              for a, b in zip(clean_labels, corrupt_labels, strict=True)]
    return clean.ids[None].to(lm.device), corrupt.ids[None].to(lm.device), labels


@dataclass(frozen=True)
class PatchSetup:
    """What a grid patches: the prompts' ids ``[1, N]``, the column labels, the stack (T5:
    ``"encoder."`` or ``"decoder."``), the decoder ids both runs share (T5) and the
    read-out position (the last; an encoder's mask token)."""

    clean: torch.Tensor
    corrupt: torch.Tensor
    labels: list[str]
    stack: str = ""
    decoder_ids: torch.Tensor | None = None
    position: int = -1

    @property
    def key(self) -> tuple:
        decoder = None if self.decoder_ids is None else tuple(self.decoder_ids[0].tolist())
        return (tuple(self.clean[0].tolist()), tuple(self.corrupt[0].tolist()), self.stack,
                decoder, self.position)

    @property
    def where(self) -> dict:
        """Keyword arguments of `patch_grid` and `patched_outcome`."""
        return {"decoder_ids": self.decoder_ids, "stack": self.stack,
                "position": self.position}


def setup_for(lm: Any, page_run: PageRun, clean: torch.Tensor, corrupt: torch.Tensor,
              labels: list[str]) -> PatchSetup:
    """The stack radio (T5) and where the grid reads the model's output."""
    if lm.config.kind == "encoder-decoder":
        stack = stack_choice(lm, "Patch in", "int_patch_stack", ["encoder", "decoder"])
        decoder = page_run.run.streams["decoder"].tokens.ids[None].to(lm.device)
        if stack == "decoder":
            labels = page_run.labels["target"]
        st.caption("Both runs read the page's decoder text; the metric is read at its last "
                   "position.")
        return PatchSetup(clean, corrupt, labels, f"{stack}.", decoder)
    position = -1
    if lm.config.kind == "encoder":
        masked = mask_position(lm, clean[0])
        position = -1 if masked is None else masked
        st.caption("The metric is read at " + (
            f"the clean prompt's mask token (position {masked})." if masked is not None else
            "the last position; put a mask token in both prompts to read it there."))
    return PatchSetup(clean, corrupt, labels, position=position)


def predictions(lm: Any, setup: PatchSetup) -> tuple:
    """The unpatched clean and corrupted outcomes (once per session per prompt pair)."""
    where = {k: v for k, v in setup.where.items() if k != "stack"}

    def compute() -> tuple:
        with heavy_work("patching"):
            return (outcome(lm.model, setup.clean, k=TOP_K, **where),
                    outcome(lm.model, setup.corrupt, k=TOP_K, **where))

    return memo_figure((model_label(lm), *setup.key, "outcomes"), compute,
                       "int_patch_outcomes")


def token_choice(lm: Any, label: str, key: str, default: int) -> int | None:
    """A single-token text box; empty means ``default`` (shown in the label)."""
    shown = token_texts(lm.tokenizer, torch.tensor([default]))[0]
    typed = st.text_input(f"{label} (empty: “{shown}”)", **in_url(key), max_chars=64)
    token, problem = resolve_target(lm.tokenizer, typed)
    if problem:
        st.warning(problem)
        return None
    return default if token is None else token


@st.fragment
def patching_section(lm: Any, page_run: PageRun) -> None:
    st.caption("Run the corrupted prompt, but copy one activation from the clean run; if the "
               "answer comes back, that activation carries what differs. The metric is the "
               "logit difference between the clean answer and the corrupted one, normalised "
               "so 1 = the clean run and 0 = the corrupted run.")
    prompts = patch_prompts(lm)
    if prompts is None:
        return
    setup = setup_for(lm, page_run, *prompts)
    with timed("patching", SECTION_MS):
        unpatched = or_message(lambda: predictions(lm, setup))
        if unpatched is None:
            return
        clean, corrupt = unpatched
        columns = st.columns([1, 1, 2])
        with columns[0]:
            answer = token_choice(lm, "Answer", "int_answer", int(clean.top_ids[0]))
        with columns[1]:
            distractor = token_choice(lm, "Distractor", "int_distractor",
                                      int(corrupt.top_ids[0]))
        site = columns[2].radio("Patch", list(SITE_LABELS), **in_url("int_site"),
                                format_func=SITE_LABELS.get)
        if answer is None or distractor is None:
            return
        if answer == distractor:
            st.warning("The answer and the distractor are the same token, so their logit "
                       "difference is 0 everywhere; type a different distractor.")
            return
        key = (model_label(lm), *setup.key, site, answer, distractor)
        plan = plan_grid(lm.model, setup.clean, setup.corrupt, site, **setup.where)
        n_runs = plan.runs
        cap = server_limits().max_grid_cells
        if n_runs > cap:  # one visitor must not hold a shared server for minutes
            st.warning(f"This grid needs {n_runs:,} patched runs; this server allows "
                       f"{cap:,} (EXPLORER_MAX_GRID_CELLS). Use shorter prompts.")
            return
        if st.button("Run the patching grid", type="primary", key="int_patch_run"):
            run_grid(lm, setup, site, answer, distractor, key)
        grid = session_grids().peek(key)
        if grid is None:
            st.caption(f"Press **Run the patching grid**: {plan_summary(plan)}")
            return
        show_grid(lm, grid, key, setup, (answer, distractor))


def plan_summary(plan: GridPlan) -> str:
    """What a grid will run, in words (the cells a shared prefix spares, and why)."""
    cells = plan.shape[0] * plan.shape[1]
    text = f"{plan.runs:,} patched runs for {cells:,} cells."
    if plan.packed and plan.first_difference:
        text += (f" The prompts agree on their first {plan.first_difference:,} tokens, so "
                 "nothing before that can differ: those positions keep the corrupted run's "
                 "value without a run, and each run recomputes only the positions from its "
                 "patch (or the first difference) on.")
    return text


def run_grid(lm: Any, setup: PatchSetup, site: str, answer: int, distractor: int,
             key: tuple) -> None:
    bar = st.progress(0.0, text="Patching…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Patched {done:,} of {total:,} runs")

    def compute() -> Any:
        with heavy_work("patching grid"):
            return patch_grid(lm.model, setup.clean, setup.corrupt, site,
                              logit_diff_metric(answer, distractor), progress=progress,
                              **setup.where)

    grid = or_message(compute)
    bar.empty()
    if grid is not None:
        session_grids().put(key, grid)


def grid_labels(lm: Any, grid: Any, labels: list[str]) -> tuple[list[str], list[str], str]:
    """Row labels, column labels and the column axis title of a grid."""
    rows = [f"L{layer}" for layer in range(grid.values.shape[0])]
    columns = column_labels(grid.site, labels, lm.config.n_heads)
    return rows, columns, "head" if grid.site == "head" else "position"


def selected_cell(n_rows: int, n_cols: int, row_labels: list[str], col_labels: list[str]
                  ) -> tuple[int, int]:
    """The picked cell: a new click on the grid moves the select boxes; they pick too."""
    cell = clicked_point(st.session_state.get(MAP_KEY), "cell", ("row_index", "col_index"))
    if cell is not None and is_new_click(cell, SEEN_KEY) and cell[0] < n_rows \
            and cell[1] < n_cols:
        st.session_state[CELL_LAYER], st.session_state[CELL_COLUMN] = cell
    for name, n in ((CELL_LAYER, n_rows), (CELL_COLUMN, n_cols)):
        if st.session_state.get(name) not in range(n):
            st.session_state[name] = n - 1
    pick = st.columns(2)
    row = pick[0].selectbox("Layer", range(n_rows), **in_url(CELL_LAYER),
                            format_func=lambda r: row_labels[r])
    column = pick[1].selectbox("Column", range(n_cols), **in_url(CELL_COLUMN),
                               format_func=lambda c: col_labels[c])
    return row, column


def show_grid(lm: Any, grid: Any, key: tuple, setup: PatchSetup, tokens: tuple[int, int]
              ) -> None:
    row_labels, col_labels, column_title = grid_labels(lm, grid, setup.labels)
    n_rows, n_cols = grid.values.shape
    answer, distractor = token_texts(lm.tokenizer, torch.tensor(tokens)).tolist()
    st.caption(f"Metric: logit(“{escape_markdown(answer)}”) − logit(“"
               f"{escape_markdown(distractor)}”): {grid.clean:+.3f} on the clean run, "
               f"{grid.corrupt:+.3f} on the corrupted run.")
    if abs(grid.clean - grid.corrupt) < 1e-6:
        st.warning("Both prompts give the same metric, so no patch can move it between them "
                   "(the normalised grid is empty). Pick prompts, or an answer and a "
                   "distractor, that the model tells apart.")
    left, right = st.columns([3, 2], gap="large")
    with left:
        row, column = selected_cell(n_rows, n_cols, row_labels, col_labels)
        chart = patching_heatmap(grid.values, grid.normalised, row_labels, col_labels,
                                 f"Patching: {SITE_LABELS[grid.site].lower()}", column_title,
                                 selected=(row, column))
        show_vega(chart, csv=False, on_select="rerun", selection_mode="cell", key=MAP_KEY,
                        width="stretch")
        csv_button("Download the grid (CSV)", lambda: patching_frame(
            grid.values, grid.normalised, row_labels, col_labels),
            f"patching_{grid.site}.csv", "int_patch_csv")
    with right:
        patched = memo_figure((*key, row, column), lambda: patched_outcome(
            lm.model, setup.clean, setup.corrupt, grid.site, row, column, k=TOP_K,
            **setup.where), "int_patch_outcomes")
        corrupt = predictions(lm, setup)[1]
        figure, frame = comparison_figure(
            lm, probs_of(corrupt), probs_of(patched), ("corrupted", "patched"),
            f"Patched {row_labels[row]} · {col_labels[column]}")
        show_chart(figure, key="int_patch_cell_fig", csv=False)
        st.caption(f"This cell: metric {float(grid.values[row, column]):+.3f}, normalised "
                   f"{float(grid.normalised[row, column]):.3f}. Click another cell of the grid "
                   "(or pick it above) to see its patched run.")
        csv_button("Download this patched run's distribution (CSV)", lambda: frame,
                   "patched_cell.csv", "int_patch_cell_csv")


# --------------------------------------------------------------------------- attribution


@st.fragment
def attribution_section(lm: Any, page_run: PageRun) -> None:
    run = page_run.run
    if (why := contributions_unavailable(run)) is not None:
        st.info(f"Direct logit attribution is not available for {escape_markdown(lm.name)}: "
                f"{why}.")
        return
    with timed("attribution", SECTION_MS):
        where = readout(lm, page_run)
        labels = page_run.labels[where.sequence]
        if st.session_state.get("int_dla_pos") not in labels:
            st.session_state["int_dla_pos"] = labels[where.position]
        columns = st.columns([2, 1, 1])
        position = labels.index(columns[0].selectbox(
            "Position", labels, **in_url("int_dla_pos"),
            help="The logits that predict the token after this position."))
        top = predicted_top(lm, page_run, position)
        with columns[1]:
            target = token_choice(lm, "Target", "int_dla_target", top[0])
        with columns[2]:
            distractor = token_choice(lm, "Distractor", "int_dla_distractor", top[1])
        if target is None or distractor is None:
            return
        parts = run.derive(("head_attribution", position, target, distractor),
                           lambda: head_attribution(run, position, target, distractor))
        names = token_texts(lm.tokenizer, torch.tensor([target, distractor])).tolist()
        heads, head_labels = attribution_heads(parts)
        note = (f"heads {float(heads.sum()):+.3f} + MLPs {float(parts.mlps.sum()):+.3f} + "
                f"embeddings {parts.embed:+.3f} + biases {parts.biases:+.3f} = "
                f"{parts.total:+.3f} · the model's logit difference {parts.logit_diff:+.3f}")
        title = (f"Direct contributions to logit(“{names[0]}”) − logit(“{names[1]}”) "
                 f"after {labels[position]}")
        show_chart(memo_figure((page_run.key, "dla", position, target, distractor),
                                    lambda: attribution_heatmap(heads, parts.mlps, title, note,
                                                                head_labels), "int_dla"),
                   key="int_dla_fig", csv=False)
        if parts.cross is not None:
            st.caption("T5's decoder: H0… are its self-attention heads, X0… its "
                       "cross-attention heads (reading the encoder).")
        st.caption(
            "What each head and each MLP wrote into the residual stream at this position, "
            "read through the final norm (its scale frozen at the real run's value) and the "
            "difference of the two unembedding rows. With the embeddings and the biases they "
            f"add up to the real logit difference: {parts.total:.4f} vs "
            f"{parts.logit_diff:.4f}.")
        csv_button("Download the attribution (CSV)", lambda: attribution_frame(parts),
                   "logit_attribution.csv", "int_dla_csv")


def predicted_top(lm: Any, page_run: PageRun, position: int) -> tuple[int, int]:
    """The model's two most likely tokens at ``position`` (its output stream's)."""
    top = final_probs(page_run, position).topk(2).indices.tolist()
    return top[0], top[-1]


def attribution_heads(parts: Any) -> tuple[torch.Tensor, list[str]]:
    """Every head's contribution ``[L, H]`` and the column labels; T5's decoder adds its
    cross-attention heads as more columns ``[L, 2H]`` (``X0``…)."""
    n_heads = parts.heads.shape[1]
    labels = [f"H{h}" for h in range(n_heads)]
    if parts.cross is None:
        return parts.heads, labels
    return (torch.cat([parts.heads, parts.cross], 1),
            labels + [f"X{h}" for h in range(n_heads)])


def attribution_frame(parts: Any) -> pd.DataFrame:
    heads, head_labels = attribution_heads(parts)
    n_layers, n_heads = parts.heads.shape
    records = [{"part": f"L{layer} {head_labels[col]}", "layer": layer,
                "head": col % n_heads, "attention": "cross" if col >= n_heads else "self",
                "contribution": float(heads[layer, col])}
               for layer in range(n_layers) for col in range(heads.shape[1])]
    records += [{"part": f"L{layer} MLP", "layer": layer, "head": None,
                 "contribution": float(parts.mlps[layer])} for layer in range(n_layers)]
    records += [{"part": "embeddings", "layer": None, "head": None,
                 "contribution": parts.embed},
                {"part": "biases", "layer": None, "head": None, "contribution": parts.biases}]
    return pd.DataFrame.from_records(records)
