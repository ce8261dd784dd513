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


def page_header(title: str, intro: str = "") -> None:
    """The page title and a one-paragraph explanation of what the page shows."""
    st.title(title)
    if intro:
        st.markdown(intro)


def require_model() -> Any:
    """The session's loaded model (a `LoadedModel`), or stop the page with a hint."""
    key = active_key()
    if key is None:
        st.info("Pick a model in the sidebar and press **Load**.")
        st.stop()
    try:
        return load_with_status(key)  # normally already in the store: no work
    except Exception as exc:
        st.error(f"The model could not be loaded again: {type(exc).__name__}")
        st.stop()
