"""What lives in the URL (``st.query_params``): the model and the prompt, validated.

A copied link reopens the same view: the sidebar writes ``?model=`` when a model loads, the
prompt box writes ``&prompt=``. Values from the URL are untrusted: a model name must look like
an alias, a hub id (``org/name``) or a path, and a prompt is cut to ``MAX_URL_PROMPT``
characters.
"""

from __future__ import annotations

import logging
import re

import streamlit as st

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PROMPT = "The cat sat on the mat. The cat"
MAX_MODEL_NAME = 200
MAX_URL_PROMPT = 2_000
# Aliases, hub ids (org/name) and local paths: letters, digits, . _ - / ~ and spaces, no
# control characters, no "://" (hub ids are names, not URLs).
_MODEL_NAME = re.compile(r"^[\w.\-/~ ]+$")


def valid_model_name(name: str) -> bool:
    """Whether a (user or URL supplied) model name is worth trying to load."""
    return (
        0 < len(name) <= MAX_MODEL_NAME
        and bool(_MODEL_NAME.match(name))
        and "://" not in name
    )


def url_model() -> str | None:
    """The model named in the URL, or None when absent or malformed."""
    name = st.query_params.get("model")
    if name is None:
        return None
    name = name.strip()
    if not valid_model_name(name):
        log.warning("ignoring malformed model name in the URL: %r", name[:80])
        return None
    return name


def set_url_model(name: str) -> None:
    if st.query_params.get("model") != name:
        st.query_params["model"] = name


def get_prompt() -> str:
    """The prompt shared by pages: this session's, else the URL's, else the default."""
    if "prompt" not in st.session_state:
        from_url = st.query_params.get("prompt")
        st.session_state["prompt"] = (
            from_url[:MAX_URL_PROMPT] if from_url is not None else DEFAULT_PROMPT
        )
    return st.session_state["prompt"]


def set_prompt(prompt: str) -> None:
    """Remember the prompt for every page and put (its first characters) in the URL."""
    st.session_state["prompt"] = prompt
    short = prompt[:MAX_URL_PROMPT]
    if st.query_params.get("prompt") != short:
        st.query_params["prompt"] = short
