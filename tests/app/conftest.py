"""AppTest helpers: the app script and a generous timeout (the first run loads a model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LOAD_TIMEOUT_S = 180  # a cold SmolLM2 load converts the GGUF file (~10 s warm: 2 s)


@pytest.fixture
def app() -> AppTest:
    """A fresh session of the app (not yet run); models are shared across sessions."""
    return AppTest.from_file(APP, default_timeout=LOAD_TIMEOUT_S)
