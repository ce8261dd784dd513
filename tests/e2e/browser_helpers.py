"""Assertions and waits on a Playwright page of the running app (imported by e2e tests).

Kept out of conftest.py so tests import them by a unique module name: ``from conftest
import ...`` picks whichever test folder's conftest was imported first.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request

APP_IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the app finished its script run (and the status is stable)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_selector(APP_IDLE, timeout=timeout_ms)


def assert_no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "an exception is shown"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until ``streamlit run`` answers its health check (fails if it exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"app not healthy after {timeout_s} s")


def pick_other_model(page, name: str) -> None:
    """Type ``name`` into the sidebar's "Other" box and press Load."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="Other: Hugging Face id or local directory").click()
    wait_idle(page)
    box = sidebar.locator('[data-testid="stTextInput"] input')
    box.fill(name)
    box.press("Enter")
    wait_idle(page)
    sidebar.get_by_role("button", name="Load").click()
    page.wait_for_timeout(400)
    wait_idle(page)
