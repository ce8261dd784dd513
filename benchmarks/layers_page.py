"""Layers and Attention pages on SmolLM2, server side through Streamlit's AppTest, against a
plain forward of the same prompt measured in the same run (interleaved: page, forward,
page, forward...), and the memory one long prompt holds.

Targets (issue 15): a 128-token prompt change redraws the whole Layers page (forward
included) within 3 s; a layer-slider or target change within 300 ms (the section's
fragment); at 1,024 tokens the first view of either page within 2x one plain forward; one
1,024-token run, after both pages were viewed with a few switches, holds at most 150 MB.
The Layers page draws only its open tab's section (the lens tab on arrival); a tab switch
is timed by ``benchmarks.layers_tabs``.

    python -m benchmarks.layers_page [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from streamlit.testing.v1 import AppTest

from benchmarks.attention_page import load_off_the_main_thread, prompt_of
from explorer.ui.runs import run_store

logger = logging.getLogger("benchmarks.layers_page")
APP = str(Path(__file__).resolve().parents[1] / "app.py")
LAYERS, ATTENTION = "app_pages/layers.py", "app_pages/attention.py"
PROMPT_KEYS = {LAYERS: "prompt_box_layers", ATTENTION: "prompt_box_attention"}
TAB_OF = {"lens": "Logit lens", "target": "Target token", "geometry": "Geometry"}


WORKER = ThreadPoolExecutor(max_workers=1)  # plain forwards run off the main thread, as
# the app's script threads do (see benchmarks.attention_page.load_off_the_main_thread)


def rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (Linux), else the peak. Freed
    memory is first handed back to the system (glibc keeps it otherwise)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def page_seconds(at: AppTest, page: str, prompt: str) -> float:
    """Wall seconds of one script run of ``page`` after its prompt changed."""
    at.switch_page(page)
    at.session_state[PROMPT_KEYS[page]] = prompt
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception}")
    return elapsed


def forward_seconds(lm, prompt: str) -> float:
    """Wall seconds of one plain forward (logits at every position) in the worker thread."""
    ids = lm.encode(prompt)

    def forward() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            lm.model(ids)
        return time.perf_counter() - start

    return WORKER.submit(forward).result()


def open_tab(at: AppTest, tab: str) -> None:
    """Click a Layers tab (the page draws only the open tab's section)."""
    at.session_state["layers_tab"] = tab
    at.run()


def fragment_ms(at: AppTest, change, section: str) -> float:
    """Milliseconds the changed section's fragment took (measured inside the page), its
    tab opened first."""
    open_tab(at, TAB_OF[section])
    change().run()
    if at.exception:
        raise RuntimeError(str(at.exception))
    return at.session_state["layers_ms"][section]


def compare(at: AppTest, lm, page: str, n_tokens: int, repeats: int, seed: int
            ) -> list[tuple[float, float]]:
    """(page seconds, forward seconds) per repeat, each on a fresh prompt."""
    pairs = []
    for i in range(repeats):
        prompt = prompt_of(lm, n_tokens, seed + i)
        forward_seconds(lm, prompt)  # warm the kernels for this shape (not counted)
        seconds = page_seconds(at, page, prompt)
        pairs.append((seconds, forward_seconds(lm, prompt)))
    return pairs


def report(name: str, pairs: list[tuple[float, float]], target: str) -> None:
    pages = [p for p, _ in pairs]
    ratios = [p / f for p, f in pairs]
    logger.info("%s: page %s s, plain forward %s s, ratio median %.2f (%s)", name,
                [round(p, 2) for p in pages], [round(f, 2) for _, f in pairs],
                statistics.median(ratios), target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    lm = load_off_the_main_thread("smollm2-135m")
    logger.info("threads %d, load average %s", torch.get_num_threads(), os.getloadavg())
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    page_seconds(at, LAYERS, prompt_of(lm, 16, 99))  # warm-up: imports, first figures

    report("Layers, 128 tokens, prompt change",
           compare(at, lm, LAYERS, 128, args.repeats, 10), "target: page <= 3 s")
    changes = {
        "geometry layer slider": ("geometry", lambda: at.select_slider(
            key="layers_geo_row").set_value(f"L{3 + len(slider_ms)}")),
        "lens statistic": ("lens", lambda: at.radio(key="layers_lens_stat").set_value(
            ["entropy", "kl", "prob"][len(stat_ms) % 3])),
        "target token": ("target", lambda: at.text_input(key="layers_target").set_value(
            [" the", " a", " of"][len(target_ms) % 3])),
    }
    slider_ms, stat_ms, target_ms = [], [], []
    for _ in range(3):
        for (section, change), times in zip(changes.values(), (slider_ms, stat_ms, target_ms),
                                            strict=True):
            times.append(fragment_ms(at, change, section))
    for name, times in zip(changes, (slider_ms, stat_ms, target_ms), strict=True):
        logger.info("%s: fragment %s ms (target <= 300)", name, [round(t) for t in times])

    report("Layers, 1,024 tokens, first view",
           compare(at, lm, LAYERS, 1024, args.repeats, 20), "target: ratio <= 2")
    report("Attention, 1,024 tokens, first view",
           compare(at, lm, ATTENTION, 1024, args.repeats, 30), "target: ratio <= 2")

    # Memory: one long prompt on both pages with switches, in a fresh session, from a
    # clean store (the old session's fragments no longer pin its runs).
    del at
    run_store().clear()
    before = rss_mb()
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    prompt = prompt_of(lm, 1024, 40)
    page_seconds(at, ATTENTION, prompt)
    for layer, head in ((3, 1), (10, 4), (20, 6)):
        at.selectbox(key="attn_layer").set_value(layer).run()
        at.selectbox(key="attn_head").set_value(head).run()
    at.radio(key="attn_aggregate").set_value("rollout").run()
    page_seconds(at, LAYERS, prompt)
    for tab in ("Target token", "Residual stream", "Geometry"):
        open_tab(at, tab)
    for row in ("L5", "L15", "L25"):
        at.select_slider(key="layers_geo_row").set_value(row).run()
    open_tab(at, "Logit lens")
    at.toggle(key="layers_lens_sub").set_value(True).run()
    page_seconds(at, ATTENTION, prompt)
    keys = run_store().keys()
    held = sum(run_store().peek(k).nbytes() for k in keys)
    figures = sum(len(m) for m in at.session_state["figure_memos"].values())
    logger.info("1,024-token run after both pages and switches: the run holds %.1f MB "
                "(%d run in the store; target <= 150 MB); process RSS grew by %.0f MB "
                "(the run, %d memoised figures, allocator slack)",
                held / 2**20, len(keys), rss_mb() - before, figures)


if __name__ == "__main__":
    main()
