"""Helpers for reading an AppTest run (imported by the app tests by a unique module name)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def sidebar_errors(at: AppTest) -> list[str]:
    return [error.value for error in at.sidebar.error]
