"""Streamlit glue for the Generate page: this session's generation, the streaming loop that
draws it, and the views of one step (its candidates and where it looked).

A browser session keeps one generation in ``st.session_state[STATE]`` (a dict): the
:class:`~explorer.generation.GenerationRecord`, the prompt as text and as token labels, the
settings it ran with (a link replays a generation whose settings match) and, in chat mode,
the conversation. :func:`generation_state` resets it when the model changes and marks a run
interrupted by a rerun (Stop, or any widget change) as stopped. :func:`start_generation`
runs :func:`explorer.generate` (KV-cache decoding, one token per step) behind the shared
gate and redraws the stream at most every :data:`REDRAW_EVERY_S` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from dataclasses import astuple, dataclass
from typing import Any

import streamlit as st

import explorer
from explorer.generation import (
    GenerationRecord,
    PromptFit,
    attention_storage,
    chat_ids,
    fit_prompt,
    prompt_ids,
)
from explorer.generation.text import token_text
from explorer.models.tokenizer import tokenizer_lock
from explorer.serving import GateTimeout
from explorer.ui.export import show_chart
from explorer.ui.gate import VisitorGone, busy_message, heavy_work, session_connected
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown, is_new_click, plotly_clicked_x
from explorer.viz.generation import (
    alternatives_text,
    candidates_figure,
    context_attention_figure,
    growing_attention_figure,
    timeline_figure,
    token_stream_html,
)

log = logging.getLogger(__name__)
# Redraw the stream at most this often while generating: sending the page every token cost
# more than computing it (15 tokens/s drawn per token vs 40 computed on a 2-core CPU).
REDRAW_EVERY_S = 0.08
STATE = "generate"  # st.session_state[STATE]: this browser session's generation
# Why a generation ended, in words that fit a metric.
FINISHED = {"eos": "end of text", "max_new_tokens": "token limit", "context": "context full",
            "stopped": "stopped"}
MEAN = "mean of heads"
STEP_KEY, TIMELINE = "generate_step_pick", "gen_timeline"


@dataclass(frozen=True)
class Settings:
    """What a generation depends on, as the page's widgets give it."""

    message: str
    temperature: float
    top_k: int
    top_p: float
    max_new: int
    seed: int
    record_attention: bool

    def key(self) -> tuple:
        """The settings as a tuple (kept in the session: a link replays a matching run)."""
        return astuple(self)


@dataclass(frozen=True)
class Slots:
    """Where a running generation draws: notices, the metrics row and the token stream."""

    notices: Any
    metrics: Any
    stream: Any


def is_seq2seq(lm: Any) -> bool:
    """An encoder-decoder (T5) reads the prompt with its encoder and writes with its decoder;
    the attention shown is then the decoder's cross-attention over the prompt."""
    return lm.config.kind == "encoder-decoder"


def attention_layers(lm: Any) -> int:
    """How many layers' attention a step records (the decoder's, for an encoder-decoder)."""
    return lm.config.n_decoder_layers if is_seq2seq(lm) else lm.config.n_layers


def generation_state(session: MutableMapping, model: str) -> dict:
    """This session's generation (a dict in ``session[STATE]``), emptied when ``model``
    changed (the old run's tokens mean nothing to another model); a run still marked running
    was interrupted by a rerun (Stop, or any widget change) and is marked stopped."""
    state = session.setdefault(STATE, {})
    if state.get("model") != model:
        state.clear()
        state["model"] = model
    if state.get("running"):
        state["running"] = False
        record = state.get("record")
        if record is not None and record.finished is None:
            record.finished = "stopped"
    return state


def chat_box(state: dict) -> str:
    """The conversation so far and the box for the next message (emptied once sent)."""
    history = state.setdefault("chat", [])
    for turn in history:
        with st.chat_message(turn["role"]):
            st.markdown(escape_markdown(turn["content"]))
    if state.pop("clear_message", False):  # the last message was sent: empty the box
        st.session_state["generate_message"] = ""
    message = st.text_area("Your message", key="generate_message", height=90, max_chars=4_000)
    if history and st.button("Clear the conversation"):
        history.clear()
        st.rerun()
    return message


# --------------------------------------------------------------------------- the stream


def show_metrics(slot: Any, record: GenerationRecord) -> None:
    with slot.container():
        m = st.columns(4)
        m[0].metric("Tokens", len(record))
        m[1].metric("Tokens / s", f"{record.tokens_per_s:.1f}")
        m[2].metric("Time to first token", f"{record.ttft or 0:.2f} s")
        m[3].metric("Finished", FINISHED.get(record.finished, record.finished or "running…"))


def hover_texts(record: GenerationRecord) -> list[str]:
    """Each generated token's hover: its probability, the entropy, the top alternatives."""
    return [alternatives_text(labels, probs, token, entropy)
            for labels, probs, token, entropy in zip(
                record.top_labels, record.top_probs, record.tokens, record.entropies,
                strict=True)]


def show_stream(slot: Any, record: GenerationRecord, hovers: list[str], state: dict,
                seq2seq: bool, selected: int | None = None) -> None:
    cut = (f"[{record.prompt_cut:,} earlier prompt tokens cut]" if record.prompt_cut else "")
    prompt = state.get("prompt_text", "") + (" → " if seq2seq else "")  # T5 writes anew
    slot.html(token_stream_html(
        record.texts, record.probs, hovers, record.tokens, prompt=prompt, selected=selected,
        cut_notice=cut,
    ))


# --------------------------------------------------------------------------- running


def fit_notices(fit: PromptFit, n_prompt: int, n_ctx: int, seq2seq: bool) -> list[tuple[str, str]]:
    """(level, text) notices on how the prompt was fitted: tokens cut, new tokens bounded."""
    notices = []
    if fit.cut:
        room = (f"the encoder's {n_ctx:,} positions" if seq2seq else
                f"the context of {n_ctx:,} together with {fit.max_new_tokens:,} new tokens")
        notices.append(("warning", f"The prompt has {n_prompt:,} tokens; the first {fit.cut:,} "
                                   f"were cut to fit {room}."))
    if fit.context_bound:
        notices.append(("info", f"At most {fit.max_new_tokens:,} new tokens fit the context."))
    return notices


def storage_notice(storage: str) -> str | None:
    """What a long run keeps of the attention, or None when it keeps every head."""
    if storage == "heads":
        return None
    kept_as = "as the mean over heads only" if storage == "layers" else "not at all"
    return f"This run is long: attention is kept {kept_as}."


def prompt_tokens(lm: Any, mode: str, message: str, state: dict, notices: Any) -> Any:
    """The prompt's ids [1, n], or None with a message shown."""
    if not message.strip():
        notices.warning("The prompt is empty: type some text to continue.")
        return None
    try:
        if mode == "Chat":
            return chat_ids(lm, [*state.get("chat", []), {"role": "user", "content": message}])
        return prompt_ids(lm, message)
    except ValueError as exc:
        notices.warning(escape_markdown(str(exc)))
    except Exception as exc:  # a chat template is Jinja from the model repo: may refuse
        log.exception("could not build the prompt")
        notices.error(f"The prompt could not be prepared ({type(exc).__name__}).")
    return None


def run_generation(lm: Any, ids: Any, mode: str, settings: Settings, state: dict,
                   slots: Slots) -> None:
    """Generate from ``ids`` [1, n], drawing the stream and metrics as tokens come."""
    cfg, tokenizer, seq2seq = lm.config, lm.tokenizer, is_seq2seq(lm)
    fit = fit_prompt(ids, cfg.n_ctx, int(settings.max_new), shared_context=not seq2seq)
    for level, text in fit_notices(fit, ids.shape[1], cfg.n_ctx, seq2seq):
        getattr(slots.notices, level)(text)
    storage = "none"
    if settings.record_attention:
        storage = attention_storage(attention_layers(lm), cfg.n_heads, fit.ids.shape[1],
                                    fit.max_new_tokens)
        if notice := storage_notice(storage):
            slots.notices.info(notice)
    kept = fit.ids[0].tolist()
    record = GenerationRecord(prompt_ids=kept, prompt_cut=fit.cut, storage=storage)
    st.session_state.pop(STEP_KEY, None)  # show the newest step when done
    with tokenizer_lock(tokenizer):  # shared by every session's thread
        prompt_text = tokenizer.decode(kept, skip_special_tokens=False)
    state.update(record=record, running=True, prompt_text=prompt_text,
                 prompt_labels=[token_text(tokenizer, i) for i in kept])
    hovers: list[str] = []
    top_p = float(settings.top_p)
    steps = explorer.generate(
        lm, fit.ids, max_new_tokens=fit.max_new_tokens, temperature=float(settings.temperature),
        top_k=int(settings.top_k) or None, top_p=top_p if top_p < 1 else None,
        seed=int(settings.seed), capture_attention=storage != "none",
    )
    drawn = 0.0
    for step in steps:
        record.add(step, [token_text(tokenizer, i) for i in step.top_ids])
        hovers.append(alternatives_text(record.top_labels[-1], step.top_probs, step.token,
                                        step.entropy))
        if time.perf_counter() - drawn >= REDRAW_EVERY_S or step.finished is not None:
            if not session_connected():  # the tab was closed: free the slot for others
                record.finished = "stopped"
                break
            show_stream(slots.stream, record, hovers, state, seq2seq)
            show_metrics(slots.metrics, record)
            drawn = time.perf_counter()
    state.update(running=False, settings=settings.key())
    if mode == "Chat":
        state["chat"].extend([{"role": "user", "content": settings.message},
                              {"role": "assistant", "content": record.text}])
        state["clear_message"] = True
        st.rerun()  # draw the conversation with the new turn


def start_generation(lm: Any, mode: str, settings: Settings, state: dict, slots: Slots) -> None:
    """Build the prompt and generate from it, one generation of a few at a time (others see
    the queue); errors a user can cause become notices."""
    ids = prompt_tokens(lm, mode, settings.message, state, slots.notices)
    if ids is None:
        return
    try:
        with heavy_work("generation"):
            run_generation(lm, ids, mode, settings, state, slots)
    except GateTimeout as exc:
        slots.notices.warning(busy_message(exc))
    except VisitorGone:
        log.info("generation dropped: its browser session closed while waiting")
    except ValueError as exc:
        state["running"] = False
        slots.notices.warning(escape_markdown(str(exc)))
    except Exception as exc:
        state["running"] = False
        log.exception("generation failed")
        slots.notices.error(f"The generation failed ({type(exc).__name__}).")


# --------------------------------------------------------------------------- one step


def step_slider(n: int) -> int:
    """The step shown below (the newest at first); a click on the timeline picks its step
    (once per click, so the slider stays free)."""
    if n <= 1:
        return 0
    clicked = plotly_clicked_x(st.session_state.get(TIMELINE))
    if is_new_click(clicked, "generate_step_clicked") and clicked is not None:
        st.session_state[STEP_KEY] = clicked
    picked = st.session_state.setdefault(STEP_KEY, n - 1)
    st.session_state[STEP_KEY] = min(max(int(picked), 0), n - 1)
    return st.slider("Step", 0, n - 1, **in_url(STEP_KEY),
                     help="The step whose candidates and attention are shown below; "
                          "clicking a point of the timeline picks it too.")


def chosen_rank(record: GenerationRecord, step: int) -> int:
    """Where the chosen token is among the step's top candidates (-1 when outside them)."""
    top = record.top_ids[step]
    return top.index(record.token_ids[step]) if record.token_ids[step] in top else -1


def timeline_view(record: GenerationRecord, selected: int) -> None:
    show_chart(timeline_figure(record.probs, record.entropies, selected), key=TIMELINE,
               on_select="rerun", selection_mode="points")


def candidates_view(record: GenerationRecord, selected: int) -> None:
    show_chart(candidates_figure(record.top_labels[selected], record.top_probs[selected],
                                 chosen_rank(record, selected)), key="gen_candidates")
    st.caption(f"Step {selected}: p(chosen) = {record.probs[selected]:.1%}, entropy "
               f"{record.entropies[selected]:.2f} nats.")


def step_attention_view(lm: Any, record: GenerationRecord, labels: list[str],
                        selected: int) -> tuple[int, int | None]:
    """Layer and head pickers and where the step's query looked; returns (layer, head), head
    None for the mean of heads. Call only when the run recorded attention."""
    n_layers, seq2seq = attention_layers(lm), is_seq2seq(lm)
    pick = st.columns(2)
    layer = pick[0].selectbox("Layer", range(n_layers), index=n_layers - 1,
                              **in_url("generate_layer"))
    heads = [MEAN, *range(lm.config.n_heads)] if record.has_heads() else [MEAN]
    head_choice = pick[1].selectbox("Head", heads, **in_url("generate_head"))
    head = None if head_choice == MEAN else int(head_choice)
    row = record.attention_row(selected, layer, head)
    who = "mean of heads" if head is None else f"head {head}"
    looked = ("which prompt tokens it read (cross-attention)" if seq2seq else
              "where the query looked")
    show_chart(context_attention_figure(
        labels, row, f"Step {selected}: {looked} (layer {layer}, {who})"),
        key="gen_context_attention")
    return layer, head


def growing_attention_view(lm: Any, record: GenerationRecord, labels: list[str], selected: int,
                           layer: int, head: int | None) -> None:
    """Every generated step's attention row over its context, one row per step."""
    seq2seq = is_seq2seq(lm)
    rows = [record.attention_row(i, layer, head) for i in range(len(record.attention))]
    title = ("Cross-attention of each generated step over the prompt" if seq2seq else
             "Attention of each generated step over its context")
    show_chart(growing_attention_figure(rows, labels, len(record.prompt_ids), selected,
                                        title=title), key="gen_growing_attention")
    if seq2seq:
        st.caption("Row i: the decoder's cross-attention, from the query that chose token i, "
                   "over the prompt its encoder read (an alignment of output to input).")
    else:
        st.caption("Row i: the attention of the query that chose token i (the previous token) "
                   "over the prompt and the tokens generated before it.")
