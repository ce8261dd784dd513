"""Streamlit glue for the cost calculator: sizes in (starting from the loaded model's), the
closed forms of `explorer.analysis.cost` out, full vs local-window attention side by side.

The widgets' keys carry the loaded model's label, so loading another model starts the
calculator from that model's sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from explorer.analysis.cost import (
    attention_matrix_bytes,
    flops_per_token,
    format_bytes,
    kv_cache_bytes,
    parameter_formula,
)
from explorer.analysis.params import format_count, parameter_counts
from explorer.config import ModelConfig
from explorer.ui.export import show_in, show_vega
from explorer.ui.resources import model_label
from explorer.viz.params import parameter_bar_chart
from explorer.viz.positional import line_chart

DTYPE_BYTES = {"float32": 4, "bfloat16 / float16": 2, "int8": 1}
CURVE_LENGTHS = [2**i for i in range(7, 18)]  # 128 .. 131,072 tokens
TEXT_KINDS = ("encoder", "decoder", "encoder-decoder")


@st.cache_data(max_entries=8, show_spinner=False)
def real_parameters(label: str, _model: Any) -> dict[str, int]:
    return parameter_counts(_model)


def sized_config(lm: Any) -> tuple[ModelConfig | None, dict[str, int]]:
    """The loaded model's architecture at the sizes the visitor sets (None when the sizes do
    not fit together, after saying why), and the other inputs (n, batch, bytes, window)."""
    cfg = lm.config
    if cfg.kind not in TEXT_KINDS:
        st.info(f"The calculator covers text models (encoders, decoders, encoder-decoders); "
                f"the loaded model is a {cfg.kind} model. It starts from its sizes as a "
                "decoder's.")
        cfg = ModelConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                          d_mlp=cfg.d_mlp, d_vocab=max(cfg.d_vocab, 2), n_ctx=cfg.n_ctx,
                          n_layers=cfg.n_layers, d_head=cfg.d_head)
    key = f"lab_cost_{model_label(lm)}"
    cols = st.columns(4)
    n = cols[0].number_input("Sequence length n", 1, 1_048_576, min(cfg.n_ctx, 2048),
                             key=f"{key}_n")
    d_model = cols[1].number_input("d_model", 8, 65_536, cfg.d_model, 8, key=f"{key}_d")
    n_layers = cols[2].number_input("Layers", 1, 256, cfg.n_layers, key=f"{key}_l")
    d_vocab = cols[3].number_input("Vocabulary", 2, 1_000_000, cfg.d_vocab, key=f"{key}_v")
    cols = st.columns(4)
    n_heads = cols[0].number_input("Heads", 1, 256, cfg.n_heads, key=f"{key}_h")
    n_kv = cols[1].number_input("KV heads", 1, 256, cfg.n_kv_heads, key=f"{key}_g",
                                help="Fewer than heads: grouped-query attention; 1: "
                                     "multi-query attention.")
    d_mlp = cols[2].number_input("d_mlp", 1, 262_144, cfg.d_mlp, key=f"{key}_f")
    dtype = cols[3].selectbox("Numbers stored as", list(DTYPE_BYTES), index=1,
                              key=f"{key}_dtype")
    cols = st.columns(4)
    batch = cols[0].number_input("Batch", 1, 1024, 1, key=f"{key}_b")
    local = cols[1].toggle("Compare a local window", True, key=f"{key}_local")
    window = cols[2].number_input("Window w (|i − j| ≤ w)", 1, 1_048_576,
                                  cfg.window or min(1024, max(1, cfg.n_ctx // 4)), key=f"{key}_w",
                                  disabled=not local)
    changes: dict[str, Any] = {"d_model": d_model, "n_layers": n_layers, "d_vocab": d_vocab,
                               "n_heads": n_heads, "n_kv_heads": n_kv, "d_mlp": d_mlp,
                               "window": None}
    if cfg.kind == "encoder-decoder":
        changes["n_decoder_layers"] = cols[3].number_input(
            "Decoder layers", 1, 256, cfg.n_decoder_layers, key=f"{key}_ld")
    if (d_model, n_heads) != (cfg.d_model, cfg.n_heads):
        changes["d_head"] = None  # d_model / heads again
    try:
        if changes.get("d_head", 0) is None and d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({n_heads})")
        sized = cfg.replace(**changes)
    except ValueError as exc:
        st.error(f"These sizes do not fit together: {exc}.")
        return None, {}
    if n > cfg.n_ctx:
        st.caption(f"n = {n:,} is beyond this model's trained context ({cfg.n_ctx:,}); the "
                   "formulas still say what it would cost.")
    return sized, {"n": int(n), "batch": int(batch), "bytes": DTYPE_BYTES[dtype],
                   "window": int(window) if local else 0}


def parameters_view(lm: Any, cfg: ModelConfig) -> None:
    formula = parameter_formula(cfg)
    total = sum(formula.values())
    left, right = st.columns([1, 1])
    with left:
        st.metric("Parameters", format_count(total), help=f"{total:,}")
        if cfg == lm.config.replace(window=None):
            real = real_parameters(model_label(lm), lm.model)
            same = "equals" if real == formula else "differs from"
            st.caption(f"At the loaded model's own sizes the formula {same} its real count, "
                       f"{sum(real.values()):,} parameters, component by component.")
        st.latex(r"V D + L\,(2 D h d_h + 2 D g d_h + k\,D\,d_{mlp}) + \ldots")
        st.caption("Embedding V·D; per layer q and o (D·h·d_h each), k and v (D·g·d_h each: "
                   "g KV heads) and the feed-forward's k matrices of D·d_mlp (k = 3 when gated: "
                   "SwiGLU, GeGLU). Biases, norms, positions and an untied unembedding add "
                   "their own terms, all counted in the total.")
    with right:
        show_vega(parameter_bar_chart(formula), width="stretch", key="lab_cost_parameter_bar_chart")


def costs_view(cfg: ModelConfig, inputs: dict[str, int]) -> None:
    n, batch, nbytes, window = (inputs[k] for k in ("n", "batch", "bytes", "window"))
    variants = {"full attention": None}
    if window:
        variants[f"local window w = {window:,}"] = window
    rows = []
    for name, w in variants.items():
        flops = flops_per_token(cfg, n, w)
        rows.append({
            "attention": name,
            "FLOPs per token": format_count(flops.total),
            "of which attention": f"{flops.attention / flops.total:.1%}",
            "attention matrix, one layer": format_bytes(
                attention_matrix_bytes(cfg, n, nbytes, batch, w)),
            "KV cache": format_bytes(kv_cache_bytes(cfg, n, nbytes, batch, w))
            if cfg.kind != "encoder" else "none (encoders do not decode)",
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    weights = sum(parameter_formula(cfg).values()) * nbytes
    st.caption(f"The weights themselves take {format_bytes(weights)}. FLOPs are per token of "
               f"a forward at context n (the last token of a decoder, any token of an "
               f"encoder); training costs about three times as much (forward and backward).")
    st.latex(r"\text{FLOPs/token} \approx 2 N_{\text{matmul}} + 4\,L\,h\,d_h\,m, \quad "
             r"\text{attention matrix} = b\,h\,n\,m \cdot \text{bytes}, \quad "
             r"\text{KV cache} = 2\,L\,b\,g\,d_h\,n \cdot \text{bytes}")
    st.caption("m: keys a query sees (n, or w + 1 with a causal window); N_matmul: the "
               "weights a token is multiplied by (a mixture of experts counts its top-k).")
    curves(cfg, inputs, variants)


def curves(cfg: ModelConfig, inputs: dict[str, int], variants: dict[str, int | None]) -> None:
    n, batch, nbytes = inputs["n"], inputs["batch"], inputs["bytes"]
    lengths = np.array(CURVE_LENGTHS)
    flops = {name: [flops_per_token(cfg, int(m), w).total for m in lengths]
             for name, w in variants.items()}
    memory = {f"attention matrix, {name}": [attention_matrix_bytes(cfg, int(m), nbytes, batch, w)
                                            for m in lengths]
              for name, w in variants.items()}
    if cfg.kind != "encoder":
        memory.update({f"KV cache, {name}": [kv_cache_bytes(cfg, int(m), nbytes, batch, w)
                                             for m in lengths]
                       for name, w in variants.items()})
    left, right = st.columns(2)
    fig = line_chart(lengths, flops, title="FLOPs per token vs context", x_title="tokens n",
                     y_title="FLOPs", log_y=True, marker_x=n,
                     note="the attention term grows with n; a window caps it")
    fig.update_xaxes(type="log")
    show_in(left)(fig, key="lab_cost_flops")
    fig = line_chart(lengths, {k: np.array(v, dtype=float) / 2**20 for k, v in memory.items()},
                     title="Memory vs context", x_title="tokens n", y_title="MiB", log_y=True,
                     marker_x=n, note="attention matrix: n² per layer; KV cache: n")
    fig.update_xaxes(type="log")
    show_in(right)(fig, key="lab_cost_memory")
