"""Loaded models, held once per server process and shared by every browser session.

`st.cache_resource` holds one :class:`ModelStore`; the store keeps loaded models keyed by
``(name, device, dtype)`` in the app's one memo class (at most ``MAX_MODELS`` at once, least
recently used dropped first, one load per key), so two sessions asking for the same model
wait for one load. The
loader's progress callback drives an ``st.status`` box in the sidebar; it runs outside any
cached function, so nothing is replayed on later runs. Pages read the model and never mutate
it: ``explorer.nn`` passes activation capture through the call, not through module state.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

import explorer
from explorer.runs import LRUMemo

log = logging.getLogger(__name__)

MAX_MODELS = 2


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model: the name as typed, the device and the dtype asked for.

    ``local`` is True only for a local path typed in the sidebar; otherwise the name is
    resolved as an embedded alias or hub id and never looked up on the local filesystem.
    """

    name: str
    device: str = "auto"
    dtype: str = "auto"
    local: bool = False

    def label(self) -> str:
        return f"{self.name} · {self.device} · {self.dtype}"


class ModelStore:
    """Process-wide loaded models, at most ``max_models``, least recently used dropped first
    (an :class:`~explorer.runs.LRUMemo`: one load per key even when sessions ask at once)."""

    def __init__(self, loader: Callable[..., Any] | None = None, max_models: int = MAX_MODELS):
        self._loader = loader
        self._models = LRUMemo(max_entries=max_models)

    def loader(self) -> Callable[..., Any]:
        return self._loader or explorer.load

    def get(self, key: ModelKey) -> Any | None:
        """The model if already loaded (and mark it recently used), else None."""
        return self._models.peek(key)

    def put(self, key: ModelKey, model: Any) -> None:
        """Hold an already built model under ``key`` (tests, experiments)."""
        self._models.put(key, model)

    def discard(self, key: ModelKey) -> None:
        self._models.discard(key)

    def load(self, key: ModelKey, progress: Callable[..., None] | None = None) -> Any:
        """Load (or return the already loaded) model; the loader's exceptions propagate (and
        nothing is kept for a name that failed)."""

        def load_now() -> Any:
            start = time.perf_counter()
            model = self.loader()(key.name, device=key.device, dtype=key.dtype,
                                  progress=progress, allow_local=key.local)
            log.info("loaded %s in %.1f s", key.label(), time.perf_counter() - start)
            # The model and everything imported so far live as long as the server: keep
            # them out of the cyclic collector's full passes (otherwise a pause of ~0.2 s
            # now and then, longer than a whole head switch on the attention page).
            gc.collect()
            gc.freeze()
            return model

        return self._models.get(key, load_now)


def model_label(lm: Any) -> str:
    """The key that identifies a loaded model in ``st.cache_data``/``cache_resource`` keys.

    Includes where the weights came from: the model's name alone is the last path component
    for local directories, so ``/a/model`` and ``/b/model`` (or a local ``smollm2-135m``
    directory and the embedded alias) would otherwise share cached tokens and analyses.
    """
    source = getattr(getattr(lm, "source", None), "path", None)
    return f"{lm.name}|{source or ''}|{lm.device}|{lm.dtype}"


@st.cache_resource(show_spinner=False)
def model_store() -> ModelStore:
    """The one store of this server process."""
    return ModelStore()


class StatusProgress:
    """A progress callback for `explorer.load` that updates an ``st.status`` box.

    Accepts ``(message)``, ``(fraction)``, ``(message, fraction)`` or
    ``(fraction, message)``; fractions are 0-1.
    """

    def __init__(self, status: Any) -> None:
        self.status = status
        self.bar = status.progress(0.0)
        self.message = status.empty()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        message = kwargs.get("message")
        fraction = kwargs.get("fraction")
        for arg in args:
            if isinstance(arg, str):
                message = arg
            elif isinstance(arg, int | float) and not isinstance(arg, bool):
                fraction = float(arg)
        try:
            if fraction is not None:
                self.bar.progress(min(max(fraction, 0.0), 1.0))
            if message:
                self.message.caption(message)
        except Exception:  # a progress display must never break a load
            log.debug("progress update failed", exc_info=True)


def load_with_status(key: ModelKey, container: Any = None) -> Any:
    """The loaded model, with an ``st.status`` box while a real load runs. Raises on failure."""
    store = model_store()
    loaded = store.get(key)
    if loaded is not None:
        return loaded
    slot = (container if container is not None else st).empty()
    try:
        with slot.status(f"Loading {key.name}…", expanded=True) as status:
            model = store.load(key, progress=StatusProgress(status))
    finally:
        slot.empty()  # done either way: the sidebar says what is loaded, or shows the error
    return model
