"""The Streamlit side of serving many visitors: limits from env/secrets and `heavy_work`.

``with heavy_work("generation"):`` runs its body when the shared `HeavyGate` has a free slot.
While the visitor waits, a placeholder says "Waiting for N others…", updated every quarter
second; each update is also where Streamlit stops a script whose visitor pressed Stop or
changed a widget (a rerun), and where we notice a closed tab (the session is no longer
connected). Either way the place in the queue is given back at once, and a running body
gives its slot back in ``finally`` the same way: nothing holds a slot across a rerun.

Inside an ``st.cache_data``/``st.cache_resource`` function nothing is drawn (Streamlit would
replay the message on every cache hit); the wait is silent there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from explorer.serving import GateTimeout, HeavyGate, ServerLimits, limits_from, shared_gate

log = logging.getLogger(__name__)


class VisitorGone(RuntimeError):
    """The browser session that asked for the work is no longer connected."""


def _secrets() -> dict[str, Any]:
    try:
        if not st.secrets.load_if_toml_exists():  # no secrets file: nothing to read
            return {}
        return {k: v for k, v in st.secrets.to_dict().items() if not isinstance(v, dict)}
    except Exception:  # an unreadable secrets file must not break the app
        log.warning("could not read st.secrets", exc_info=True)
        return {}


def server_limits() -> ServerLimits:
    """This server's limits: ``EXPLORER_*`` environment variables, then ``st.secrets``."""
    return limits_from(os.environ, _secrets())


def session_connected() -> bool:
    """Whether this script run's browser session still has a live connection (True outside
    a server, e.g. in AppTest)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None or not Runtime.exists():
            return True
        return Runtime.instance().is_active_session(ctx.session_id)
    except Exception:  # private corners of Streamlit moved: never block work on it
        log.debug("could not tell whether the session is connected", exc_info=True)
        return True


def _in_cached_function() -> bool:
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import in_cached_function

        return bool(in_cached_function.get())
    except Exception:
        return False


def waiting_message(n_ahead: int, label: str) -> str:
    """ "Waiting for 2 others…" with what is waiting, for the placeholder."""
    others = "1 other visitor" if n_ahead == 1 else f"{n_ahead} others"
    return (f"Waiting for {others} to finish before the {label} starts… The server runs a "
            "few heavy jobs at a time; this page continues by itself.")


@contextmanager
def heavy_work(label: str, gate: HeavyGate | None = None,
               max_wait_s: float | None = None) -> Iterator[None]:
    """Run the ``with`` body in a slot of the shared gate, showing the queue while waiting.

    Raises `VisitorGone` (the tab was closed while waiting) and `GateTimeout` (no slot
    after ``max_wait_s``, default ``EXPLORER_MAX_WAIT_S``); Streamlit's own stop/rerun
    exceptions pass through. The slot is always given back.
    """
    gate = gate or shared_gate()
    draw = not _in_cached_function()
    placeholder = None

    def on_wait(n_ahead: int) -> None:
        nonlocal placeholder
        if not session_connected():
            raise VisitorGone("the browser session closed while waiting")
        if draw:
            if placeholder is None:
                placeholder = st.empty()
            placeholder.info(waiting_message(n_ahead, label), icon=":material/hourglass_top:")

    limit = max_wait_s if max_wait_s is not None else server_limits().max_wait_s
    try:
        with gate.slot(on_wait, max_wait_s=limit):
            if placeholder is not None:
                placeholder.empty()
            yield
    finally:
        if placeholder is not None:
            placeholder.empty()


def busy_message(exc: GateTimeout) -> str:
    """What to tell a visitor whose wait timed out."""
    return (f"The server is busy ({exc}). Try again in a minute; shorter prompts and fewer "
            "new tokens finish sooner.")
