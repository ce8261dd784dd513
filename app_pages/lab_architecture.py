"""Architecture lab: feed-forward units and norms, recurrence vs attention, mixture of experts
and LoRA, each computed live with `explorer.nn`."""

from __future__ import annotations

import streamlit as st

from explorer.ui import lab_architecture as lab
from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel

page_header(
    "Architecture lab",
    "The parts of a transformer around attention, and two ways to make it cheaper, tried "
    "live on small models built by `explorer.nn` (the code that runs the real models), "
    "next to the loaded model's own choices.",
)
lm = require_model()
begin_page("Architecture lab")
share_panel(lm)

st.header("Feed-forward: the nonlinearity")
st.markdown(
    "After attention mixes tokens, each token goes alone through a feed-forward network: up "
    "to a wider d_mlp, a nonlinearity, back down. ReLU cuts negatives to 0; GELU and SiLU "
    "bend smoothly and let small negatives through. Gated units (SwiGLU, GeGLU) compute two "
    "projections and multiply the activated one (the gate) by the other (the value u).",
)
lab.ffn_section(lm)

st.header("Residual paths: pre-norm vs post-norm")
st.markdown(
    "Every sub-layer adds its output to the residual stream. **Post-norm** normalises after "
    "the sum, so the stream itself is renormalised at every step; **pre-norm** normalises only "
    "what the sub-layer reads and leaves an unbroken identity path (red) from input to "
    "output, which is why deep pre-norm stacks train without warm-up (Xiong et al. 2020).",
)
lab.norms_section(lm)

st.header("Recurrence vs attention")
st.markdown(
    "Vaswani et al. 2017 (table 1) compare layer types by how many steps must run one after "
    "another, how far a signal travels between two tokens, and how many operations a layer "
    "costs. Set the sizes, then time both layers on this machine.",
)
lab.sequence_section()

st.header("Mixture of experts: a router picks experts per token")
st.markdown(
    "A mixture-of-experts layer replaces one feed-forward network by E of them and a router, "
    "a linear map followed by a softmax over experts. Each token runs only its top-k experts, "
    "mixed by their renormalised router probabilities: the model holds E networks' "
    "parameters but spends k networks' compute per token. Below, the prompt's tokens go "
    "through a small MoE layer built from a config (`explorer.nn.mlp.SparseMoE`).",
)
lab.moe_section(lm)

st.header("LoRA: fine-tune a low-rank update")
st.markdown(
    "LoRA (Hu et al. 2021) freezes a weight W [d_out, d_in] and learns W + (α/r) B A with A "
    "[r, d_in] and B [d_out, r]: r · (d_in + d_out) trainable numbers instead of d_in · d_out. "
    "B starts at zero, so training starts from the unchanged model. The table counts it on "
    "the loaded model's real projections.",
)
lab.lora_section(lm)
