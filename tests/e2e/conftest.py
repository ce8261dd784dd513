"""End-to-end fixtures: the real app (`streamlit run app.py`) driven by Debian's Chromium.

One app server per test session on a free port (offline hub), one browser; every page gets
a dialog listener that fails the test (no `alert()` may ever run) and a console error log.
Screenshots go to ``$E2E_SCREENSHOTS`` or a temporary directory (printed at the end).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_helpers import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-quic", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
STARTUP_TIMEOUT_S = 120

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    path = Path(os.environ.get("E2E_SCREENSHOTS") or tempfile.mkdtemp(prefix="e2e-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def app_server(screenshot_dir: Path, browser) -> Iterator[dict]:
    """The running app: {"url", "started" (monotonic time of the process start), "log"}.

    Depends on `browser` so Chromium is already up when the clock starts: the startup
    measurement is the app's, not the browser's.
    """
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2",
           "EXPLORER_LOCAL_MODELS": "1"}
    log_path = screenshot_dir / "streamlit.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, STARTUP_TIMEOUT_S)
        yield {"url": url, "started": started, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, screenshot_dir: Path, request) -> Iterator[object]:
    """A fresh browser page; any JavaScript dialog fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.set_default_timeout(60_000)
    yield page
    with contextlib.suppress(Exception):
        page.screenshot(path=str(screenshot_dir / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    assert not dialogs, f"a dialog opened (script ran): {dialogs}"
