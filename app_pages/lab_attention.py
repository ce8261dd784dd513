"""Attention lab: scaled dot-product attention on an editable example, why the scores are
divided by sqrt(d_k), the masks, and multi-head attention."""

from __future__ import annotations

import streamlit as st

from explorer.ui import lab_attention as lab
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel

page_header(
    "Attention lab",
    "Attention, one piece at a time, on a small example you set: your tokens, your sizes, "
    "random or typed queries, keys and values. Every number is computed by the same "
    "`explorer.nn` code that runs the real models.",
)
lm = require_model()
begin_page("Attention lab")
share_panel(lm)
tokens = lab.example_tokens()

st.header("Scaled dot-product attention, step by step")
st.markdown(
    "Each token asks a question (its **query** q), advertises what it holds (its **key** k) "
    "and offers content (its **value** v). A query's dot product with every key says how well "
    "they match; a softmax turns those scores into weights, and the token's output is the "
    "weighted average of the values.",
)
lab.example_section(tokens)

st.header("Why divide by √d_k")
st.markdown(
    "With entries of unit variance, q · k is a sum of d_k products, so its spread grows like "
    "√d_k. Large scores push the softmax to put almost all weight on one key (its gradient "
    "then vanishes). Dividing by √d_k keeps the scores' spread near 1 at any width. Move d_k: "
    "without scaling the largest weight climbs to 1 and the entropy falls to 0; with it both "
    "stay put.",
)
lab.scaling_section()

st.header("Masks: who sees whom")
st.markdown(
    "A mask adds −∞ to the scores a query must not use, so their weight is exactly 0. "
    "**Padding** hides filler tokens added to make sequences in a batch equally long. "
    "**Causal** hides the future, so a decoder can be trained on every position at once and "
    "still generate left to right. A **local window** shows each token only its neighbours.",
)
lab.masks_section(tokens, lm)

st.header("Multi-head attention: d_model into heads and back")
st.markdown(
    "One projection makes all queries at once, [n, d_model] → [n, heads · d_head]; reshaping "
    "gives each head its own slice of d_head columns. Each head attends on its own (its own "
    "pattern), the heads' outputs are put side by side again and one output projection mixes "
    "them back into d_model. With grouped-query attention (GQA) several query heads share one "
    "key/value head, which shrinks the KV cache. Below: a tiny model built by "
    "`explorer.nn.build_model`, beside the loaded model's real sizes.",
)
lab.heads_section(tokens, lm)
