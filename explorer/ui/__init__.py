"""Streamlit glue: URL state, cached model loading, the sidebar model picker, shared widgets
and the page pattern. The only part of `explorer` that imports streamlit (a test checks)."""

from explorer.ui.page import page_header, require_model
from explorer.ui.sidebar import render_sidebar
from explorer.ui.state import get_prompt, set_prompt

__all__ = ["get_prompt", "page_header", "render_sidebar", "require_model", "set_prompt"]
