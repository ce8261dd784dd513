"""Assertions and waits on a Playwright page of the running app (imported by e2e tests).

Kept out of conftest.py so tests import them by a unique module name: ``from conftest
import ...`` picks whichever test folder's conftest was imported first.
"""

from __future__ import annotations

APP_IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the app finished its script run (and the status is stable)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_timeout(300)
    page.wait_for_selector(APP_IDLE, timeout=timeout_ms)


def assert_no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "an exception is shown"
