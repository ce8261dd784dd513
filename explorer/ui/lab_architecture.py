"""Streamlit glue for the architecture lab: feed-forward units and norms, recurrence vs
attention (a measured timing), a mixture of experts on the prompt's tokens, LoRA (counts on
the loaded model, a live run on a tiny one). Computations in `explorer.analysis.lab_blocks`
and `explorer.analysis.lab_efficient`; the two runs that take seconds (the timing and the
fine-tuning) run only on a button press, inside the heavy-work gate, and their results stay
in the session.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
import torch

from explorer.analysis.cost import mlp_parameters
from explorer.analysis.lab_blocks import ffn_curves, residual_norms, sequence_costs, time_layers
from explorer.analysis.lab_efficient import (
    PROJECTIONS,
    TOY,
    fine_tune,
    lab_moe,
    lora_count,
    one_thread,
    own_embeddings,
    route_tokens,
)
from explorer.analysis.params import format_count
from explorer.nn import build_model
from explorer.nn.norms import RMSNorm
from explorer.ui.export import show_chart, show_in
from explorer.ui.gate import heavy_work
from explorer.ui.interventions import or_message
from explorer.ui.resources import model_label
from explorer.ui.url_state import in_url
from explorer.ui.widgets import chips_for, escape_markdown, prompt_box, tokenize
from explorer.viz.lab import residual_path_dot, tensor_heatmap
from explorer.viz.positional import bar_chart, line_chart
from explorer.viz.tokens import display_token

TIMING_LENGTHS = [64, 128, 256, 512, 1024, 2048, 4096]
TIMING_BUDGET_S = 6.0  # measuring stops starting new lengths after this (under 10 s in all)
MOE_TOKENS = 48
LORA_RANKS = [1, 2, 4, 8, 16, 32, 64]
LORA_STEPS = 150
LORA_BUDGET_S = 4.0  # per run: a busy server stops early rather than hold a visitor


# --------------------------------------------------------------------------- FFN and norms


def ffn_section(lm: Any) -> None:
    u = st.slider("Value u that the gated units multiply by", -2.0, 2.0, 1.0, 0.25,
                  **in_url("lab_ffn_u"))
    x = torch.linspace(-4, 4, 161)
    curves = ffn_curves(x, u)
    show_chart(line_chart(x, curves, title="One hidden unit of each feed-forward type",
                               x_title="x (the unit's input)", y_title="output",
                               note=f"gated units: activation(x) · u with u = {u:g}"),
                    key="lab_ffn_curves")
    cfg = lm.config
    gated = cfg.mlp in ("swiglu", "geglu")
    st.caption(
        f"The loaded model, {escape_markdown(lm.name)}, uses a **{cfg.mlp}** feed-forward "
        f"({cfg.activation}): d_model {cfg.d_model} → d_mlp {cfg.d_mlp} "
        f"({cfg.d_mlp / cfg.d_model:.2f}×) and back, "
        f"{'three matrices (gate, up, down)' if gated else 'two matrices (up, down)'}, "
        f"{format_count(mlp_parameters(cfg))} parameters per layer.")


def norms_section(lm: Any) -> None:
    cols = st.columns(2)
    for col, position, title in ((cols[0], "pre", "Pre-norm (GPT-2, Llama, T5)"),
                                 (cols[1], "post", "Post-norm (original Transformer, BERT)")):
        col.markdown(f"**{title}**")
        col.graphviz_chart(residual_path_dot(position), width="stretch")
    n_layers = st.slider("Blocks in the tiny stack", 2, 24, 12, **in_url("lab_norm_layers"))
    norms = {f"{p}-norm": residual_norms(p, n_layers=n_layers) for p in ("pre", "post")}
    show_chart(line_chart(list(range(n_layers)), norms,
                               title="Size of the residual stream after each block",
                               x_title="block", y_title="mean ‖x‖",
                               note="random tiny stacks from explorer.nn (d_model 64): post-norm "
                                    "renormalises the stream to √64 = 8 after every block"),
                    key="lab_norm_chart")
    cfg = lm.config
    st.caption(f"The loaded model, {escape_markdown(lm.name)}, is {cfg.norm_position}-norm "
               f"with {cfg.norm}.")


# --------------------------------------------------------------------------- RNN vs attention


def sequence_section() -> None:
    cols = st.columns(3)
    n = cols[0].select_slider("Tokens n", [16, 64, 256, 1024, 4096], value=1024,
                              **in_url("lab_seq_n"))
    d = cols[1].select_slider("Width d", [64, 256, 1024], value=256, **in_url("lab_seq_d"))
    window = cols[2].select_slider("Local window", [4, 16, 64, 256], value=64,
                                   **in_url("lab_seq_w"))
    rows = sequence_costs(n, d, window)
    st.dataframe(pd.DataFrame({
        "layer": [r.layer for r in rows],
        "sequential steps": [f"{r.sequential_steps:,}" for r in rows],
        "longest path, first → last token": [f"{r.max_path:,}" for r in rows],
        "operations per layer": [format_count(r.operations) for r in rows],
    }), hide_index=True, width="stretch")
    st.caption("An RNN must finish token i before token i + 1 and carries token 0's "
               "information through n − 1 steps; self-attention does all tokens in one "
               "parallel step and links any two directly, at n² · d operations.")
    if st.button("Measure on this machine", key="lab_seq_run",
                 help=f"Times one RNN layer and one attention layer at n = "
                      f"{', '.join(map(str, TIMING_LENGTHS))} (stops before "
                      f"{TIMING_BUDGET_S + 2:.0f} s)."):
        bar = st.progress(0.0, text="Measuring…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"Measured {done} of {total} lengths")

        def measure() -> Any:
            with heavy_work("timing"):
                return time_layers(TIMING_LENGTHS, budget_s=TIMING_BUDGET_S, on_step=progress)

        timings = or_message(measure)
        bar.empty()
        if timings is not None:
            st.session_state["lab_timings"] = timings
    timings = st.session_state.get("lab_timings")
    if timings is None:
        st.caption("Press **Measure on this machine** to time both layers here.")
        return
    fig = line_chart(timings.lengths, {"RNN (torch.nn.RNN, one step per token)":
                                       [1e3 * t for t in timings.rnn_s],
                                       "attention (explorer.nn.Attention, causal)":
                                       [1e3 * t for t in timings.attention_s]},
                     title="Time of one layer's forward on this machine",
                     x_title="tokens n", y_title="milliseconds", log_y=True,
                     note=f"d_model {timings.d_model}, batch 1, fastest of 3"
                          + ("" if timings.complete else "; longer lengths skipped to stay "
                                                         "under the time cap"))
    fig.update_xaxes(type="log")
    show_chart(fig, key="lab_seq_chart")


# --------------------------------------------------------------------------- MoE


def moe_section(lm: Any) -> None:
    text = prompt_box("Prompt", page_key="lab_moe", height=70)
    cols = st.columns(4)
    n_experts = cols[0].slider("Experts E", 2, 16, 8, **in_url("lab_moe_e"))
    top_k = cols[1].slider("Top-k", 1, min(4, n_experts), min(2, n_experts), **in_url("lab_moe_k"))
    source = cols[2].radio("Token vectors", ["loaded model's embeddings", "the MoE's own"],
                           **in_url("lab_moe_src"))
    seed = cols[3].number_input("Router seed", 0, 10_000, 0, **in_url("lab_moe_seed"))
    has_embeddings = lm.tokenizer is not None and hasattr(getattr(lm.model, "embed", None),
                                                          "tokens")
    if has_embeddings:
        ids, pieces = tokenize(model_label(lm), text, lm.tokenizer)
        ids, pieces = ids[:MOE_TOKENS], pieces[:MOE_TOKENS]
        labels = [f"{c.position}: {c.label}" for c in chips_for(lm.tokenizer, ids, pieces)]
    else:  # a model without token embeddings: the prompt's words, the MoE's own vectors
        words = text.split()[:MOE_TOKENS]
        ids = [words.index(w) for w in words]
        labels = [f"{i}: {display_token(w)}" for i, w in enumerate(words)]
        st.caption("The loaded model has no token embeddings: the MoE routes the prompt's "
                   "words with its own vectors.")
    if not ids:
        st.info("Type a prompt to route its tokens.")
        return
    ids_t = torch.tensor(ids)
    with torch.no_grad():
        if source == "the MoE's own" or not has_embeddings:
            x, d_model = own_embeddings(ids_t, 64, int(seed)), 64
        else:
            x, d_model = lm.model.embed.tokens(ids_t.to(lm.device)).float().cpu(), lm.config.d_model
        x = RMSNorm(d_model)(x)  # what a block's MoE reads: the normalised stream
    moe = lab_moe(d_model, n_experts, top_k, seed=int(seed))
    routing = route_tokens(moe, x)
    experts = [f"E{e}" for e in range(n_experts)]
    left, right = st.columns([3, 2])
    chosen = torch.where(routing.assignment > 0, routing.assignment, torch.nan)
    show_in(left)(tensor_heatmap(chosen, labels, experts,
                                     "Which experts each token goes to",
                                     note=f"cell: the expert's mixing weight (top-{top_k}, "
                                          "renormalised); blank: not chosen",
                                     row_title="token", col_title="expert", diverging=False,
                                     digits=2 if len(ids) * n_experts <= 400 else None),
                      key="lab_moe_map")
    show_in(right)(bar_chart(experts, {"share of routing slots f": routing.load,
                                           "mean router probability P": routing.mean_prob},
                                 title="Load per expert", x_title="expert", y_title="share",
                                 note=f"even load: 1/E = {1 / n_experts:.3f}"),
                       key="lab_moe_load")
    right.metric("Switch balancing loss E · Σ f·P", f"{routing.aux_loss:.3f}",
                 help="1 when the load is even; up to E when one expert takes everything.")
    st.latex(r"\mathcal{L}_{\text{aux}} = \alpha \cdot E \cdot \sum_{i=1}^{E} f_i \, P_i")
    per_expert = 2 * d_model * moe.experts[0].up.out_features
    st.caption(
        f"f_i: share of the {len(ids)} × {top_k} routing slots expert i got; P_i: its mean "
        f"router probability; α is a small weight (0.01 in the Switch Transformer). Each "
        f"token runs {top_k} of {n_experts} experts: {format_count(top_k * per_expert)} of "
        f"{format_count(n_experts * per_expert)} expert weights per token. The router is "
        "random (untrained), so the load is uneven by chance; training with this loss "
        "evens it out.")


# --------------------------------------------------------------------------- LoRA


@st.cache_data(max_entries=16, show_spinner=False)
def _lora_table(label: str, which: tuple[str, ...], rank: int, _model: Any) -> tuple:
    count = lora_count(_model, which, rank)
    total = sum(p.numel() for p in _model.parameters())
    return count, total


def lora_section(lm: Any) -> None:
    cols = st.columns([2, 1])
    which = cols[0].multiselect("Projections to adapt", PROJECTIONS, default=["q", "v"],
                                **in_url("lab_lora_which"))
    rank = cols[1].select_slider("Rank r", LORA_RANKS, value=8, **in_url("lab_lora_rank"))
    if not which:
        st.info("Pick at least one projection.")
        return
    count, total = _lora_table(model_label(lm), tuple(which), rank, lm.model)
    if not count.per_projection:
        st.info("The loaded model has none of these projections.")
        return
    st.dataframe(pd.DataFrame({
        "projection": list(count.per_projection),
        "matrices": [r[0] for r in count.per_projection.values()],
        "full fine-tuning": [f"{r[1]:,}" for r in count.per_projection.values()],
        f"LoRA, r = {rank}": [f"{r[2]:,}" for r in count.per_projection.values()],
    }), hide_index=True, width="stretch")
    metrics = st.columns(3)
    metrics[0].metric("Full fine-tuning trains", format_count(total), help=f"{total:,}")
    metrics[1].metric("LoRA trains", format_count(count.lora), help=f"{count.lora:,}")
    metrics[2].metric("Share of the model", f"{count.share_of(total):.3%}")
    st.subheader("A live run on a tiny model")
    st.markdown(
        f"A random {TOY.n_layers}-layer model (d_model {TOY.d_model}, {TOY.d_vocab} tokens) "
        "learns to count: after token t comes t + 1. Its weights stay frozen; only LoRA's A "
        "and B (rank and projections as above) train. The same model fine-tuned fully is "
        "the yardstick. A low rank on q and v alone cannot learn all of it: add projections "
        "(up, down) or raise the rank and train again.")
    if st.button("Fine-tune (a few seconds)", key="lab_lora_run"):
        run_fine_tuning(tuple(which), rank)
    runs = st.session_state.get("lab_lora_runs")
    if runs is None:
        st.caption("Press **Fine-tune** to train both here and plot the loss.")
        return
    (lora_run, full_run), (run_which, run_rank) = runs
    steps = max(len(lora_run.losses), len(full_run.losses))

    def padded(losses: list[float]) -> list[float]:  # a run stopped early leaves a gap
        return losses + [float("nan")] * (steps - len(losses))

    series = {f"LoRA r = {run_rank} on {', '.join(run_which)} "
              f"({lora_run.trainable:,} trained)": padded(lora_run.losses),
              f"full fine-tuning ({full_run.trainable:,} trained)": padded(full_run.losses)}
    show_chart(line_chart(list(range(1, steps + 1)), series,
                               title="Training loss (cross-entropy of the next token)",
                               x_title="step", y_title="loss",
                               note=f"{lora_run.seconds + full_run.seconds:.1f} s on this "
                                    "machine; same model, same batches"
                                    + ("" if len(lora_run.losses) == len(full_run.losses)
                                       == LORA_STEPS else "; stopped early: the server is "
                                       "busy")),
                    key="lab_lora_chart")


def run_fine_tuning(which: tuple[str, ...], rank: int) -> None:
    if lora_count(build_model(TOY), which, rank).lora == 0:
        st.warning("The tiny model (GELU feed-forward) has no gate projection: pick another.")
        return
    bar = st.progress(0.0, text="Training…")
    steps = LORA_STEPS

    def progress(name: str, offset: int) -> Any:
        def on_step(step: int, total: int, loss: float) -> None:
            if step % 10 == 0:
                bar.progress((offset + step) / (2 * total),
                             text=f"{name}: step {step} of {total}, loss {loss:.3f}")
        return on_step

    def train() -> Any:
        with heavy_work("fine-tuning"), one_thread():
            return (fine_tune(rank, which, steps=steps, on_step=progress("LoRA", 0),
                              budget_s=LORA_BUDGET_S),
                    fine_tune(None, steps=steps, on_step=progress("full", steps),
                              budget_s=LORA_BUDGET_S))

    runs = or_message(train)
    bar.empty()
    if runs is not None:
        st.session_state["lab_lora_runs"] = (runs, (which, rank))
