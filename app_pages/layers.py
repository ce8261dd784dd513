"""Layers: what the residual stream holds after every layer (logit lens, a target token's
rise, direct contributions, norms and geometry), read from the prompt's shared run."""

from __future__ import annotations

import time

import streamlit as st

from explorer.ui import layers as ui
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel
from explorer.ui.runs import prompt_inputs, run_caption, run_or_stop
from explorer.ui.url_state import in_url

page_header(
    "Layers",
    "A transformer keeps one vector per token, the **residual stream**, and every layer "
    "adds something to it. Here you read that stream after each layer: through the model's "
    "own output head (the *logit lens*: what would it predict if it stopped here?), as the "
    "probability of a token you pick, split into what each layer contributed, and as "
    "geometry: how long the vectors are and how the tokens arrange themselves.",
)
lm = require_model()
begin_page("Layers")
text, target_text = prompt_inputs(lm, "layers", "layers_decoder_text", "layers")

started = time.perf_counter()
page_run = run_or_stop(lm, text, target_text)
share_panel(lm, page_run)
n_tokens = len(page_run.labels["source"])
if n_tokens < 2:
    st.warning("The prompt is a single token: every view below still works, but there is "
               "little to compare. Type a few words.")
st.caption(run_caption(page_run))

# The open tab is in the URL, so a switch reruns the page: only the open tab's section runs
# (the others' choices are kept by Streamlit while they are hidden).
tabs = st.tabs(list(ui.SECTIONS), **in_url("layers_tab"))
ui.draw_open_section(tabs, lm, page_run)
st.session_state["layers_page_ms"] = 1000 * (time.perf_counter() - started)
