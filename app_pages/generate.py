"""Generate: watch the model write, token by token, with what it considered and where it looked."""

from __future__ import annotations

import logging
import time

import streamlit as st

import explorer
from explorer.generation import (
    GenerationRecord,
    attention_storage,
    chat_ids,
    fit_prompt,
    prompt_ids,
)
from explorer.generation.text import token_text
from explorer.models.tokenizer import tokenizer_lock
from explorer.serving import GateTimeout
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel, show_chart
from explorer.ui.gate import VisitorGone, busy_message, heavy_work, server_limits, session_connected
from explorer.ui.resources import model_label
from explorer.ui.url_state import in_url, opened_with, set_flag
from explorer.ui.widgets import (
    escape_markdown,
    is_new_click,
    plotly_clicked_x,
    prompt_box,
)
from explorer.viz.generation import (
    alternatives_text,
    candidates_figure,
    context_attention_figure,
    growing_attention_figure,
    timeline_figure,
    token_stream_html,
)

log = logging.getLogger(__name__)
MAX_NEW_TOKENS = server_limits().max_new_tokens  # EXPLORER_MAX_NEW_TOKENS, default 256
# Redraw the stream at most this often while generating: sending the page every token cost
# more than computing it (15 tokens/s drawn per token vs 40 computed on a 2-core CPU).
REDRAW_EVERY_S = 0.08
STATE = "generate"  # st.session_state[STATE]: this browser session's generation
# Why a generation ended, in words that fit a metric.
FINISHED = {"eos": "end of text", "max_new_tokens": "token limit", "context": "context full",
            "stopped": "stopped"}
MEAN = "mean of heads"
STEP_KEY, TIMELINE = "generate_step_pick", "gen_timeline"
REPLAY = "generate_run"  # in the URL while the shown generation matches the settings

page_header(
    "Generate",
    "The model writes one token at a time: each step runs only the newest token through the "
    "network (earlier keys and values wait in a cache) and picks the next token from its "
    "probabilities. Tokens are coloured by the probability of the chosen token (red: "
    "unlikely, blue: sure); hover one for the alternatives. Below, pick a step to see its "
    "candidates and where it looked.",
)
lm = require_model()
cfg = lm.config
begin_page("Generate")
if cfg.kind == "encoder":
    st.info(f"{escape_markdown(lm.name)} is an encoder: it reads text but has no decoder to "
            "write with. Pick a decoder such as smollm2-135m, or an encoder-decoder (T5), in "
            "the sidebar.")
    st.stop()
# An encoder-decoder (T5) reads the prompt with its encoder and writes new text with its
# decoder; the attention shown is then the decoder's cross-attention over the prompt.
SEQ2SEQ = cfg.kind == "encoder-decoder"
ATTN_LAYERS = cfg.n_decoder_layers if SEQ2SEQ else cfg.n_layers
LOOKED = "which prompt tokens it read (cross-attention)" if SEQ2SEQ else "where the query looked"
state = st.session_state.setdefault(STATE, {})
if state.get("model") != model_label(lm):  # another model: the old run's tokens mean nothing
    state.clear()
    state["model"] = model_label(lm)
if state.get("running"):  # the last run was interrupted (Stop, or any widget change)
    state["running"] = False
    record = state.get("record")
    if record is not None and record.finished is None:
        record.finished = "stopped"

tokenizer = lm.tokenizer
is_instruct = bool(getattr(tokenizer, "chat_template", None))
mode = st.radio("Input", ["Prompt", "Chat"] if is_instruct else ["Prompt"], horizontal=True,
                **in_url("generate_mode"),
                help="Chat wraps your message in the model's chat template.")
message = ""
if mode == "Chat":
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
else:
    message = prompt_box("Prompt", page_key="generate", height=90)

cols = st.columns(5)
temperature = cols[0].slider("Temperature", 0.0, 2.0, 0.0, 0.05, **in_url("generate_temperature"),
                             help="0 is greedy: always the most likely token.")
top_k = cols[1].number_input("Top-k (0 = all)", 0, 1_000, 0, **in_url("generate_top_k"),
                             help="Sample only among the k most likely tokens.")
top_p = cols[2].slider("Top-p", 0.05, 1.0, 1.0, 0.05, **in_url("generate_top_p"),
                       help="Sample among the fewest tokens whose probability adds up to p.")
max_new = cols[3].number_input("Max new tokens", 1, MAX_NEW_TOKENS, min(48, MAX_NEW_TOKENS),
                               **in_url("generate_max_new"))
seed = cols[4].number_input("Seed", 0, 2**31 - 1, 0, **in_url("generate_seed"),
                            help="The same seed and settings give the same sample.")
record_attention = st.toggle("Record attention at every step", value=True,
                             **in_url("generate_attention"))
buttons = st.columns([1, 1, 6])
start = buttons[0].button("Generate", type="primary", key="generate_start")
# A link to a generation replays it (same prompt, settings and seed give the same tokens).
settings = (message, temperature, top_k, top_p, max_new, seed, record_attention)
start = start or (opened_with(REPLAY) and mode == "Prompt")
buttons[1].button("Stop", key="generate_stop",
                  help="Stops the generation; the tokens so far stay.")
notices = st.container()
metrics_slot = st.empty()
stream_slot = st.empty()


def show_metrics(record: GenerationRecord) -> None:
    with metrics_slot.container():
        m = st.columns(4)
        m[0].metric("Tokens", len(record))
        m[1].metric("Tokens / s", f"{record.tokens_per_s:.1f}")
        m[2].metric("Time to first token", f"{record.ttft or 0:.2f} s")
        m[3].metric("Finished", FINISHED.get(record.finished, record.finished or "running…"))


def hover_texts(record: GenerationRecord) -> list[str]:
    return [alternatives_text(labels, probs, token, entropy)
            for labels, probs, token, entropy in zip(
                record.top_labels, record.top_probs, record.tokens, record.entropies,
                strict=True)]


def show_stream(record: GenerationRecord, hovers: list[str], selected: int | None = None):
    cut = (f"[{record.prompt_cut:,} earlier prompt tokens cut]" if record.prompt_cut else "")
    prompt = state.get("prompt_text", "") + (" → " if SEQ2SEQ else "")  # T5 writes anew
    stream_slot.html(token_stream_html(
        record.texts, record.probs, hovers, record.tokens, prompt=prompt, selected=selected,
        cut_notice=cut,
    ))


def prompt_tokens() -> object:
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


def run_generation(ids) -> None:
    fit = fit_prompt(ids, cfg.n_ctx, int(max_new), shared_context=not SEQ2SEQ)
    if fit.cut:
        room = (f"the encoder's {cfg.n_ctx:,} positions" if SEQ2SEQ else
                f"the context of {cfg.n_ctx:,} together with {fit.max_new_tokens:,} new tokens")
        notices.warning(f"The prompt has {ids.shape[1]:,} tokens; the first {fit.cut:,} were cut "
                        f"to fit {room}.")
    if fit.context_bound:
        notices.info(f"At most {fit.max_new_tokens:,} new tokens fit the context.")
    storage = "none"
    if record_attention:
        storage = attention_storage(ATTN_LAYERS, cfg.n_heads, fit.ids.shape[1],
                                    fit.max_new_tokens)
        if storage != "heads":
            kept_as = "as the mean over heads only" if storage == "layers" else "not at all"
            notices.info(f"This run is long: attention is kept {kept_as}.")
    kept = fit.ids[0].tolist()
    record = GenerationRecord(prompt_ids=kept, prompt_cut=fit.cut, storage=storage)
    st.session_state.pop(STEP_KEY, None)  # show the newest step when done
    with tokenizer_lock(tokenizer):  # shared by every session's thread
        prompt_text = tokenizer.decode(kept, skip_special_tokens=False)
    state.update(record=record, running=True, prompt_text=prompt_text,
                 prompt_labels=[token_text(tokenizer, i) for i in kept])
    hovers: list[str] = []
    steps = explorer.generate(
        lm, fit.ids, max_new_tokens=fit.max_new_tokens, temperature=float(temperature),
        top_k=int(top_k) or None, top_p=float(top_p) if top_p < 1 else None, seed=int(seed),
        capture_attention=storage != "none",
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
            show_stream(record, hovers)
            show_metrics(record)
            drawn = time.perf_counter()
    state.update(running=False, settings=settings)
    if mode == "Chat":
        state["chat"].extend([{"role": "user", "content": message},
                              {"role": "assistant", "content": record.text}])
        state["clear_message"] = True
        st.rerun()  # draw the conversation with the new turn


if start:
    ids = prompt_tokens()
    if ids is not None:
        try:
            with heavy_work("generation"):  # one of a few at a time; others see the queue
                run_generation(ids)
        except GateTimeout as exc:
            notices.warning(busy_message(exc))
        except VisitorGone:
            log.info("generation dropped: its browser session closed while waiting")
        except ValueError as exc:
            state["running"] = False
            notices.warning(escape_markdown(str(exc)))
        except Exception as exc:
            state["running"] = False
            log.exception("generation failed")
            notices.error(f"The generation failed ({type(exc).__name__}).")

record: GenerationRecord | None = state.get("record")
share_panel(lm, record=record)
set_flag(REPLAY, record is not None and mode == "Prompt" and state.get("settings") == settings)
if record is None or not len(record):
    st.caption("Press **Generate** to start.")
    st.stop()

n = len(record)
selected = 0
if n > 1:
    # A click on the timeline picks its step (once per click; the slider stays free).
    clicked = plotly_clicked_x(st.session_state.get(TIMELINE))
    if is_new_click(clicked, "generate_step_clicked") and clicked is not None:
        st.session_state[STEP_KEY] = clicked
    picked = st.session_state.setdefault(STEP_KEY, n - 1)
    st.session_state[STEP_KEY] = min(max(int(picked), 0), n - 1)
    selected = st.slider("Step", 0, n - 1, **in_url(STEP_KEY),
                         help="The step whose candidates and attention are shown below; "
                              "clicking a point of the timeline picks it too.")
show_metrics(record)
show_stream(record, hover_texts(record), selected)

show_chart(timeline_figure(record.probs, record.entropies, selected), key=TIMELINE,
           on_select="rerun", selection_mode="points")
labels = state.get("prompt_labels", []) + record.tokens
left, right = st.columns([2, 3])
with left:
    top = record.top_ids[selected]
    chosen = top.index(record.token_ids[selected]) if record.token_ids[selected] in top else -1
    show_chart(candidates_figure(record.top_labels[selected], record.top_probs[selected],
                                 chosen), key="gen_candidates")
    st.caption(f"Step {selected}: p(chosen) = {record.probs[selected]:.1%}, entropy "
               f"{record.entropies[selected]:.2f} nats.")
with right:
    if not record.attention:
        st.info("Attention was not recorded for this run (turn on **Record attention**).")
    else:
        pick = st.columns(2)
        layer = pick[0].selectbox("Layer", range(ATTN_LAYERS), index=ATTN_LAYERS - 1,
                                  **in_url("generate_layer"))
        heads = [MEAN, *range(cfg.n_heads)] if record.has_heads() else [MEAN]
        head_choice = pick[1].selectbox("Head", heads, **in_url("generate_head"))
        head = None if head_choice == MEAN else int(head_choice)
        row = record.attention_row(selected, layer, head)
        who = "mean of heads" if head is None else f"head {head}"
        show_chart(context_attention_figure(
            labels, row, f"Step {selected}: {LOOKED} (layer {layer}, {who})"),
            key="gen_context_attention")
if record.attention:
    rows = [record.attention_row(i, layer, head) for i in range(len(record.attention))]
    title = ("Cross-attention of each generated step over the prompt" if SEQ2SEQ else
             "Attention of each generated step over its context")
    show_chart(growing_attention_figure(rows, labels, len(record.prompt_ids), selected,
                                        title=title), key="gen_growing_attention")
    if SEQ2SEQ:
        st.caption("Row i: the decoder's cross-attention, from the query that chose token i, "
                   "over the prompt its encoder read (an alignment of output to input).")
    else:
        st.caption("Row i: the attention of the query that chose token i (the previous token) "
                   "over the prompt and the tokens generated before it.")
