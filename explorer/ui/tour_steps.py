"""The tour's steps from the text to the output of block 1, written for the loaded family:
tokens, embeddings, the norm, the residual adds and the feed-forward here; the attention
steps in between in `explorer.ui.tour_steps_attention`.

Each step: one short paragraph, the equation (``st.latex``), the shapes with this model's
sizes, and a small chart of the real values (`explorer.viz.tour`) of the token and head the
tour follows. Text a user or tokenizer produced is escaped (`escape_markdown`); equations hold
only numbers. Vaswani et al. 2017; Su et al. 2021 (RoPE); Ainslie et al. 2023 (GQA); Shazeer
2020 (GLU); Ba et al. 2016 / Zhang & Sennrich 2019 (LayerNorm / RMSNorm).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st
import torch

from explorer.nn.mlp import ACTIVATIONS
from explorer.ui.export import show_chart
from explorer.ui.tour import Step, TourContext
from explorer.ui.widgets import chips_for, escape_markdown, render_token_chips
from explorer.viz.positional import value_heatmap
from explorer.viz.tour import activation_chart, vector_chart

NORM_NAMES = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}
NORM_LATEX = {
    "rmsnorm": r"\mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac{1}{D}\sum_{i} x_i^2 + \epsilon}}"
               r" \odot g",
    "layernorm": r"\mathrm{LayerNorm}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot"
                 r" \gamma + \beta",
}
ACT_NAMES = {"silu": "SiLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh)", "relu": "ReLU"}
MLP_NAMES = {"swiglu": "SwiGLU", "geglu": "GeGLU"}
MAX_HEATMAP_DIMS = 64


def show(fig: Any, key: str) -> None:
    """A step's chart (its toolbar saves a PNG; kept for the page's report)."""
    show_chart(fig, key=f"tour_{key}", csv=False)


def shapes(text: str) -> None:
    """The step's tensor shapes, with this model's sizes."""
    st.markdown(f"**Shapes** · {text}")


def you(ctx: TourContext, stream: str | None = None) -> str:
    """The followed token, escaped for markdown: ``token 3, “␣cat”``."""
    stream = stream or ctx.first_stream
    position, _, piece = ctx.label(stream).partition(": ")
    return f"token {position} (“{escape_markdown(piece)}”)"


def norm_of(ctx: TourContext) -> str:
    return NORM_NAMES[ctx.cfg.norm]


def _dims(ctx: TourContext) -> dict[str, tuple[str, int]]:
    cfg = ctx.cfg
    return {"N": ("N", ctx.n()), "D": ("d_model", cfg.d_model), "H": ("n_heads", cfg.n_heads),
            "G": ("n_kv_heads", cfg.n_kv_heads), "d": ("d_head", cfg.d_head),
            "F": ("d_mlp", cfg.d_mlp), "V": ("d_vocab", cfg.d_vocab)}


def shape(ctx: TourContext, letters: str) -> str:
    """``[N=9, d_model=576]`` for the letters "ND" (see :func:`_dims`), in code style."""
    dims = _dims(ctx)
    return f"`{ctx.shape(*(dims[c] for c in letters))}`"


# --------------------------------------------------------------------------- 1-3


def same_texts(ctx: TourContext) -> bool:
    """Whether T5's decoder reads the same tokens as its encoder."""
    ids = [ctx.run.streams[s].tokens.ids for s in ("encoder", "decoder")]
    return ids[0].shape == ids[1].shape and bool((ids[0] == ids[1]).all())


def tokens_step(ctx: TourContext) -> None:
    cfg, run = ctx.cfg, ctx.run
    st.markdown(
        f"The model never sees letters. Its tokenizer cuts the text into pieces from a fixed "
        f"vocabulary of **{cfg.d_vocab:,}** tokens and replaces each piece by its number, "
        f"its *id*. Your prompt is **{ctx.n()} tokens**."
        + (" Special tokens the tokenizer adds (marked) tell the model where a text starts "
           "or ends." if bool(run.streams[ctx.first_stream].tokens.special.any()) else "")
        + (" T5 reads two texts, each tokenized: the encoder reads the prompt, the decoder "
           "the decoder text" + (" (here the prompt again)." if same_texts(ctx) else ".")
           if ctx.two_stacks else ""))
    st.latex(r"\text{text} \;\longrightarrow\; (t_1, \dots, t_N), \qquad "
             rf"t_i \in \{{0, \dots, {cfg.d_vocab - 1}\}}")
    shapes(f"ids {shape(ctx, 'N')}")
    for stream in dict.fromkeys([ctx.first_stream, ctx.last_stream]):
        toks = run.streams[stream].tokens
        if ctx.two_stacks:
            st.caption("Encoder tokens" if stream == "encoder" else "Decoder tokens")
        render_token_chips(chips_for(ctx.lm.tokenizer, toks.ids.tolist(), toks.pieces))


def embeddings_step(ctx: TourContext) -> None:
    cfg = ctx.cfg
    emb = ctx.trace().embeddings
    t = ctx.followed(ctx.first_stream)
    extra = {
        "learned": " Then it adds row *i* of a learned **position table** W_pos "
                   f"[n_ctx={cfg.n_ctx:,}, d_model={cfg.d_model}]: the same word at two places "
                   "starts out different.",
        "sinusoidal": " Then it adds a fixed sine/cosine vector for position *i*.",
        "rope": " Nothing about position is added here: this model rotates queries and keys "
                "by their position inside attention (RoPE, step 4).",
        "relative": " Nothing about position is added here: T5 adds a learned bias per "
                    "relative distance to the attention scores (step 6).",
        "alibi": " Nothing about position is added here: ALiBi subtracts a penalty "
                 "proportional to distance from the attention scores (step 6).",
    }[cfg.positional]
    if emb.token_types is not None:
        extra += " BERT also adds a *segment* vector (sentence A or B; here all A)."
    st.markdown(
        f"Each id picks one row of the **embedding matrix** W_E: a vector of "
        f"d_model = {cfg.d_model} numbers learned in training, the token's meaning as a "
        f"point in space.{extra} This vector is the start of the token's **residual "
        "stream**: every later layer reads it and adds to it.")
    terms = "W_E[t_i]" + (r" + W_{pos}[i]" if emb.positions is not None else "") \
        + (r" + W_{type}[0]" if emb.token_types is not None else "")
    st.latex(rf"x_i = {terms}")
    shapes(f"W_E `[d_vocab={cfg.d_vocab}, d_model={cfg.d_model}]` → x {shape(ctx, 'ND')}")
    series = {"token embedding": emb.tokens[t]}
    if emb.positions is not None:
        series["position embedding"] = emb.positions[t]
    if emb.token_types is not None:
        series["segment embedding"] = emb.token_types[t]
    if len(series) > 1:
        series["sum"] = emb.summed[t]
    left, right = st.columns(2)
    with left:
        show(vector_chart(series, f"Embedding of {ctx.label(ctx.first_stream)}"), "emb_vec")
    dims = min(cfg.d_model, MAX_HEATMAP_DIMS)
    with right:
        show(value_heatmap(emb.summed[:, :dims], title="Every token, first "
                           f"{dims} of {cfg.d_model} dimensions", x_title="dimension",
                           y_title="token", y_labels=ctx.labels(ctx.first_stream),
                           max_cells=128), "emb_map")


def norm_step(ctx: TourContext) -> None:
    trace = ctx.trace()
    t = ctx.followed(ctx.first_stream)
    cfg = ctx.cfg
    if not trace.block.pre_norm:
        emb = trace.embeddings
        before, after = emb.summed[t], emb.out[t]
        st.markdown(
            f"BERT normalises the summed embeddings once with a {norm_of(ctx)}: each token's "
            "vector is shifted to mean 0 and scaled to variance 1, then stretched and moved "
            "by learned γ and β. Its blocks are **post-norm**: attention reads the stream as "
            "it is, and each sub-layer's output is added and *then* normalised (steps 9 and "
            "11).")
    else:
        before, after = trace.block.resid_pre, trace.block.attn.reads
        what = ("divides the vector by its root-mean-square (no mean subtraction, no bias) "
                "and multiplies by learned gains g" if cfg.norm == "rmsnorm" else
                "subtracts its mean, divides by its standard deviation and applies learned "
                "γ and β")
        st.markdown(
            f"Block 1 begins by normalising each token's vector: {norm_of(ctx)} {what}. "
            "Attention then sees vectors of a steady size, however large the residual stream "
            "grows. This is **pre-norm**: only the copy that enters a sub-layer is "
            "normalised; the stream itself is left as it is until the final norm.")
    st.latex(NORM_LATEX[cfg.norm])
    shapes(f"{shape(ctx, 'ND')} → {shape(ctx, 'ND')} (each token on its own), "
           f"g{'' if cfg.norm == 'rmsnorm' else ', γ, β'} `[d_model={cfg.d_model}]`")
    cols = st.columns(3)
    cols[0].metric("mean before", f"{float(before.mean()):.3f}")
    cols[1].metric("RMS before → after", f"{float(before.pow(2).mean().sqrt()):.3f} → "
                   f"{float(after.pow(2).mean().sqrt()):.3f}")
    cols[2].metric("ε", f"{cfg.norm_eps:g}")
    show(vector_chart({"before": before, "after": after},
                      f"{ctx.label(ctx.first_stream)} before and after {norm_of(ctx)}"), "norm")


# --------------------------------------------------------------------------- 9-11


def residual_step(ctx: TourContext) -> None:
    block = ctx.trace().block
    if block.pre_norm:
        text = ("The attention output is **added** to the token's vector: the residual "
                "connection. The block refines what is there instead of replacing it.")
        eq = r"x_{mid} = x + \mathrm{Attn}(\mathrm{Norm}(x))"
    else:
        text = ("The attention output is added to the token's vector (the residual "
                f"connection) and the sum is normalised: {norm_of(ctx)} after the add "
                "(post-norm).")
        eq = rf"x_{{mid}} = \mathrm{{{norm_of(ctx)}}}(x + \mathrm{{Attn}}(x))"
    st.markdown(f"{text} Lengths: ‖x‖ = {float(block.resid_pre.norm()):.2f}, ‖attention "
                f"output‖ = {float(block.attn.out.norm()):.2f}, ‖x_mid‖ = "
                f"{float(block.resid_mid.norm()):.2f}.")
    st.latex(eq)
    shapes(f"{shape(ctx, 'ND')} + {shape(ctx, 'ND')} → {shape(ctx, 'ND')}")
    show(vector_chart({"x (entering block 1)": block.resid_pre,
                       "attention output": block.attn.out, "x_mid": block.resid_mid},
                      f"Residual add at {ctx.label(ctx.first_stream)}"), "resid_mid")


def _activation(name: str):
    fn = ACTIVATIONS[name]
    return lambda values: fn(torch.as_tensor(np.asarray(values, dtype=np.float32))).numpy()


def mlp_step(ctx: TourContext) -> None:
    cfg, mlp = ctx.cfg, ctx.trace().block.mlp
    act = ACT_NAMES[cfg.activation]
    norm = f"After a second {norm_of(ctx)}, e" if ctx.trace().block.pre_norm else "E"
    if mlp.up is not None:
        what = (f"{norm}ach token goes through a **gated feed-forward** network "
                f"({MLP_NAMES.get(cfg.mlp, cfg.mlp)}): "
                f"W_gate and W_up map d_model = {cfg.d_model} to d_mlp = {cfg.d_mlp}; "
                f"{act} of the gate multiplies the up projection unit by unit; W_down maps "
                "back.")
        eq = (rf"\mathrm{{FFN}}(x) = \big(\mathrm{{{act.split()[0]}}}(x W_{{gate}}) \odot "
              r"x W_{up}\big) W_{down}")
        mats = f"W_gate, W_up `[{cfg.d_model}, {cfg.d_mlp}]`"
    else:
        what = (f"{norm}ach token goes through a two-layer **feed-forward** network: W_1 maps "
                f"d_model = {cfg.d_model} to d_mlp = {cfg.d_mlp}, {act} bends it, W_2 maps "
                "back.")
        eq = rf"\mathrm{{FFN}}(x) = \mathrm{{{act.split()[0]}}}(x W_1 + b_1)\, W_2 + b_2"
        mats = f"W_1 `[{cfg.d_model}, {cfg.d_mlp}]`"
    if mlp.pre is None:
        st.markdown(f"{norm}ach token is routed to a few experts of a mixture of experts; "
                    "their outputs are mixed by the router's weights.")
        show(vector_chart({"FFN output": mlp.out}, "What the feed-forward writes"), "mlp")
        return
    st.markdown(f"{what} The same network runs on every token separately; about two thirds "
                "of a block's parameters are here. Each dot below is one of the "
                f"{cfg.d_mlp:,} hidden units for {you(ctx)}.")
    st.latex(eq)
    shapes(f"{shape(ctx, 'ND')} · {mats} → hidden {shape(ctx, 'NF')} → "
           f"W_down `[{cfg.d_mlp}, {cfg.d_model}]` → {shape(ctx, 'ND')}")
    active = float((mlp.act.abs() > 0.1 * mlp.act.abs().max()).float().mean())
    st.caption(f"{active:.0%} of the units give more than a tenth of the largest output.")
    left, right = st.columns(2)
    with left:
        show(activation_chart(_activation(cfg.activation), mlp.pre, act,
                              f"{act} on this token's {cfg.d_mlp:,} units"), "act")
    with right:
        show(vector_chart({"FFN output": mlp.out}, "What the feed-forward writes"), "mlp")


def block_out_step(ctx: TourContext) -> None:
    block = ctx.trace().block
    eq = (r"x_{out} = x_{mid} + \mathrm{FFN}(\mathrm{Norm}(x_{mid}))" if block.pre_norm else
          rf"x_{{out}} = \mathrm{{{norm_of(ctx)}}}(x_{{mid}} + \mathrm{{FFN}}(x_{{mid}}))")
    st.markdown(
        "The feed-forward output is added to the stream the same way"
        + ("" if block.pre_norm else f", and the sum normalised ({norm_of(ctx)})")
        + f". This is the output of block 1 and the input of block 2. ‖x_out‖ = "
        f"{float(block.resid_post.norm()):.2f}.")
    st.latex(eq)
    shapes(f"{shape(ctx, 'ND')} → {shape(ctx, 'ND')}")
    show(vector_chart({"x_mid": block.resid_mid, "FFN output": block.mlp.out,
                       "x_out": block.resid_post},
                      f"Block 1's output at {ctx.label(ctx.first_stream)}"), "resid_post")


def block_steps(cfg: Any) -> list[Step]:
    """Steps 1-11: the text to the output of (the first stack's) block 1."""
    from explorer.ui.tour_steps_attention import (
        heads_step,
        mask_step,
        qkv_step,
        scores_step,
        weighted_sum_step,
    )

    stack = "the encoder's block 1" if cfg.kind == "encoder-decoder" else "block 1"
    first_norm = ("LayerNorm of the embeddings" if cfg.norm_position == "post"
                  else f"Into {stack}: {NORM_NAMES[cfg.norm]}")
    qkv = "Queries, keys and values" + (" (and RoPE)" if cfg.positional == "rope" else "")
    scale = "Scores" + ("" if not cfg.attn_scale else ", scaled by √d_head")
    mask = ("Causal mask and softmax" if cfg.kind == "decoder" else
            "Position bias and softmax" if cfg.positional == "relative" else "Softmax")
    return [
        Step("tokens", "Text to tokens", tokens_step),
        Step("embed", "Token embeddings" + (" + positions" if cfg.positional in
                                            ("learned", "sinusoidal") else ""),
             embeddings_step),
        Step("norm", first_norm, norm_step),
        Step("qkv", qkv, qkv_step),
        Step("scores", scale, scores_step),
        Step("softmax", mask, mask_step),
        Step("sum", "Weighted sum of values", weighted_sum_step),
        Step("heads", "Heads concatenated, output projection", heads_step),
        Step("resid_mid", "Residual add" + (" and LayerNorm" if cfg.norm_position == "post"
                                            else ""), residual_step),
        Step("mlp", f"Feed-forward ({ACT_NAMES[cfg.activation]})", mlp_step),
        Step("resid_post", "Residual add: block 1's output", block_out_step),
    ]
