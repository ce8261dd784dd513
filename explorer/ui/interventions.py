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
from explorer.analysis.lens import LensSummary, summarise_logits
from explorer.interventions import MODES, Ablation, Outcome, ablation_edits, outcome
from explorer.runs import Row, lens
from explorer.serving import GateTimeout
from explorer.ui.attention import default_head, head_map_spec
from explorer.ui.downloads import csv_button
from explorer.ui.gate import VisitorGone, busy_message, heavy_work
from explorer.ui.layers import timed, token_texts
from explorer.ui.runs import PageRun, memo_figure
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
GENERATED = "int_generated"
REDRAW_EVERY_S = 0.1
DEFAULT_REFERENCE = ("The weather was mild for the season. People walked along the river, "
                     "talked about their plans and stopped for coffee before going home.")
DEFAULT_PROMPT_B = "The Colosseum is in the city of"
MEAN_OVER = {"prompt": "this prompt's positions", "reference": "a reference text"}


def unsupported(lm: Any) -> str | None:
    """Why the page cannot intervene on this model, or None."""
    if lm.config.kind != "decoder":
        return (f"{escape_markdown(lm.name)} is an {lm.config.kind} model. Interventions here "
                "read a decoder's next-token prediction; pick a decoder such as smollm2-135m "
                "in the sidebar.")
    if getattr(lm.model, "head", None) is None:
        return f"{escape_markdown(lm.name)} has no unembedding, so it predicts no tokens."
    return None


def prompt_ids(lm: Any, page_run: PageRun) -> torch.Tensor:
    """The page prompt's ids ``[1, N]`` on the model's device (as the shared run read them)."""
    return page_run.run.streams["main"].tokens.ids[None].to(lm.device)


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


def final_probs(lm: Any, page_run: PageRun, position: int) -> torch.Tensor:
    """The model's next-token distribution ``[V]`` after ``position`` (read off the run's
    last residual, no forward)."""
    stream = page_run.run.streams["main"]

    def compute() -> torch.Tensor:
        resid = stream.residual(Row(stream.n_layers - 1))[[position]]
        with torch.no_grad():
            logits = lm.model.unembed_residual(resid.to(lm.device, lm.dtype))
        return torch.softmax(logits.float()[0], -1).cpu()

    return page_run.run.derive(("final_probs", position), compute)


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


def current_choice() -> AblationChoice | None:
    """The ablation the widgets of the Ablate tab describe, or None when nothing is picked."""
    state = st.session_state
    heads, mlps, layers = (tuple(sorted(state.get(k) or ())) for k in
                           (HEADS_KEY, MLPS_KEY, LAYERS_KEY))
    if not (heads or mlps or layers):
        return None
    mode = state.get(MODE_KEY, "zero")
    reference = None
    if mode == "mean" and state.get(MEAN_OVER_KEY) == "reference":
        reference = state.get(REFERENCE_KEY) or DEFAULT_REFERENCE
    return AblationChoice(Ablation(heads=heads, mlps=mlps, layers=layers, mode=mode), reference)


def ablation_edits_for(lm: Any, page_run: PageRun, choice: AblationChoice) -> dict:
    """The edits of ``choice``: the mean of a mean ablation is taken over the prompt or the
    reference text."""
    reference = prompt_ids(lm, page_run)
    if choice.reference is not None:
        reference = lm.encode(choice.reference)[:, : lm.config.n_ctx]
    return ablation_edits(lm.model, choice.ablation, reference)


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


def outlined_head_map(page_run: PageRun, score_name: str, heads: list[tuple[int, int]],
                      n_layers: int) -> dict:
    """The head map coloured by ``score_name`` with every ablated head outlined; no dimming
    of the other heads after a click (they are not deselected)."""
    score = HEAD_SCORES[score_name]
    spec = head_map_spec((page_run.key, "int"), page_run.run.scores("self")[score_name],
                         score.label, not score.higher_is_role, (-1, -1),
                         min(max(18 * n_layers + 40, 200), 560))
    test = " || ".join(f"(datum.layer === {layer} && datum.head === {head})"
                       for layer, head in heads) or "false"
    encoding = {k: v for k, v in spec["encoding"].items() if k != "opacity"}
    encoding["stroke"] = {"condition": {"test": test, "value": "#ff2b2b"}, "value": None}
    encoding["strokeWidth"] = {"condition": {"test": test, "value": 3}, "value": 0}
    return {**spec, "encoding": encoding}


def ablation_controls(lm: Any, page_run: PageRun) -> None:
    """The head map, the lists of heads, MLPs and layers, and zero or mean."""
    cfg = lm.config
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    toggle_clicked_head(n_layers, n_heads)
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    st.session_state[HEADS_KEY] = [h for h in st.session_state.get(HEADS_KEY) or []
                                   if h in heads]  # another model: drop what does not exist
    left, right = st.columns([2, 3], gap="large")
    with left:
        if SCORE_KEY not in st.session_state:
            st.session_state[SCORE_KEY] = default_head(page_run.run.scores("self"), n_heads)[0]
        score_name = st.selectbox("Colour heads by", list(HEAD_SCORES), key=SCORE_KEY,
                                  format_func=lambda s: HEAD_SCORES[s].label)
        st.vega_lite_chart(outlined_head_map(page_run, score_name,
                                             st.session_state[HEADS_KEY], n_layers),
                           on_select="rerun", selection_mode="head", key=MAP_KEY,
                           width="stretch")
        st.caption("Click a head to add it to the ablation (outlined in red); remove it in "
                   "the list on the right.")
    with right:
        st.multiselect("Heads", heads, key=HEADS_KEY, format_func=head_name,
                       help="Each head's output (attn.z) before the output projection.")
        st.multiselect("MLPs", range(n_layers), key=MLPS_KEY, format_func=lambda m: f"L{m}")
        st.multiselect("Whole layers (attention and MLP)", range(n_layers), key=LAYERS_KEY,
                       format_func=lambda m: f"L{m}")
        mode = st.radio("Replace with", list(MODES), key=MODE_KEY, horizontal=True,
                        format_func={"zero": "zero", "mean": "the mean activation"}.get)
        if mode == "mean":
            over = st.radio("Mean over", list(MEAN_OVER), key=MEAN_OVER_KEY,
                            horizontal=True, format_func=MEAN_OVER.get)
            if over == "reference":
                st.text_area("Reference text", DEFAULT_REFERENCE, key=REFERENCE_KEY,
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


def edited_lens(lm: Any, ids: torch.Tensor, edits: dict, positions: list[int],
                old_top: torch.Tensor) -> tuple[LensSummary, torch.Tensor]:
    """The logit lens of an edited forward at every block boundary x ``positions``, and the
    probability ``[R, C]`` of ``old_top`` ``[R, C]`` (the unedited lens's top-1) there."""
    n_layers = lm.config.n_layers
    names = ["blocks.0.resid_pre", *(f"blocks.{i}.resid_post" for i in range(n_layers))]
    _, cache = lm.model.run_with_cache(ids, names=names, edits=edits)
    summaries, old = [], []
    with torch.no_grad():
        for r, name in enumerate(names):  # one row at a time: [C, V] logits, never [R, C, V]
            logits = lm.model.unembed_residual(cache[name][0, positions]).float()
            summaries.append(summarise_logits(logits[None], LENS_K))
            probs = torch.softmax(logits, -1)
            old.append(probs.gather(-1, old_top[r].to(probs.device)[:, None])[:, 0].cpu())
    return LensSummary.concat(summaries, dim=0), torch.stack(old)


def ablation_result(lm: Any, page_run: PageRun, choice: AblationChoice, positions: list[int]
                    ) -> AblationResult:
    """Before and after the ablation, computed once per run, choice and positions."""
    run = page_run.run
    old_top = lens(run, lens_rows(lm.config.n_layers), positions, LENS_K).top_ids[..., 0]

    def compute() -> AblationResult:
        ids = prompt_ids(lm, page_run)
        with heavy_work("ablation"):
            edits = ablation_edits_for(lm, page_run, choice)
            before = run.derive(("outcome", TOP_K), lambda: outcome(lm.model, ids, k=TOP_K))
            after = outcome(lm.model, ids, edits=edits, k=TOP_K)
            lens_after, old_top_after = edited_lens(lm, ids, edits, positions, old_top)
        return AblationResult(before, after, lens_after, old_top_after)

    return run.derive(("ablation", choice, tuple(positions)), compute)


@st.fragment
def ablate_section(lm: Any, page_run: PageRun) -> None:
    with timed("ablate", SECTION_MS):
        ablation_controls(lm, page_run)
        choice = current_choice()
        if choice is None:
            st.info("Pick heads (click them on the map), MLPs or layers to ablate.")
            return
        labels = page_run.labels["source"]
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
        metrics[0].metric("Loss on the prompt", "—", help="A one-token prompt predicts "
                          "nothing inside itself, so it has no loss.")
    metrics[1].metric(f"p(“{top_text}”), the top token before", f"{float(after[top]):.1%}",
                      f"{100 * float(after[top] - before[top]):+.1f} points")
    new_top = int(result.after.top_ids[0])
    metrics[2].metric("Top token after", token_texts(lm.tokenizer, torch.tensor([new_top]))[0],
                      "unchanged" if new_top == top else "changed", delta_color="off")
    key = (page_run.key, choice)
    figure, frame = comparison_figure(lm, before, after, ("before", "after"),
                                      "Next token after the prompt: before and after")
    st.plotly_chart(memo_figure((*key, "dist"), lambda: figure, "int_ablate"),
                    key="int_ablate_dist")
    csv_button("Download both distributions (CSV)", lambda: frame, "ablation_next_token.csv",
               "int_ablate_dist_csv")
    rows = lens_rows(lm.config.n_layers)
    run_lens = lens(page_run.run, rows, positions, LENS_K)
    row_labels = [row.label for row in rows]
    col_labels = [page_run.labels["source"][p] for p in positions]
    delta = result.old_top_after - run_lens.top_probs[..., 0]

    def lens_figure() -> Any:
        return lens_difference_grid(
            token_texts(lm.tokenizer, run_lens.top_ids), run_lens.top_probs,
            token_texts(lm.tokenizer, result.lens_after.top_ids), result.lens_after.top_probs,
            delta, row_labels, col_labels, "Logit lens: what the ablation changed")

    st.plotly_chart(memo_figure((*key, "lens", tuple(positions)), lens_figure, "int_ablate"),
                    key="int_ablate_lens")
    st.caption(f"The last {len(positions)} positions of the prompt. Each cell shows the top "
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
