"""First-visit page times in headless Chromium: the time from ``goto`` until the app is idle
and every Plotly chart has drawn, with the bytes the browser received over the websocket.

Starts ``streamlit run app.py`` from this checkout and, with ``--old DIR`` (an export of an
older commit, e.g. ``git archive 9ca9c58 | tar -x -C DIR``), from that one too, and visits
the pages of both in turn (old, new, old, new, ...) so the machine's load hits both alike.
Each server loads SmolLM2 and visits each page once, untimed, counting its charts
(that visit pays the process's one-time imports). Every timed visit uses a new prompt (the
hostile one plus a counter), so no process-wide cache of an earlier visit answers it. Prints
each visit, the medians per page and server, their ratio, and the load average.

    python -m benchmarks.page_loads --old /tmp/base --pages positional,overview --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from browser_helpers import APP_IDLE, free_port, wait_healthy  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-quic", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PROMPT = ("<img src=x onerror=alert(1)> **bold** $x$ مرحبا a\u200bb "
          "[link](javascript:alert(1))")
PATHS = {"overview": "", "positional": "positional", "lab": "lab-attention",
         "attention": "attention", "layers": "layers", "cost": "lab-cost"}
SETTLE_S = 0.3  # wait before looking for the idle state (the run may not have started)
# Streamlit mounts a Plotly chart only once its lazily loaded code arrives (seconds after
# the run ends): wait for the number of charts an untimed visit found, each drawn.
DRAWN = """expected => {
    const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
    return charts.length >= expected && charts.every(chart => chart.querySelector('.main-svg'));
}"""
CHARTS_SETTLE_S = 10  # an untimed visit counts the charts this long after the run ends


@contextlib.contextmanager
def server(directory: Path, extra_env: dict[str, str] | None = None):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EXPLORER_LOCAL_MODELS": "1",
           **(extra_env or {})}
    process = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "streamlit"), "run", "app.py", "--server.headless",
         "true", "--server.port", str(port), "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, 120)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def visit(browser, url: str, path: str, prompt: str, charts: int | None = None
          ) -> tuple[float, int, int]:
    """(seconds to idle with ``charts`` charts drawn, websocket bytes received, charts);
    ``charts`` None: count them ``CHARTS_SETTLE_S`` after the run ended (untimed)."""
    context = browser.new_context(viewport={"width": 1400, "height": 2200})
    page = context.new_page()
    page.on("dialog", lambda dialog: (_ for _ in ()).throw(AssertionError(dialog.message)))
    received = [0]
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda frame: received.__setitem__(0, received[0] + len(frame))))
    query = urllib.parse.urlencode({"model": "smollm2-135m", "prompt": prompt})
    start = time.perf_counter()
    page.goto(f"{url}/{path}?{query}")
    page.wait_for_selector('[data-testid="stApp"]', timeout=300_000)
    page.wait_for_timeout(1000 * SETTLE_S)
    page.wait_for_selector(APP_IDLE, timeout=300_000)
    if charts is None:
        page.wait_for_timeout(1000 * CHARTS_SETTLE_S)
        charts = page.locator('[data-testid="stPlotlyChart"]').count()
    page.wait_for_function(DRAWN, arg=charts, timeout=120_000, polling=50)
    elapsed = time.perf_counter() - start - SETTLE_S
    if page.locator('[data-testid="stException"]').count():
        raise AssertionError(f"an exception is shown on {path}")
    context.close()
    return elapsed, received[0], charts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--pages", default="positional", help=f"from {sorted(PATHS)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the new server only (with --old . compares "
                             "settings of one checkout, e.g. EXPLORER_TORCH_THREADS=1)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    dirs = {"new": REPO} if args.old is None else {"old": args.old, "new": REPO}
    pages = args.pages.split(",")
    times: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack, sync_playwright() as pw:
        new_env = dict(item.split("=", 1) for item in args.new_env)
        urls = {name: stack.enter_context(server(d, new_env if name == "new" else None))
                for name, d in dirs.items()}
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        expected = {}
        for url in urls.values():  # load the model and count each page's charts (not timed)
            visit(browser, url, PATHS["cost"], PROMPT)
            for page in pages:
                expected[page] = visit(browser, url, PATHS[page], f"{PROMPT} warm")[2]
        print(f"load average before: {os.getloadavg()}")
        for repeat in range(args.repeats):
            for page in pages:
                for name, url in urls.items():
                    seconds, size, charts = visit(browser, url, PATHS[page],
                                                  f"{PROMPT} {repeat}", expected[page])
                    print(f"{page:11s} {name}: {seconds:6.2f} s  {size / 2**20:5.2f} MB  "
                          f"{charts} charts", flush=True)
                    times.setdefault((page, name), []).append(seconds)
        browser.close()
    print(f"load average after: {os.getloadavg()}")
    for page in pages:
        medians = {name: statistics.median(times[page, name]) for name in dirs}
        line = "  ".join(f"{name} {m:.2f} s" for name, m in medians.items())
        ratio = f"  new/old {medians['new'] / medians['old']:.2f}" if "old" in medians else ""
        print(f"median of {args.repeats} {page:11s} {line}{ratio}")


if __name__ == "__main__":
    main()
