"""Server memory per browser session: the app's RSS as visitors come and after they leave.

Starts ``streamlit run app.py`` (SmolLM2, offline) and drives Debian's Chromium. One warm-up
session loads the model and is closed; that RSS is the baseline. Then ``--sessions``
visitors come one after another and stay, each with its own short prompt: the attention
page, then a ``--new-tokens`` generation. The server's RSS is printed after each, then again
after all of them closed their tabs (sessions are dropped ``--ttl`` seconds after their
websocket closes). Target: under 50 MB per short-prompt session, back near the baseline
after they close.

    python -m benchmarks.sessions [--sessions 6] [--new-tokens 12] [--ttl 2]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from browser_helpers import free_port, wait_healthy, wait_idle  # noqa: E402

log = logging.getLogger("benchmarks.sessions")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-quic", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MB = 1e6


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def visit(browser, url: str, prompt: str, new_tokens: int):
    """One visitor: the attention page, then a generation, on its own prompt."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(300_000)
    quoted = urllib.parse.quote(prompt)
    page.goto(f"{url}/attention?prompt={quoted}")
    page.wait_for_selector(".tx-piece", state="attached")
    wait_idle(page)
    page.goto(f"{url}/generate?prompt={quoted}")
    page.get_by_role("button", name="Generate").wait_for()
    wait_idle(page)
    box = page.get_by_label("Max new tokens")
    box.fill(str(new_tokens))
    box.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector(".gen-tok", state="attached")
    wait_idle(page)
    return context


def settle(pid: int, seconds: float) -> int:
    time.sleep(seconds)
    return rss_bytes(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--ttl", type=int, default=2,
                        help="server.disconnectedSessionTTL: seconds before a closed tab's "
                             "session is dropped")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.disconnectedSessionTTL", str(args.ttl)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, server, 120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            visit(browser, url, "Warm up: the model loads once.", args.new_tokens).close()
            baseline = settle(server.pid, args.ttl + 3)
            log.info("baseline (model loaded, warm-up session closed): %.0f MB", baseline / MB)
            contexts, previous = [], baseline
            for i in range(args.sessions):
                prompt = f"Visitor {i} writes: the cat number {i} sat on mat {i}."
                contexts.append(visit(browser, url, prompt, args.new_tokens))
                now = settle(server.pid, 1)
                log.info("session %d open: %.0f MB (+%.1f MB for this one, +%.1f MB/session "
                         "so far)", i + 1, now / MB, (now - previous) / MB,
                         (now - baseline) / MB / (i + 1))
                previous = now
            for context in contexts:
                context.close()
            browser.close()
        gc.collect()
        after = settle(server.pid, args.ttl + 5)
        log.info("all %d sessions closed: %.0f MB (%+.1f MB from the baseline)",
                 args.sessions, after / MB, (after - baseline) / MB)
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
