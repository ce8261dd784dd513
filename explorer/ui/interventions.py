"""Streamlit glue for the Interventions page: ablate heads, MLPs or layers and watch what
moves (the next-token distribution, the loss, the logit lens), generate with the ablation,
compare two prompts. Activation patching and direct logit attribution are in
`explorer.ui.patching`.

Every section is an ``st.fragment`` over the page's shared :class:`~explorer.ui.runs.PageRun`;
forwards with edits go through `explorer.interventions` inside :func:`heavy_work` and are
memoised in the run (``PromptRun.derive``), figures per session (:func:`memo_figure`).
Ablation: Olsson et al. 2022 (induction heads), Wang et al. 2022 (mean ablation); logit lens:
nostalgebraist 2020.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
import torch

from explorer.analysis.attention import HEAD_SCORES
from explorer.analysis.lens import LensSummary
from explorer.interventions import MODES, Ablation, Outcome, ablation_edits, outcome_of_run
from explorer.runs import Row, final_logprobs, lens, lens_stream, token_trajectory
from explorer.serving import GateTimeout
from explorer.ui.attention import default_head, head_map_spec
from explorer.ui.downloads import csv_button
from explorer.ui.export import show_chart, show_vega
from explorer.ui.families import (
    STACK_EDITS,
    edited_run,
    readout,
    run_inputs,
    stack_choice,
    stack_names,
)
from explorer.ui.gate import VisitorGone, busy_message, heavy_work
from explorer.ui.layers import timed, token_texts
from explorer.ui.runs import PageRun, memo_figure
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown, is_new_click
from explorer.viz.interventions import distribution_comparison, lens_difference_grid

log = logging.getLogger(__name__)
T = TypeVar("T")

SECTION_MS = "interventions_ms"
TOP_K = 10
LENS_K = 5
LENS_POSITIONS = 12  # the lens difference shows the last positions of the prompt
HEADS_KEY, MLPS_KEY, LAYERS_KEY = "int_heads", "int_mlps", "int_layers"
MODE_KEY, MEAN_OVER_KEY, REFERENCE_KEY = "int_mode", "int_mean_over", "int_reference"
MAP_KEY, SEEN_KEY, SCORE_KEY = "int_head_map", "int_head_seen", "int_score"
STACK_KEY = "int_stack"
GENERATED = "int_generated"
REDRAW_EVERY_S = 0.1
DEFAULT_REFERENCE = ("The weather was mild for the season. People walked along the river, "
                     "talked about their plans and stopped for coffee before going home.")
DEFAULT_PROMPT_B = "The Colosseum is in the city of"
MEAN_OVER = {"prompt": "this prompt's positions", "reference": "a reference text"}


def unsupported(lm: Any) -> str | None:
    """Why the page cannot intervene on this model, or None."""
    if getattr(lm.model, "head", None) is None:
        return (f"{escape_markdown(lm.name)} has no unembedding (no masked-LM head), so it "
                "predicts no tokens and there is no output to change. Pick a model with one: "
                "smollm2-135m, a BERT with its masked-LM head, or a T5.")
    return None


def prompt_ids(lm: Any, page_run: PageRun) -> torch.Tensor:
    """The page prompt's ids ``[1, N]`` on the model's device (T5: the encoder's)."""
    return run_inputs(lm, page_run)[0]


def lens_rows_of(page_run: PageRun) -> list[Row]:
    """The logit-lens rows of the run's output stream (T5: its decoder)."""
    return lens_rows(lens_stream(page_run.run).n_layers)


def head_name(head: tuple[int, int]) -> str:
    return f"L{head[0]}H{head[1]}"


def probs_of(result: Outcome) -> torch.Tensor:
    """Next-token probabilities ``[V]`` after the last position."""
    return result.logprobs_last.float().exp()


def paired_tokens(first: torch.Tensor, second: torch.Tensor, k: int) -> list[int]:
    """The first distribution's top-``k`` ids, then the second's that are new."""
    ids = first.topk(k).indices.tolist()
    return ids + [i for i in second.topk(k).indices.tolist() if i not in ids]


def comparison_figure(lm: Any, first: torch.Tensor, second: torch.Tensor,
                      names: tuple[str, str], title: str) -> tuple[Any, pd.DataFrame]:
    """Paired bars of two distributions ``[V]`` over both top-k, and their tidy frame."""
    ids = paired_tokens(first, second, TOP_K)
    tokens = token_texts(lm.tokenizer, torch.tensor(ids)).tolist()
    p, q = first[ids], second[ids]
    frame = pd.DataFrame({"token_id": ids, "token": tokens, names[0]: p.tolist(),
                          names[1]: q.tolist()})
    return distribution_comparison(tokens, p, q, names, title), frame


def final_probs(page_run: PageRun, position: int) -> torch.Tensor:
    """The model's output distribution ``[V]`` at ``position`` of its output stream (read
    off the run's last residual, no forward)."""
    return final_logprobs(page_run.run, position).exp()


# --------------------------------------------------------------------------- the ablation


@dataclass(frozen=True)
class AblationChoice:
    """What the user chose to ablate; ``reference`` is the text a mean ablation averages
    over (None: the prompt itself)."""

    ablation: Ablation
    reference: str | None

    @property
    def summary(self) -> str:
        over = "" if self.ablation.mode == "zero" else (
            " (means over the reference text)" if self.reference else " (means over the prompt)")
        described = self.ablation.describe()
        return described[:1].upper() + described[1:] + over


def current_stack(lm: Any) -> str:
    """The stack the Ablate tab edits (T5: encoder, decoder or cross-attention)."""
    names = stack_names(lm)
    stack = st.session_state.get(STACK_KEY)
    return stack if stack in names else names[0]


def current_choice(lm: Any) -> AblationChoice | None:
    """The ablation the widgets of the Ablate tab describe, or None when nothing is picked."""
    state = st.session_state
    stack = current_stack(lm)
    prefix, cross = STACK_EDITS[stack]
    heads, mlps, layers = (tuple(sorted(state.get(k) or ())) for k in
                           (HEADS_KEY, MLPS_KEY, LAYERS_KEY))
    if cross:  # the cross-attention stack has heads only; its MLPs are the decoder's
        mlps = layers = ()
    if not (heads or mlps or layers):
        return None
    mode = state.get(MODE_KEY, "zero")
    reference = None
    if mode == "mean" and state.get(MEAN_OVER_KEY) == "reference":
        reference = state.get(REFERENCE_KEY) or DEFAULT_REFERENCE
    return AblationChoice(Ablation(heads=heads, mlps=mlps, layers=layers, mode=mode,
                                   prefix=prefix, cross=cross), reference)


def ablation_edits_for(lm: Any, page_run: PageRun, choice: AblationChoice) -> dict:
    """The edits of ``choice``: the mean of a mean ablation is taken over the prompt (T5:
    its encoder and decoder texts) or over the reference text (T5: on both sides)."""
    reference = run_inputs(lm, page_run)
    if choice.reference is not None:
        text = lm.encode(choice.reference)[:, : lm.config.n_ctx]
        reference = (text, text) if len(reference) == 2 else (text,)
    return ablation_edits(lm.model, choice.ablation,
                          reference if len(reference) == 2 else reference[0])


def or_message(compute: Callable[[], T]) -> T | None:
    """``compute()``, or None after saying why not: the server was busy (no heavy-work slot
    in time), the tab closed while waiting, or the engine refused the input (ValueError)."""
    try:
        return compute()
    except GateTimeout as exc:
        st.warning(busy_message(exc))
    except VisitorGone:
        log.info("intervention dropped: its browser session closed while waiting")
    except ValueError as exc:  # e.g. a reference text longer than the context
        st.warning(escape_markdown(str(exc)))
    return None


def clicked_point(event: Any, param: str, fields: tuple[str, ...]) -> tuple[int, ...] | None:
    """The clicked point of a chart selection ``param`` as ints of ``fields``, or None."""
    try:
        selection = event["selection"] if isinstance(event, dict) else event.selection
        points = list(selection.get(param, []) or [])
        return tuple(int(points[0][f]) for f in fields) if points else None
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return None


def toggle_clicked_head(n_layers: int, n_heads: int) -> None:
    """A new click on the head map adds the head to the ablation, or removes it."""
    head = clicked_point(st.session_state.get(MAP_KEY), "head", ("layer", "head"))
    if head is None or not is_new_click(head, SEEN_KEY):
        return
    if head[0] in range(n_layers) and head[1] in range(n_heads):
        heads = list(st.session_state.get(HEADS_KEY) or [])
        st.session_state[HEADS_KEY] = [h for h in heads if h != head] if head in heads else [
            *heads, head]


def outlined_head_map(page_run: PageRun, stack: str, score_name: str,
                      heads: list[tuple[int, int]], n_layers: int) -> dict:
    """The head map of ``stack`` coloured by ``score_name`` with every ablated head
    outlined; no dimming of the other heads after a click (they are not deselected)."""
    score = HEAD_SCORES[score_name]
    spec = head_map_spec((page_run.key, "int", stack), page_run.run.scores(stack)[score_name],
                         score.label, not score.higher_is_role, (-1, -1),
                         min(max(18 * n_layers + 40, 200), 560))
    test = " || ".join(f"(datum.layer === {layer} && datum.head === {head})"
                       for layer, head in heads) or "false"
    encoding = {k: v for k, v in spec["encoding"].items() if k != "opacity"}
    encoding["stroke"] = {"condition": {"test": test, "value": "#ff2b2b"}, "value": None}
    encoding["strokeWidth"] = {"condition": {"test": test, "value": 3}, "value": 0}
    return {**spec, "encoding": encoding}


def clear_selection() -> None:
    """Another stack has other heads and layers: start its selection empty."""
    for key in (HEADS_KEY, MLPS_KEY, LAYERS_KEY, SEEN_KEY):
        st.session_state.pop(key, None)


def ablation_controls(lm: Any, page_run: PageRun) -> None:
    """The stack (T5), the head map, the lists of heads, MLPs and layers, zero or mean."""
    stack = stack_choice(lm, "Ablate in", STACK_KEY, on_change=clear_selection)
    n_layers, n_heads = page_run.run.stacks[stack].n_layers, lm.config.n_heads
    toggle_clicked_head(n_layers, n_heads)
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    state = st.session_state  # another model or stack: drop what does not exist
    for key, valid in ((HEADS_KEY, heads), (MLPS_KEY, range(n_layers)),
                       (LAYERS_KEY, range(n_layers))):
        if key in state and any(v not in valid for v in state[key] or []):
            state[key] = [v for v in state[key] if v in valid]
    scores = page_run.run.scores(stack)
    shown = [name for name in HEAD_SCORES if not bool(scores[name].isnan().all())]
    left, right = st.columns([2, 3], gap="large")
    with left:
        if state.get(SCORE_KEY) not in shown:
            state[SCORE_KEY] = default_head(scores, n_heads)[0]
            if state[SCORE_KEY] not in shown:  # e.g. cross-attention: no square scores
                state[SCORE_KEY] = shown[0]
        score_name = st.selectbox("Colour heads by", shown, **in_url(SCORE_KEY),
                                  format_func=lambda s: HEAD_SCORES[s].label)
        show_vega(outlined_head_map(page_run, stack, score_name, state.get(HEADS_KEY) or [],
                                    n_layers),
                  on_select="rerun", selection_mode="head", key=MAP_KEY, width="stretch")
        st.caption("Click a head to add it to the ablation (outlined in red); remove it in "
                   "the list on the right.")
    with right:
        z = "cross_attn.z" if STACK_EDITS[stack][1] else "attn.z"
        st.multiselect("Heads", heads, **in_url(HEADS_KEY), format_func=head_name,
                       help=f"Each head's output ({z}) before the output projection.")
        if not STACK_EDITS[stack][1]:
            st.multiselect("MLPs", range(n_layers), **in_url(MLPS_KEY),
                           format_func=lambda m: f"L{m}")
            st.multiselect("Whole layers (attention and MLP)", range(n_layers),
                           **in_url(LAYERS_KEY), format_func=lambda m: f"L{m}")
        mode = st.radio("Replace with", list(MODES), **in_url(MODE_KEY), horizontal=True,
                        format_func={"zero": "zero", "mean": "the mean activation"}.get)
        if mode == "mean":
            over = st.radio("Mean over", list(MEAN_OVER), **in_url(MEAN_OVER_KEY),
                            horizontal=True, format_func=MEAN_OVER.get)
            if over == "reference":
                st.text_area("Reference text", DEFAULT_REFERENCE, **in_url(REFERENCE_KEY),
                             height=80, max_chars=4_000)


# --------------------------------------------------------------------------- ablate


@dataclass(frozen=True)
class AblationResult:
    """The prompt before and after: next-token outcomes, the edited run's lens at the lens
    positions, and the probability there of the unedited lens's top-1 token ``[R, C]``."""

    before: Outcome
    after: Outcome
    lens_after: LensSummary
    old_top_after: torch.Tensor


def lens_rows(n_layers: int) -> list[Row]:
    return [Row(-1), *(Row(layer) for layer in range(n_layers))]


def ablation_result(lm: Any, page_run: PageRun, choice: AblationChoice, positions: list[int]
                    ) -> AblationResult:
    """Before and after the ablation, computed once per run, choice and positions: one
    edited run of the prompt, read like the shared run (outcome, lens)."""
    run, where = page_run.run, readout(lm, page_run)
    rows = lens_rows_of(page_run)

    def compute() -> AblationResult:
        with heavy_work("ablation"):
            old_top = lens(run, rows, positions, LENS_K).top_ids[..., 0]
            after_run = edited_run(lm, page_run, ablation_edits_for(lm, page_run, choice))
            before = outcome_of_run(run, where.position, TOP_K)
            after = outcome_of_run(after_run, where.position, TOP_K)
            lens_after = lens(after_run, rows, positions, LENS_K)
            old_top_after = token_trajectory(after_run, rows, positions, old_top)[0]
        return AblationResult(before, after, lens_after, old_top_after)

    return run.derive(("ablation", choice, tuple(positions)), compute)


@st.fragment
def ablate_section(lm: Any, page_run: PageRun) -> None:
    with timed("ablate", SECTION_MS):
        ablation_controls(lm, page_run)
        choice = current_choice(lm)
        if choice is None:
            st.info("Pick heads (click them on the map), MLPs or layers to ablate.")
            return
        labels = page_run.labels[readout(lm, page_run).sequence]
        positions = list(range(max(0, len(labels) - LENS_POSITIONS), len(labels)))
        result = or_message(lambda: ablation_result(lm, page_run, choice, positions))
        if result is None:
            return
        st.markdown(f"**{escape_markdown(choice.summary)}**")
        show_ablation(lm, page_run, choice, result, positions)


def show_ablation(lm: Any, page_run: PageRun, choice: AblationChoice, result: AblationResult,
                  positions: list[int]) -> None:
    before, after = probs_of(result.before), probs_of(result.after)
    top = int(result.before.top_ids[0])
    top_text = token_texts(lm.tokenizer, torch.tensor([top]))[0]
    metrics = st.columns(3)
    if result.before.loss is not None and result.after.loss is not None:
        metrics[0].metric("Loss on the prompt (nats/token)", f"{result.after.loss:.3f}",
                          f"{result.after.loss - result.before.loss:+.3f}",
                          delta_color="inverse")
    else:
        metrics[0].metric("Loss on the prompt", "—", help=(
            "An encoder does not predict the next token, so it has no next-token loss."
            if lm.config.kind == "encoder" else
            "A one-token text predicts nothing inside itself, so it has no loss."))
    metrics[1].metric(f"p(“{top_text}”), the top token before", f"{float(after[top]):.1%}",
                      f"{100 * float(after[top] - before[top]):+.1f} points")
    new_top = int(result.after.top_ids[0])
    metrics[2].metric("Top token after", token_texts(lm.tokenizer, torch.tensor([new_top]))[0],
                      "unchanged" if new_top == top else "changed", delta_color="off")
    key = (page_run.key, choice)
    where = readout(lm, page_run)
    figure, frame = comparison_figure(lm, before, after, ("before", "after"),
                                      f"{where.title}: before and after")
    show_chart(memo_figure((*key, "dist"), lambda: figure, "int_ablate"),
               key="int_ablate_dist", csv=False)
    csv_button("Download both distributions (CSV)", lambda: frame, "ablation_next_token.csv",
               "int_ablate_dist_csv")
    rows = lens_rows_of(page_run)
    run_lens = lens(page_run.run, rows, positions, LENS_K)
    row_labels = [row.label for row in rows]
    col_labels = [page_run.labels[where.sequence][p] for p in positions]
    delta = result.old_top_after - run_lens.top_probs[..., 0]

    def lens_figure() -> Any:
        return lens_difference_grid(
            token_texts(lm.tokenizer, run_lens.top_ids), run_lens.top_probs,
            token_texts(lm.tokenizer, result.lens_after.top_ids), result.lens_after.top_probs,
            delta, row_labels, col_labels, "Logit lens: what the ablation changed")

    show_chart(memo_figure((*key, "lens", tuple(positions)), lens_figure, "int_ablate"),
               key="int_ablate_lens", csv=False)
    text = "decoder text" if where.sequence == "target" else "prompt"
    st.caption(f"The last {len(positions)} positions of the {text}. Each cell shows the top "
               "token when the ablated run's residual stream is read through the final norm "
               "and unembedding (→ where it differs from the unablated lens); blue where the "
               "unablated lens's top token became more likely, red where less likely.")

    def lens_frame() -> pd.DataFrame:
        old = token_texts(lm.tokenizer, run_lens.top_ids[..., 0])
        new = token_texts(lm.tokenizer, result.lens_after.top_ids[..., 0])
        return pd.DataFrame.from_records([
            {"row": row, "position": p, "input": col_labels[c], "top_before": old[r, c],
             "p_before": float(run_lens.top_probs[r, c, 0]), "top_after": new[r, c],
             "p_after": float(result.lens_after.top_probs[r, c, 0]),
             "p_old_top_after": float(result.old_top_after[r, c])}
            for r, row in enumerate(row_labels) for c, p in enumerate(positions)])

    csv_button("Download the lens difference (CSV)", lens_frame, "ablation_lens.csv",
               "int_ablate_lens_csv")
