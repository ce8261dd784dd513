"""Guided tour: one prompt through the loaded model, step by step, with its real numbers."""

from __future__ import annotations

import streamlit as st

from explorer.ui import page_header, require_model
from explorer.ui import tour as ui
from explorer.ui.export import begin_page, share_panel
from explorer.ui.runs import prompt_inputs, run_or_stop

page_header(
    "Guided tour",
    "Follow one prompt through the loaded model, one operation at a time: tokens, "
    "embeddings, attention, the feed-forward network, every block, and the next-token "
    "probabilities. Every number is the real model's, computed by the same modules that run "
    "it; pick a token and a head to follow, then press **Next**.",
)
lm = require_model()
begin_page("Guided tour")
text, target_text = prompt_inputs(lm, "tour", "tour_decoder_text", "tour")
page_run = run_or_stop(lm, text, target_text)
share_panel(lm, page_run)
ui.mask_hint(lm, page_run)
ctx = ui.focus_controls(lm, page_run)

steps = ui.steps_for(lm.config)
step = ui.current_step(len(steps))
st.divider()
ui.navigation(steps, step, "top")
st.subheader(f"{step}. {steps[step - 1].title}")
steps[step - 1].render(ctx)
st.divider()
ui.navigation(steps, step, "bottom")
with st.expander("All steps"):
    ui.step_menu(steps, step)
