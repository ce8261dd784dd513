"""Positional encodings: the formulas to play with, and what the loaded model does with position."""

from __future__ import annotations

import streamlit as st

from explorer.ui import page_header, require_model
from explorer.ui import positional_views as views
from explorer.ui.export import begin_page, share_panel
from explorer.ui.widgets import prompt_box

page_header(
    "Positional encodings",
    "Attention by itself sees a *set* of tokens, not a sequence: something has to tell the "
    "model where each token is. This page shows the classic formula, the loaded model's own "
    "scheme read from its real weights, and, computed live, what goes wrong without one.",
)
lm = require_model()
begin_page("Positional encodings")
share_panel(lm)
text = prompt_box("Prompt", page_key="positional", height=80)

st.header("Sinusoidal positions")
st.markdown(
    "The original Transformer (Vaswani et al. 2017) adds a fixed table to the token "
    "embeddings: pair *i* of dimensions holds sin and cos of pos · w<sub>i</sub> with "
    "w<sub>i</sub> = base<sup>−2i/d</sup>, fast waves in the first dimensions and slow ones in "
    "the last. Moving by k positions turns every pair by the same angle k · w<sub>i</sub>, so "
    "PE(pos + k) is one fixed rotation of PE(pos) and dot products depend only on the offset.",
    unsafe_allow_html=True,
)
views.sinusoid_section()

st.header("This model's positions")
views.model_section(lm, text)

st.header("Why position matters")
st.markdown(
    "Without positional information, self-attention is **permutation-equivariant**: shuffle "
    "the tokens and every output is the same vector, shuffled. The left chart runs this model "
    "on your prompt (its first tokens) twice: at positions 0, 1, 2, … and with every token at "
    "the same position (no positional signal in any scheme), both without the causal mask (a "
    "causal mask tells a token how many came before it, which is position too). The right "
    "chart moves every position by the same amount: a scheme that only reads offsets (RoPE, "
    "ALiBi, T5) gives the same attention; an absolute table (GPT-2, BERT) does not.",
)
views.why_section(lm, text)
