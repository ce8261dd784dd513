"""Streamlit glue for the attention lab: the editable example, the sqrt(d_k) experiment, the
masks and the head split (computations in `explorer.analysis.lab_attention`, figures in
`explorer.viz.lab`).

Every section reads the example's tokens (typed by the visitor, split on spaces): their
labels are shown as text (position-prefixed, invisible characters made visible, escaped in
every chart).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from explorer.analysis.cost import attention_parameters
from explorer.analysis.lab_attention import (
    MASK_USES,
    MASKS,
    SCALED,
    UNSCALED,
    AttentionSteps,
    attention_steps,
    mask_pattern,
    random_qkv,
    scaling_curves,
    softmax_stats,
    split_heads,
)
from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.nn.attention import attention_pattern
from explorer.ui.export import show_chart, show_in
from explorer.ui.url_state import in_url
from explorer.ui.widgets import escape_markdown
from explorer.viz.attention import head_small_multiples
from explorer.viz.lab import mask_grid, tensor_heatmap
from explorer.viz.positional import bar_chart, line_chart
from explorer.viz.tokens import display_token

MAX_TOKENS = 8
DEFAULT_TOKENS = "The cat sat on the mat"
D_K_CHOICES = [2**i for i in range(11)]  # 1 .. 1024


def example_tokens() -> list[str]:
    """The example's tokens (at most `MAX_TOKENS`, at least 2), typed by the visitor."""
    text = st.text_input("Tokens (separated by spaces)", DEFAULT_TOKENS, max_chars=200,
                         **in_url("lab_tokens"),
                         help=f"Up to {MAX_TOKENS} tokens; each one becomes a row of Q, K, V.")
    tokens = text.split()[:MAX_TOKENS]
    if len(text.split()) > MAX_TOKENS:
        st.caption(f"Only the first {MAX_TOKENS} tokens are used.")
    if len(tokens) < 2:
        st.info("Type at least two tokens; the example uses two placeholders meanwhile.")
        tokens = ["token-0", "token-1"]
    return tokens


LABEL_CHARS = 12  # longer tokens are cut in chart labels, so the matrices keep their room


def token_labels(tokens: list[str]) -> list[str]:
    labels = [display_token(t) for t in tokens]
    return [f"{i}: {label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + '…'}"
            for i, label in enumerate(labels)]


def dims(d: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i}" for i in range(d)]


def shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


# --------------------------------------------------------------------------- the example


def _typed(name: str, labels: list[str], start: torch.Tensor, key: str) -> torch.Tensor:
    """An editable table (rows: tokens, columns: dimensions) starting from ``start``."""
    st.markdown(f"**{name}** [{start.shape[0]}, {start.shape[1]}]")
    frame = pd.DataFrame(start.numpy().round(2), columns=dims(start.shape[1]))
    frame.insert(0, "token", labels)
    edited = st.data_editor(frame, key=key, disabled=["token"], hide_index=True,
                            width="stretch")
    values = edited.drop(columns="token").apply(pd.to_numeric, errors="coerce")
    return torch.tensor(np.nan_to_num(values.to_numpy(dtype=np.float64)), dtype=torch.float32)


def example_section(tokens: list[str]) -> None:
    """Scaled dot-product attention on the visitor's tokens, every step shown."""
    labels = token_labels(tokens)
    n = len(tokens)
    top = st.columns([1, 1, 1, 1])
    d_k = top[0].slider("d_k (dimension of q and k)", 1, 8, 4, **in_url("lab_sdpa_dk"))
    source = top[1].radio("Q, K, V", ["random", "typed"], horizontal=True, **in_url("lab_sdpa_src"),
                          help="Random: drawn from N(0, 1) with the seed. Typed: edit the "
                               "tables below (they start from the random values).")
    seed = top[2].number_input("Seed", 0, 10_000, 0, **in_url("lab_sdpa_seed"))
    kind = top[3].selectbox("Mask", MASKS, index=2, **in_url("lab_sdpa_mask"))
    padding, window = 0, 1
    if kind == "padding":
        padding = st.slider("Padding tokens at the end", 0, n - 1, 1, **in_url("lab_sdpa_pad"))
    elif kind == "local window":
        window = st.slider("Window (|i − j| ≤ w)", 0, n - 1, 1, **in_url("lab_sdpa_win"))
    q, k, v = random_qkv(n, d_k, int(seed))
    if source == "typed":
        st.caption("Edit any cell; the attention below recomputes.")
        cols = st.columns(3)
        editor_key = f"{n}_{d_k}_{seed}"
        with cols[0]:
            q = _typed("Q", labels, q, f"lab_q_{editor_key}")
        with cols[1]:
            k = _typed("K", labels, k, f"lab_k_{editor_key}")
        with cols[2]:
            v = _typed("V", labels, v, f"lab_v_{editor_key}")
    steps = attention_steps(q, k, v, mask_pattern(kind, n, padding, window))
    st.latex(r"\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left("
             r"\frac{Q K^\top}{\sqrt{d_k}} + M\right) V")
    show_steps(steps, labels, kind)


def show_steps(steps: AttentionSteps, labels: list[str], kind: str) -> None:
    d = steps.q.shape[1]
    row = st.columns(3)
    for col, name, t in zip(row, "QKV", (steps.q, steps.k, steps.v), strict=True):
        show_in(col)(tensor_heatmap(t, labels, dims(d), f"{name} {shape(t)}",
                                        row_title="token", col_title="dimension"),
                         key=f"lab_sdpa_{name}")
    st.markdown(
        f"**1. Scores** — every query against every key: S = Q Kᵀ. **2. Scale** by "
        f"1/√d_k = 1/√{d} = {steps.scale:.3f}. **3. Mask** — add M: 0 where a query may "
        f"look, −∞ where it may not ({escape_markdown(kind)}). **4. Softmax** along each row "
        "turns scores into weights that sum to 1 (e^−∞ = 0). **5. Weighted sum** — each "
        "output row is Σⱼ wᵢⱼ vⱼ.")
    row = st.columns(3)
    matrices = [("1. Q Kᵀ", steps.scores), (f"2. ÷ √{d}", steps.scaled),
                ("3. + mask M", steps.masked)]
    for col, (title, t) in zip(row, matrices, strict=True):
        show_in(col)(tensor_heatmap(t, labels, labels, f"{title} {shape(t)}",
                                        row_title="query", col_title="key"),
                         key=f"lab_sdpa_{title[0]}")
    row = st.columns([1, 1, 1])
    show_in(row[0])(tensor_heatmap(steps.weights, labels, labels,
                                       f"4. softmax: weights {shape(steps.weights)}",
                                       note="each row sums to 1", row_title="query",
                                       col_title="key", diverging=False),
                        key="lab_sdpa_weights")
    show_in(row[1])(tensor_heatmap(steps.out, labels, dims(d),
                                       f"5. output = weights · V {shape(steps.out)}",
                                       row_title="token", col_title="dimension"),
                        key="lab_sdpa_out")
    top, entropy = softmax_stats(steps.weights)
    row[2].dataframe(pd.DataFrame({"query": labels, "largest weight": top.numpy(),
                                   "entropy (nats)": entropy.numpy()}),
                     hide_index=True, width="stretch")
    row[2].caption("Entropy 0: the query copies one value; ln n: it averages all it sees.")


# --------------------------------------------------------------------------- sqrt(d_k)


@st.cache_data(max_entries=8, show_spinner=False)
def _curves(n_keys: int) -> Any:
    return scaling_curves(D_K_CHOICES, n_keys=n_keys, n_queries=256)


def scaling_section() -> None:
    """The largest softmax weight and the entropy against d_k, with and without scaling."""
    cols = st.columns([2, 1])
    d_k = cols[0].select_slider("d_k", D_K_CHOICES, value=64, **in_url("lab_scale_dk"))
    n_keys = cols[1].slider("Keys", 4, 64, 16, **in_url("lab_scale_keys"))
    curves = _curves(n_keys)
    i = curves.d_k.index(d_k)
    metrics = st.columns(4)
    metrics[0].metric("Largest weight, scaled", f"{curves.max_weight[SCALED][i]:.2f}")
    metrics[1].metric("Largest weight, not scaled", f"{curves.max_weight[UNSCALED][i]:.2f}")
    metrics[2].metric("Entropy, scaled", f"{curves.entropy[SCALED][i]:.2f}",
                      help=f"nats; ln {n_keys} = {np.log(n_keys):.2f} is a uniform row")
    metrics[3].metric("Entropy, not scaled", f"{curves.entropy[UNSCALED][i]:.2f}")
    left, right = st.columns(2)
    for col, stat, title, y in ((left, curves.max_weight, "Largest softmax weight", "weight"),
                                (right, curves.entropy, "Entropy of the softmax", "nats")):
        fig = line_chart(curves.d_k, stat, title=title, x_title="d_k", y_title=y,
                         marker_x=d_k, note=f"mean over 256 random queries, {n_keys} keys")
        fig.update_xaxes(type="log")
        show_in(col)(fig, key=f"lab_scale_{y}")
    q, k, _ = random_qkv(1, d_k, seed=d_k, m=n_keys)
    rows = {name: attention_pattern(q[None], k[None], scale=scale)[0, 0]
            for name, scale in ((SCALED, d_k ** -0.5), (UNSCALED, 1.0))}
    show_chart(bar_chart(list(range(n_keys)), rows, title=f"One query's weights at d_k = "
                              f"{d_k}", x_title="key", y_title="weight"), key="lab_scale_row")


# --------------------------------------------------------------------------- masks


def masks_section(tokens: list[str], lm: Any) -> None:
    labels = token_labels(tokens)
    n = len(tokens)
    cols = st.columns(2)
    padding = cols[0].slider("Padding tokens at the end", 0, n - 1, min(2, n - 1),
                             **in_url("lab_mask_pad"))
    window = cols[1].slider("Local window w (|i − j| ≤ w)", 0, n - 1, 1, **in_url("lab_mask_win"))
    masks = {"padding": mask_pattern("padding", n, padding),
             "causal": mask_pattern("causal", n),
             f"local window (w = {window})": mask_pattern("local window", n, window=window)}
    show_chart(mask_grid(masks, labels, "Which query (row) sees which key (column)"),
                    key="lab_masks")
    st.markdown("\n".join(f"- **{mask}**: {use}" for mask, use in MASK_USES.items()))
    cfg = lm.config
    uses = {"encoder": "padding only (bidirectional)", "decoder": "causal",
            "encoder-decoder": "padding in the encoder, causal in the decoder, padding over "
                               "the encoder in cross-attention"}.get(
        cfg.kind, "no mask over its inputs (every position sees every other)")
    window_note = f", and a local window of {cfg.window}" if cfg.window is not None else ""
    st.caption(f"The loaded model, {escape_markdown(lm.name)}, is a {cfg.kind}: it uses "
               f"{uses}{window_note}.")


# --------------------------------------------------------------------------- heads


def heads_section(tokens: list[str], lm: Any) -> None:
    labels = token_labels(tokens)
    n = len(tokens)
    cols = st.columns(3)
    d_model = cols[0].select_slider("d_model", [8, 16, 32, 64], value=16, **in_url("lab_heads_d"))
    n_heads = cols[1].select_slider("heads", [h for h in (1, 2, 4, 8) if d_model % h == 0],
                                    value=4, **in_url("lab_heads_h"))
    n_kv = cols[2].select_slider("key/value heads", [g for g in (1, 2, 4, 8) if n_heads % g == 0],
                                 value=n_heads, **in_url("lab_heads_g"))
    torch.manual_seed(0)
    tiny = ModelConfig(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv, d_mlp=2 * d_model,
                       d_vocab=MAX_TOKENS, n_ctx=MAX_TOKENS, n_layers=1, name="lab-tiny")
    model = build_model(tiny).eval()
    block = model.blocks[0]
    with torch.no_grad():
        x = block.ln1(model.embed(torch.arange(n)[None], torch.arange(n)))[0]
        fused = block.attn(x[None], is_causal=True)[0]
    split = split_heads(block.attn, x)
    st.dataframe(shape_table(tiny, lm.config, n, lm.name), hide_index=True, width="stretch")
    d_head = tiny.d_head
    head_cols = [f"h{h}·{j}" for h in range(n_heads) for j in range(d_head)]
    left, right = st.columns(2)
    show_in(left)(tensor_heatmap(split.q_flat, labels, head_cols,
                                     f"Q = x W_Qᵀ {shape(split.q_flat)}",
                                     note=f"columns h·j: dimension j of head h "
                                          f"({n_heads} heads × {d_head})",
                                     row_title="token", col_title="column", digits=None),
                      key="lab_heads_q")
    show_in(right)(tensor_heatmap(split.concat, labels, head_cols,
                                      f"heads concatenated {shape(split.concat)}",
                                      note="each head's weighted values, side by side again",
                                      row_title="token", col_title="column", digits=None),
                       key="lab_heads_concat")
    fig = head_small_multiples(split.pattern, labels, head_labels=[
        f"head {h} (reads K/V head {h // (n_heads // n_kv)})" for h in range(n_heads)],
        scale="linear")
    show_chart(fig, key="lab_heads_patterns")
    error = float((split.out - fused).abs().max())
    st.caption(f"Step by step, the output [n, d_model] = {shape(split.out)} equals the "
               f"module's own fused forward (largest difference {error:.1e}).")


def shape_table(tiny: ModelConfig, cfg: ModelConfig, n: int, name: str) -> pd.DataFrame:
    """Each step's shape in the tiny model and in the loaded model (for n tokens)."""
    def shapes(c: ModelConfig) -> list[str]:
        h, g, d, D = c.n_heads, c.n_kv_heads, c.d_head, c.d_model
        return [f"[{n}, {D}]", f"[{D}, {h * d}]", f"[{n}, {h * d}]", f"[{h}, {n}, {d}]",
                f"[{g}, {n}, {d}] each", f"[{h}, {n}, {n}]", f"[{h}, {n}, {d}]",
                f"[{n}, {h * d}]", f"[{n}, {D}]", f"{attention_parameters(c):,}"]
    steps = ["input x", "W_Q", "Q = x W_Qᵀ", "Q split into heads (d_head each)",
             "K, V (grouped: fewer heads)", "scores / weights per head", "per-head output z",
             "heads concatenated", "output z W_Oᵀ", "parameters (q, k, v, o)"]
    return pd.DataFrame({"step": steps, "tiny model": shapes(tiny),
                         f"loaded: {name}": shapes(cfg)})
