"""The tour's attention steps (4-8): queries, keys and values (RoPE, grouped-query heads),
scores and the sqrt(d_head) scaling, the mask or position bias and the softmax, the weighted
sum of values, and the heads concatenated through W_O, for the token and head the tour
follows. Vaswani et al. 2017; Su et al. 2021 (RoPE); Ainslie et al. 2023 (GQA); Raffel et
al. 2020 (T5's relative bias); Press et al. 2022 (ALiBi).
"""

from __future__ import annotations

import streamlit as st
import torch

from explorer.ui.tour import TourContext
from explorer.ui.tour_steps import shape, shapes, show, you
from explorer.ui.widgets import escape_markdown
from explorer.viz.tour import heads_heatmap, key_chart, vector_chart


def qkv_step(ctx: TourContext) -> None:
    cfg, attn = ctx.cfg, ctx.trace().block.attn
    h, g = ctx.head, ctx.head // attn.group_size
    gqa = ""
    if attn.group_size > 1:
        gqa = (f" This model uses **grouped-query attention**: {cfg.n_heads} query heads but "
               f"only {cfg.n_kv_heads} key/value heads, each shared by a group of "
               f"{attn.group_size} query heads (head {h} reads k/v head {g}), which makes the "
               f"key/value cache {attn.group_size}× smaller.")
    rope = ""
    if cfg.positional == "rope":
        rope = (" Then q and k (never v) are **rotated** by their position (RoPE): each pair "
                "of dimensions (i, i + d_head/2) turns by the angle pos · θ_i. A rotated q·k "
                "then depends on how far apart the two tokens are, not where they are.")
    st.markdown(
        "Three learned matrices turn each token's vector into a **query** (what it is looking "
        "for), a **key** (what it offers to the others) and a **value** (what it passes on "
        f"when chosen), for all tokens at once. They are cut into {cfg.n_heads} heads of "
        f"d_head = {cfg.d_head} numbers; each head attends on its own.{gqa}{rope} Shown: "
        f"head {h} at {you(ctx)}.")
    eq = r"q_i = x_i W_Q,\quad k_i = x_i W_K,\quad v_i = x_i W_V"
    if cfg.positional == "rope":
        eq += (r",\qquad q_i \leftarrow R_{i\,\theta}\, q_i,\; k_i \leftarrow R_{i\,\theta}\, k_i,"
               rf"\;\; \theta_j = {cfg.rope_base:g}^{{-2j/d}}")
    st.latex(eq)
    shapes(f"W_Q `[d_model={cfg.d_model}, n_heads·d_head={cfg.n_heads * cfg.d_head}]`, "
           f"W_K, W_V `[d_model={cfg.d_model}, n_kv_heads·d_head="
           f"{cfg.n_kv_heads * cfg.d_head}]` → Q {shape(ctx, 'NHd')}, K, V {shape(ctx, 'NGd')}")
    t = attn.position
    q_series = {"q": attn.q_raw[h]}
    k_series = {"k": attn.k_raw[g, t], "v": attn.v[g, t]}
    if cfg.positional == "rope":
        q_series = {"q before RoPE": attn.q_raw[h], "q rotated": attn.q[h]}
        k_series = {"k rotated": attn.k[g, t], "v": attn.v[g, t]}
    left, right = st.columns(2)
    with left:
        show(vector_chart(q_series, f"Query of {ctx.label(ctx.first_stream)}, head {h}",
                          x_title="dimension of the head"), "q")
    with right:
        show(vector_chart(k_series, f"Its key and value, k/v head {g}",
                          x_title="dimension of the head"), "kv")


def scores_step(ctx: TourContext) -> None:
    cfg, attn = ctx.cfg, ctx.trace().block.attn
    h = ctx.head
    if attn.scale == 1.0:
        scaling = ("T5 does **not** divide by √d_head: the factor is folded into how its "
                   "weights were initialised, so the scaled scores equal the raw ones.")
        eq = r"s_j = q \cdot k_j \quad(\text{T5: no } 1/\sqrt{d_{head}})"
    else:
        scaling = (f"Then every score is divided by √d_head = √{cfg.d_head} = "
                   f"{1 / attn.scale:.3g}: a dot product of d random numbers grows like √d, and "
                   "unscaled scores would make the softmax (step 6) put almost all weight on "
                   "one key.")
        eq = (r"s_j = q \cdot k_j, \qquad \tilde s_j = \frac{s_j}{\sqrt{d_{head}}} = "
              rf"\frac{{s_j}}{{{1 / attn.scale:.4g}}}")
    st.markdown(
        f"How much should {you(ctx)} look at each token? Its query is compared with every "
        "key by a **dot product**: large when the two vectors point the same way. "
        f"{scaling} Shown: head {h}, one score per key.")
    st.latex(eq)
    n = ctx.n()
    shapes(f"Q·Kᵀ per head `[N={n}, N={n}]`; this token's row `[N={n}]`")
    show(key_chart(ctx.labels(ctx.first_stream),
                   {"q·k": attn.scores[h], "scaled": attn.scaled[h]},
                   f"Scores of {ctx.label(ctx.first_stream)}, head {h}",
                   query=attn.position), "scores")


def mask_text(ctx: TourContext, causal: bool, stream: str) -> tuple[str, str]:
    """(paragraph, latex) of the mask and position bias one self-attention adds."""
    parts = []
    if causal:
        parts.append("A decoder may not look ahead: keys after the query get −∞, so their "
                     "weight becomes exactly 0 (the **causal mask**).")
    else:
        parts.append("An encoder reads in both directions: no key is masked (padding would "
                     "be, but a single prompt has none).")
    if ctx.cfg.positional == "relative":
        parts.append("T5 adds its position signal here: a learned bias per head for each "
                     "bucket of relative distance (key − query).")
    elif ctx.cfg.positional == "alibi":
        parts.append("ALiBi subtracts slope_h × distance from every score.")
    if ctx.cfg.window is not None:
        parts.append(f"Keys more than {ctx.cfg.window} positions away are masked too (a "
                     "sliding window).")
    bias = r" + b_{h}(j - i)" if ctx.cfg.positional in ("relative", "alibi") else ""
    mask = r"m_{ij} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases}" if causal \
        else r"m_{ij} = 0"
    eq = (rf"a_{{j}} = \frac{{\exp(\tilde s_j{bias} + m_{{ij}})}}"
          rf"{{\sum_{{j'}} \exp(\tilde s_{{j'}}{bias} + m_{{ij'}})}},\qquad {mask}")
    return " ".join(parts), eq


def mask_step(ctx: TourContext) -> None:
    attn = ctx.trace().block.attn
    h = ctx.head
    text, eq = mask_text(ctx, ctx.cfg.kind == "decoder", ctx.first_stream)
    st.markdown(f"{text} Then the **softmax** turns the scores into weights: exponentiate, "
                "divide by the sum. Every weight is positive and they add up to 1.")
    st.latex(eq)
    n = ctx.n()
    shapes(f"mask `[N={n}, N={n}]`, pattern per head `[N={n}, N={n}]` (rows sum to 1)")
    blocked = (~torch.isfinite(attn.bias[h])).tolist()
    labels = ctx.labels(ctx.first_stream)
    left, right = st.columns(2)
    series = {"scaled score + bias": attn.masked[h]}
    if attn.position_bias is not None:
        series = {"scaled score": attn.scaled[h], "position bias": attn.position_bias[h],
                  **series}
    with left:
        show(key_chart(labels, series, f"Before the softmax, head {h}", blocked=blocked,
                       query=attn.position), "masked")
    with right:
        show(key_chart(labels, {"attention weight": attn.pattern[h]},
                       f"Attention weights of {ctx.label(ctx.first_stream)}, head {h}",
                       y_title="weight", blocked=blocked, query=attn.position), "weights")


def weighted_sum_step(ctx: TourContext) -> None:
    attn = ctx.trace().block.attn
    h, g = ctx.head, ctx.head // attn.group_size
    share = attn.pattern[h] * attn.v[g].norm(dim=-1)
    top = int(share.argmax())
    st.markdown(
        f"The head's output for {you(ctx)} is the sum of every token's **value** vector, "
        f"each multiplied by its attention weight. Here the largest share comes from "
        f"“{escape_markdown(ctx.labels(ctx.first_stream)[top])}” (weight "
        f"{float(attn.pattern[h, top]):.3f}). This is where information moves between "
        "tokens; everything else in the block works on each token separately.")
    st.latex(r"z = \sum_{j} a_j\, v_j")
    shapes(f"weights `[N={ctx.n()}]` · V `[N={ctx.n()}, d_head={ctx.cfg.d_head}]` → z "
           f"`[d_head={ctx.cfg.d_head}]`")
    left, right = st.columns(2)
    with left:
        show(key_chart(ctx.labels(ctx.first_stream), {"a_j · ‖v_j‖": share},
                       f"What each token contributes, head {h}", y_title="a_j · ‖v_j‖",
                       query=attn.position), "share")
    with right:
        show(vector_chart({"z": attn.z[h]}, f"Output of head {h}",
                          x_title="dimension of the head"), "z")


def heads_step(ctx: TourContext) -> None:
    cfg, attn = ctx.cfg, ctx.trace().block.attn
    st.markdown(
        f"All {cfg.n_heads} heads ran at the same time, each with its own weights (left: "
        f"where {you(ctx)} looks in every head). Their outputs are **concatenated** into one "
        f"vector of n_heads · d_head = {cfg.n_heads * cfg.d_head} numbers and multiplied by "
        "the output matrix W_O, which mixes the heads and writes the result in the residual "
        "stream's coordinates.")
    st.latex(r"\mathrm{Attn}(x)_i = \big[z^{(1)}; \dots; z^{(H)}\big]\, W_O")
    shapes(f"{cfg.n_heads} × z `[d_head={cfg.d_head}]` → concat "
           f"`[n_heads·d_head={cfg.n_heads * cfg.d_head}]` · W_O `[{cfg.n_heads * cfg.d_head}, "
           f"d_model={cfg.d_model}]` → `[d_model={cfg.d_model}]` (for every token: "
           f"{shape(ctx, 'ND')})")
    left, right = st.columns(2)
    with left:
        show(heads_heatmap(attn.pattern, ctx.labels(ctx.first_stream),
                           f"Where {ctx.label(ctx.first_stream)} looks, every head",
                           ctx.head), "heads")
    with right:
        show(vector_chart({"attention output": attn.out},
                          "What attention writes for this token"), "attn_out")
