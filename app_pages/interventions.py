"""Interventions: change something inside the model and see what moves (ablate heads, MLPs
or layers; generate with the ablation; patch activations between a clean and a corrupted
prompt; attribute a logit difference to every head; compare two prompts)."""

from __future__ import annotations

import time

import streamlit as st

from explorer.ui import interventions as ui
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel
from explorer.ui.patching import attribution_section, patching_section
from explorer.ui.runs import prompt_inputs, run_caption, run_or_stop
from explorer.ui.side_by_side import compare_section, generate_section

SECTIONS = {
    "Ablate": ui.ablate_section,
    "Generate with the ablation": generate_section,
    "Activation patching": patching_section,
    "Direct logit attribution": attribution_section,
    "Compare A vs B": compare_section,
}

page_header(
    "Interventions",
    "Looking is half of interpretability; the other half is changing something and seeing "
    "what moves. **Ablate** heads, MLPs or whole layers (replace their output by zero or by "
    "its mean) and watch the prediction, the loss and the logit lens; **patch** activations "
    "from a clean prompt into a corrupted one to find where the difference lives; "
    "**attribute** a logit difference to every head; **compare** two prompts side by side.",
)
begin_page("Interventions")
lm = require_model()
if (why := ui.unsupported(lm)) is not None:
    st.info(why)
    st.stop()
text, target_text = prompt_inputs(lm, "interventions", "int_decoder_text", "interventions")

started = time.perf_counter()
page_run = run_or_stop(lm, text, target_text)
share_panel(lm, page_run)
st.caption(run_caption(page_run))
for tab, section in zip(st.tabs(list(SECTIONS)), SECTIONS.values(), strict=True):
    with tab:
        section(lm, page_run)
st.session_state["interventions_page_ms"] = 1000 * (time.perf_counter() - started)
