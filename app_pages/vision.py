"""Image attention: a Vision Transformer's heads over the patches of an image, attention
rollout, the head map, and what the model makes of the image (ViT classes, CLIP captions)."""

from __future__ import annotations

import streamlit as st

from explorer.ui import page_header, require_model
from explorer.ui import vision as ui
from explorer.ui.export import begin_page, share_panel
from explorer.ui.widgets import escape_markdown

page_header(
    "Image attention",
    "A Vision Transformer reads an image as a sequence: the image is cut into square "
    "patches, each patch becomes one position, and a class token in front gathers what the "
    "model says about the whole image (Dosovitskiy et al. 2021). CLIP's image tower is the "
    "same kind of model, trained so images land next to the captions that describe them "
    "(Radford et al. 2021).",
)
lm = require_model(images=True)
begin_page("Image attention")
share_panel(lm)
cfg = lm.config

picked = ui.image_input()
if picked is None:
    st.stop()
image, digest = picked
prepared = lm.image_processor.prepare(image)
# numbers only (preprocessor_config.json's values are read as ints and floats)
st.caption(f"What was done to the image: {lm.image_processor.describe(image.size)}.")
run = ui.image_run(lm, image, digest)
if run is None:
    st.stop()

st.subheader("Attention over the patches")
ui.sync_from_clicks(run)
layer, head, query = ui.controls(run)
ui.attention_views(lm, run, prepared, layer, head, query)

st.subheader("Heads")
ui.head_map_view(run, layer, head)

st.subheader("Where the patches are")
ui.patch_geometry_view(run, layer)

if run.logits is not None:
    st.subheader("What the classifier sees")
    ui.classifier_view(lm, run)
elif run.image_embed is not None:
    st.subheader("Zero-shot: the image against your captions")
    if lm.tokenizer is None:
        st.info(f"{escape_markdown(lm.name)} was loaded without a tokenizer, so captions "
                "cannot be read.")
    else:
        ui.clip_view(lm, run, digest)
else:
    st.caption("This checkpoint has no classifier head: only its attention is shown.")
