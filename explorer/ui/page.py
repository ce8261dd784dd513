"""The pattern every page follows.

A page module is a script: ``page_header(title, intro)``, then ``lm = require_model()``
(stops the page with a hint when no model is loaded), then widgets and results. Heavy work
goes through ``st.cache_data`` / ``st.cache_resource``; the model is shared and read-only.
Pages are registered in ``app.py``'s ``PAGES`` list.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from explorer.ui.resources import load_with_status
from explorer.ui.sidebar import active_key
from explorer.ui.widgets import escape_markdown


def page_header(title: str, intro: str = "") -> None:
    """The page title and a one-paragraph explanation of what the page shows."""
    st.title(title)
    if intro:
        st.markdown(intro)


def require_model(images: bool = False) -> Any:
    """The session's loaded model (a `LoadedModel`), or stop the page with a hint.

    ``images``: the page reads images (ViT, CLIP) rather than text; a page whose kind does
    not fit the loaded model stops with a pointer to the pages that do.
    """
    key = active_key()
    if key is None:
        st.info("Pick a model in the sidebar and press **Load**.")
        st.stop()
    try:
        lm = load_with_status(key)  # normally already in the store: no work
    except Exception as exc:
        st.error(f"The model could not be loaded again: {type(exc).__name__}")
        st.stop()
    if lm.config.is_vision and not images:
        st.info(f"**{escape_markdown(lm.name)}** is a vision model: it reads images, not "
                "text. Open **Image attention** in the sidebar to see its heads over an "
                "image, or load a text model for this page.")
        st.stop()
    if images and not lm.config.is_vision:
        st.info(f"**{escape_markdown(lm.name)}** reads text. This page reads images: load a "
                "Vision Transformer or CLIP model, e.g. `google/vit-base-patch16-224` or "
                "`openai/clip-vit-base-patch32` from the Hugging Face hub, or a local "
                "directory of one.")
        st.stop()
    return lm
