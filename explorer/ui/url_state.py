"""Shareable views: the widgets whose value lives in the page's URL.

A widget opts in by passing ``**in_url(key)`` instead of ``key=key``::

    st.selectbox("Layer", range(n_layers), **in_url("attn_layer"))

That binds it to the query parameter named by its key (Streamlit's
``bind="query-params"``, 1.67): the value is read from the URL on the session's first render,
written to the URL whenever it changes, and dropped from it while it equals the widget's
default, so a copied link reopens the same view. Values from the URL are untrusted and are
validated by the widget itself: an option that is not offered (a layer the model does not
have, a token label from another prompt, a misspelt choice), a number outside the slider's
or number box's range, text over ``max_chars``, are ignored silently (the widget shows its
default) and removed from the URL. So a widget's options, range and ``max_chars`` are its
validator; a selectbox's URL value is its *shown* label (``format_func``), so labels must be
unique. On a page switch Streamlit keeps only the parameters of the new page's widgets.

The model and the prompt are not widgets bound this way: the sidebar and the prompt box
write them (:mod:`explorer.ui.state`, which also refuses local paths from a link).
:func:`view_settings` is what a report or a saved run records about the view: the model,
the prompt and every opted-in widget drawn on this page, with its current value.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

BIND = "query-params"
_REGISTRY = "url_state_keys"  # st.session_state: keys of the widgets that opted in
# Parameters that are not widgets: the model (sidebar) and the prompt (prompt box).
RESERVED = ("model", "prompt")


def in_url(key: str) -> dict[str, str]:
    """Keyword arguments that put a widget's value in the URL: ``key`` and ``bind``.

    ``key`` is also the query parameter's name; it must not be ``model`` or ``prompt``.
    """
    if key in RESERVED:
        raise ValueError(f"{key!r} is written by explorer.ui.state, not by a widget")
    keys: dict[str, None] = st.session_state.setdefault(_REGISTRY, {})
    keys[key] = None  # a dict keeps the order in which the page drew them
    return {"key": key, "bind": BIND}


def url_keys() -> list[str]:
    """Keys of the opted-in widgets that exist now (drawn on this page; Streamlit drops a
    widget's state when a page stops drawing it), in the order they were first drawn."""
    keys: dict[str, None] = st.session_state.get(_REGISTRY, {})
    return [key for key in keys if key in st.session_state]


def view_settings() -> dict[str, Any]:
    """What defines the current view: model, prompt and every opted-in widget's value.

    Values are as the page reads them (ints, floats, labels, lists); defaults included,
    though the URL leaves them out.
    """
    settings: dict[str, Any] = {}
    model = st.session_state.get("model_key")
    if model is not None:
        settings["model"] = getattr(model, "name", str(model))
    if "prompt" in st.session_state:
        settings["prompt"] = st.session_state["prompt"]
    for key in url_keys():
        settings[key] = plain(st.session_state[key])
    return settings


def plain(value: Any) -> Any:
    """A widget value as JSON-friendly data (tuples and ranges become lists)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple, range)):
        return [plain(v) for v in value]
    return str(value)


def opened_with(name: str) -> bool:
    """Whether the link that opened this page had ``name=1``: True on the first run that asks
    (once per session), so a shared link can replay an action (the Generate page's
    generation), never on later reruns."""
    asked: dict[str, None] = st.session_state.setdefault("url_state_flags_asked", {})
    if name in asked:
        return False
    asked[name] = None
    return st.query_params.get(name) == "1"


def set_flag(name: str, on: bool) -> None:
    """Put ``name=1`` in the URL (or take it out): an action a link should replay."""
    if name in RESERVED:
        raise ValueError(f"{name!r} is written by explorer.ui.state")
    if on and st.query_params.get(name) != "1":
        st.query_params[name] = "1"
    elif not on and name in st.query_params:
        del st.query_params[name]
