"""Generate: watch the model write, token by token, with what it considered and where it looked."""

from __future__ import annotations

import streamlit as st

from explorer.generation import GenerationRecord
from explorer.ui import generate as ui
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel
from explorer.ui.gate import server_limits
from explorer.ui.resources import model_label
from explorer.ui.url_state import in_url, opened_with, set_flag
from explorer.ui.widgets import escape_markdown, prompt_box

MAX_NEW_TOKENS = server_limits().max_new_tokens  # EXPLORER_MAX_NEW_TOKENS, default 256
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
begin_page("Generate")
if lm.config.kind == "encoder":
    st.info(f"{escape_markdown(lm.name)} is an encoder: it reads text but has no decoder to "
            "write with. Pick a decoder such as smollm2-135m, or an encoder-decoder (T5), in "
            "the sidebar.")
    st.stop()
state = ui.generation_state(st.session_state, model_label(lm))

is_instruct = bool(getattr(lm.tokenizer, "chat_template", None))
mode = st.radio("Input", ["Prompt", "Chat"] if is_instruct else ["Prompt"], horizontal=True,
                **in_url("generate_mode"),
                help="Chat wraps your message in the model's chat template.")
if mode == "Chat":
    message = ui.chat_box(state)
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
settings = ui.Settings(message, temperature, top_k, top_p, max_new, seed, record_attention)
start = start or (opened_with(REPLAY) and mode == "Prompt")
buttons[1].button("Stop", key="generate_stop",
                  help="Stops the generation; the tokens so far stay.")
slots = ui.Slots(notices=st.container(), metrics=st.empty(), stream=st.empty())

if start:
    ui.start_generation(lm, mode, settings, state, slots)

record: GenerationRecord | None = state.get("record")
share_panel(lm, record=record)
replays = mode == "Prompt" and state.get("settings") == settings.key()
set_flag(REPLAY, record is not None and replays)
if record is None or not len(record):
    st.caption("Press **Generate** to start.")
    st.stop()

selected = ui.step_slider(len(record))
ui.show_metrics(slots.metrics, record)
ui.show_stream(slots.stream, record, ui.hover_texts(record), state, ui.is_seq2seq(lm), selected)

ui.timeline_view(record, selected)
labels = state.get("prompt_labels", []) + record.tokens
left, right = st.columns([2, 3])
with left:
    ui.candidates_view(record, selected)
with right:
    if not record.attention:
        st.info("Attention was not recorded for this run (turn on **Record attention**).")
    else:
        layer, head = ui.step_attention_view(lm, record, labels, selected)
if record.attention:
    ui.growing_attention_view(lm, record, labels, selected, layer, head)
