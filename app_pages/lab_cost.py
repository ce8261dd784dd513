"""Cost calculator: parameters, FLOPs per token, attention memory and KV cache from a model's
sizes, full vs local-window attention."""

from __future__ import annotations

import streamlit as st

from explorer.ui import lab_cost as calc
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel

page_header(
    "Cost calculator",
    "What a transformer of given sizes costs: its parameters, the arithmetic per token, the "
    "attention matrix that grows with the square of the sequence, and the KV cache a decoder "
    "keeps while generating. It starts from the loaded model's architecture and sizes; change "
    "any of them. Every number is a closed form from `explorer.analysis.cost`, tested against "
    "real models (parameters against the built model, FLOPs against a counted forward, the KV "
    "cache against a real cache).",
)
lm = require_model()
begin_page("Cost calculator")
share_panel(lm)
cfg, inputs = calc.sized_config(lm)
if cfg is None:
    st.stop()

st.header("Parameters")
calc.parameters_view(lm, cfg)

st.header("Compute and memory")
st.markdown(
    "Every weight costs 2 FLOPs per token (a multiply and an add), whatever the context. "
    "Attention adds a term that grows with the number of keys a token sees: q·k with each "
    "key, then the weighted sum of values. Eager attention also materialises one [heads, n, "
    "n] score matrix per layer (FlashAttention computes the same without storing it), and a "
    "decoder keeps every past key and value so that each new token costs one step. A local "
    "window caps all three at w keys.",
)
calc.costs_view(cfg, inputs)
