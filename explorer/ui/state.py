"""What lives in the URL (``st.query_params``): the model and the prompt, validated.

A copied link reopens the same view: the sidebar writes ``?model=`` when a model loads, the
prompt box writes ``&prompt=``. Values from the URL are untrusted: a model name from the URL
must be an embedded alias or look like a hub id (``org/name``), never a local path (a shared
link must not make the server read its disk), and a prompt is cut to ``MAX_URL_PROMPT``
characters. Local directories typed into the sidebar are refused unless the server enables
them: ``EXPLORER_LOCAL_MODELS=1`` in the environment or in ``st.secrets`` (``make run`` sets
it). Anything else, a missing setting included, refuses them: a public server fails closed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import streamlit as st

from explorer.models.embedded import EMBEDDED_MODELS
from explorer.models.sources import is_hub_id
from explorer.ui.gate import server_limits

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PROMPT = "The cat sat on the mat. The cat"
MAX_MODEL_NAME = 200
MAX_URL_PROMPT = 2_000
# Aliases, hub ids (org/name) and local paths: letters, digits, . _ - / ~ and spaces, no
# control characters, no "://" (hub ids are names, not URLs).
_MODEL_NAME = re.compile(r"^[\w.\-/~ ]+$")


def valid_model_name(name: str) -> bool:
    """Whether a typed model name is well formed (alias, hub id or path; no URL, no markup).

    Names from the URL must also pass :func:`valid_url_model_name`.
    """
    return (
        0 < len(name) <= MAX_MODEL_NAME
        and bool(_MODEL_NAME.match(name))
        and "://" not in name
    )


def valid_url_model_name(name: str) -> bool:
    """Whether a model name from the URL may be loaded: an embedded alias or a hub id.

    Anything path-like (leading ``/``, ``.`` or ``~``, a ``..`` segment, a backslash) is
    refused, so a shared link can never point the server at a local directory.
    """
    if not valid_model_name(name):
        return False
    return name.lower() in EMBEDDED_MODELS or not looks_like_local_path(name)


def looks_like_local_path(name: str) -> bool:
    """Whether a typed model name is written as a filesystem path (not an alias or hub id)."""
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or ".." in name
        or name.lower().endswith(".gguf")
        or (name.lower() not in EMBEDDED_MODELS and not is_hub_id(name))
    )


def local_models_enabled() -> bool:
    """True only when ``EXPLORER_LOCAL_MODELS`` is ``1``/``true``/``yes``/``on`` in the
    environment or the app's secrets; unset or anything else refuses local directories."""
    return server_limits().local_models


def is_local_model(name: str) -> bool:
    """Whether a name typed in the sidebar should be loaded from the local filesystem.

    True for path-like names and, when local models are enabled, for names that exist on
    disk (a relative ``models/gpt2`` directory looks like a hub id).
    """
    if looks_like_local_path(name):
        return True
    return local_models_enabled() and Path(name).expanduser().exists()


def url_model() -> str | None:
    """The model named in the URL, or None when absent, malformed or a local path."""
    name = st.query_params.get("model")
    if name is None:
        return None
    name = name.strip()
    if not valid_url_model_name(name):
        log.warning("ignoring model name in the URL (not an alias or hub id): %r", name[:80])
        return None
    return name


def set_url_model(name: str, local: bool = False) -> None:
    """Put the model in the URL; a local path is never written there (it would be refused)."""
    if local:
        if "model" in st.query_params:
            del st.query_params["model"]
    elif st.query_params.get("model") != name:
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
