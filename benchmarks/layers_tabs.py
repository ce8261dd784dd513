"""A Layers tab switch on SmolLM2 (a ~40-token prompt), server side through Streamlit's
AppTest: the page as it is (only the open tab's section runs) against the page as it was
(every section on every run), both in this process, interleaved (old, new, new, old, ...).

The tab is bound to the URL, so a switch reruns the whole page. Two numbers per way:

- a switch between tabs already seen (figures memoised in the session, the numbers in the
  run): the script run's wall time, and the bytes of figure JSON the run sends to the
  browser (the browser parses and draws all of it, which AppTest does not time);
- a first visit: open the page on a new prompt, then each tab once (nothing memoised:
  the old page drew every figure on the first run, the new one draws each on its tab's
  first visit).

The old way is the page with :func:`explorer.ui.layers.draw_open_section` replaced by
:func:`draw_every_section` for its runs. Ratios are new / old, medians.

    python -m benchmarks.layers_tabs [--repeats 3] [--tokens 40]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest

from benchmarks.attention_page import load_off_the_main_thread, prompt_of
from benchmarks.layers_page import APP, LAYERS, page_seconds
from explorer.ui import layers as ui

logger = logging.getLogger("benchmarks.layers_tabs")
TABS = list(ui.SECTIONS)
CYCLE = TABS[1:] + TABS[:1]  # from the first tab (open on arrival) to the next, round


def draw_every_section(tabs: list[Any], lm: Any, page_run: Any) -> None:
    """The page before this change: every tab's section on every run."""
    for tab, section in zip(tabs, ui.SECTIONS.values(), strict=True):
        with tab:
            section(lm, page_run)


WAYS: dict[str, Callable[..., None]] = {"old": draw_every_section,
                                        "new": ui.draw_open_section}


@contextmanager
def drawn(way: str) -> Iterator[None]:
    """Run the page the ``way`` way (the page calls ``ui.draw_open_section`` at run time)."""
    original = ui.draw_open_section
    ui.draw_open_section = WAYS[way]
    try:
        yield
    finally:
        ui.draw_open_section = original


def run_timed(at: AppTest, way: str, n_sections: int) -> tuple[float, int]:
    """(wall seconds, bytes of figure JSON) of one run; checks what ran."""
    at.session_state[ui.SECTION_MS] = {}
    with drawn(way):
        start = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(str(at.exception))
    if len(at.session_state[ui.SECTION_MS]) != n_sections:
        raise RuntimeError(f"{way}: sections {list(at.session_state[ui.SECTION_MS])}")
    return seconds, sum(len(chart.proto.spec) for chart in at.get("plotly_chart"))


def switch(at: AppTest, way: str, tab: str) -> tuple[float, int]:
    at.session_state["layers_tab"] = tab
    return run_timed(at, way, 4 if way == "old" else 1)


def open_session(way: str, prompt: str) -> tuple[AppTest, float]:
    """A fresh session on the Layers page with ``prompt``; seconds of that first run."""
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    with drawn(way):
        seconds = page_seconds(at, LAYERS, prompt)
    return at, seconds


def first_visits(lm: Any, way: str, n_tokens: int, seed: int) -> tuple[float, list[float]]:
    """A new prompt: the page's first run, then each other tab's first visit (seconds)."""
    at, opened = open_session(way, prompt_of(lm, n_tokens, seed))
    return opened, [switch(at, way, tab)[0] for tab in TABS[1:]]


def ratio_line(name: str, old: list[float], new: list[float], unit: str = "s") -> str:
    scale, digits = (1000, 0) if unit == "ms" else (1, 2)
    old_m, new_m = statistics.median(old), statistics.median(new)
    return (f"{name}: old {[round(v * scale, digits) for v in old]} {unit}, new "
            f"{[round(v * scale, digits) for v in new]} {unit}; median old "
            f"{old_m * scale:.{digits}f}, new {new_m * scale:.{digits}f}, new/old "
            f"{new_m / old_m:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    lm = load_off_the_main_thread("smollm2-135m")
    logger.info("load average before %s", os.getloadavg())
    prompt = prompt_of(lm, args.tokens, 1)
    sessions = {way: open_session(way, prompt)[0] for way in WAYS}
    for way, at in sessions.items():  # see every tab once: figures memoised
        for tab in CYCLE:
            switch(at, way, tab)

    times: dict[str, dict[str, list[float]]] = {w: {t: [] for t in TABS} for w in WAYS}
    sent: dict[str, dict[str, int]] = {w: {} for w in WAYS}
    for round_ in range(args.repeats):
        for i, tab in enumerate(CYCLE):
            order = list(WAYS) if (round_ + i) % 2 == 0 else list(reversed(WAYS))
            for way in order:
                seconds, n_bytes = switch(sessions[way], way, tab)
                times[way][tab].append(seconds)
                sent[way][tab] = n_bytes
    for tab in CYCLE:
        logger.info("%s", ratio_line(f"switch to {tab}", times["old"][tab],
                                     times["new"][tab], "ms"))
        logger.info("  figure JSON sent: old %.0f kB, new %.0f kB", sent["old"][tab] / 1024,
                    sent["new"][tab] / 1024)
    every = {way: [s for tab in TABS for s in times[way][tab]] for way in WAYS}
    logger.info("%s", ratio_line("every switch", every["old"], every["new"], "ms"))

    opened: dict[str, list[float]] = {w: [] for w in WAYS}
    visits: dict[str, list[float]] = {w: [] for w in WAYS}
    for round_ in range(args.repeats):
        order = list(WAYS) if round_ % 2 == 0 else list(reversed(WAYS))
        for k, way in enumerate(order):  # a prompt per way and round: nothing shared
            first, rest = first_visits(lm, way, args.tokens, 100 + 2 * round_ + k)
            opened[way].append(first)
            visits[way].append(first + sum(rest))
    logger.info("%s", ratio_line("new prompt, first run (lens tab)", opened["old"],
                                 opened["new"]))
    logger.info("%s", ratio_line("new prompt, first run + each other tab once",
                                 visits["old"], visits["new"]))
    logger.info("load average after %s", os.getloadavg())


if __name__ == "__main__":
    main()
