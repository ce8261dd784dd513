"""Model overview: what the loaded model is, where its parameters are, how it is wired."""

from __future__ import annotations

import streamlit as st

from explorer.analysis.params import format_count, parameter_counts
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel, show_vega
from explorer.ui.resources import model_label
from explorer.ui.widgets import escape_markdown
from explorer.viz.architecture import architecture_dot
from explorer.viz.params import parameter_bar_chart

page_header(
    "Model overview",
    "What the loaded model is, where its parameters live, and how one block is wired. "
    "Everything here is read from the model's `ModelConfig` and its weights, so it changes "
    "when you load another model.",
)
lm = require_model()
cfg = lm.config
begin_page("Overview")
share_panel(lm)


@st.cache_data(show_spinner=False, max_entries=8)
def counts_for(model_label: str, _model: object) -> dict[str, int]:
    return parameter_counts(_model)


counts = counts_for(model_label(lm), lm.model)
total = sum(counts.values())

st.subheader(escape_markdown(lm.name))
st.caption(
    f"{escape_markdown(cfg.family)} · {cfg.kind} · {format_count(total)} parameters · "
    f"{lm.device} · {str(lm.dtype).removeprefix('torch.')}"
)

row1 = st.columns(6)
row1[0].metric("Parameters", format_count(total), help=f"{total:,}")
row1[1].metric("Layers", cfg.n_layers if cfg.kind != "encoder-decoder"
               else f"{cfg.n_layers} + {cfg.n_decoder_layers}")
row1[2].metric("Heads", cfg.n_heads)
row1[3].metric("KV heads", cfg.n_kv_heads)
row1[4].metric("d_model", cfg.d_model)
row1[5].metric("d_head", cfg.d_head)
row2 = st.columns(6)
row2[0].metric("d_mlp", cfg.d_mlp)
row2[1].metric("Vocabulary", f"{cfg.d_vocab:,}")
row2[2].metric("Context", f"{cfg.n_ctx:,}")
row2[3].metric("Positions", cfg.positional)
row2[4].metric("Norm", cfg.norm, help=f"{cfg.norm_position}-norm: the norm comes "
               f"{'before' if cfg.norm_position == 'pre' else 'after'} each sub-layer")
row2[5].metric("MLP", cfg.mlp)

left, right = st.columns([1, 1])
with left:
    st.subheader("Parameters by component")
    show_vega(parameter_bar_chart(counts), width="stretch", key="overview_params")
    tied = "tied to the embedding (counted once)" if cfg.tied_embeddings else "separate"
    st.caption(f"Unembedding: {tied}. Activation: {cfg.activation}.")
    with st.expander("All configuration fields"):
        st.dataframe(
            {"field": list(cfg.to_dict()), "value": [str(v) for v in cfg.to_dict().values()]},
            hide_index=True, width="stretch",
        )
with right:
    st.subheader("Architecture")
    st.graphviz_chart(architecture_dot(cfg), width="stretch")
