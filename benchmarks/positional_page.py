"""Positional encodings page timings, server side, through Streamlit's AppTest (no browser).

Each section of the page is a fragment that stores the time it took in
``st.session_state["pos_section_ms"]``; a control only reruns its own section in the app, so a
control answers within that section's time (target <= 300 ms). Prints the first visit on
SmolLM2 (a 40-token prompt), then the section time after each control change, then the
same for MiniLM's learned table.

    python -m benchmarks.positional_page
    python -m benchmarks.positional_page --first   # only SmolLM2's first visit, in this process
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest

from benchmarks.attention_page import load_off_the_main_thread
from explorer.ui.positional_views import TIMINGS_KEY

logger = logging.getLogger("benchmarks.positional_page")
APP = str(Path(__file__).resolve().parents[1] / "app.py")
PROMPT = ("The Eiffel Tower is in Paris and the Colosseum is in Rome. "
          "The Eiffel Tower is in Paris and the Colosseum is in Rome.")

# (section, widget kind, key, values): each value is set and the section's time recorded.
SMOLLM2_CONTROLS = [
    ("sinusoid", "slider", "pos_sin_n", [256, 512, 1024, 128]),
    ("sinusoid", "slider", "pos_sin_d", [256, 64, 512]),
    ("sinusoid", "number_input", "pos_sin_base", [100.0, 1e6, 10000.0]),
    ("sinusoid", "slider", "pos_sin_k", [1, 30, 100]),
    ("model", "selectbox", "pos_rope_head", [1, 2, 3, 4, 5, 6]),
    ("model", "selectbox", "pos_rope_layer", [3, 10, 20, 29]),
    ("model", "selectbox", "pos_rope_pair", [5, 20, 31]),
    ("model", "slider", "pos_rope_reach", [4096, 8192, 256]),
    ("why", "number_input", "pos_why_seed", [1, 2, 3]),
    ("why", "slider", "pos_why_shift", [10, 1000, 4000]),
]
MINILM_CONTROLS = [
    ("model", "slider", "pos_learned_n", [128, 256, 512]),
    ("model", "radio", "pos_learned_pca", [3, 2]),
    ("why", "slider", "pos_why_shift", [10, 200, 400]),
]


def measure(at: AppTest, controls: list) -> None:
    for section, kind, key, values in controls:
        times = []
        for value in values:
            getattr(at, kind)(key=key).set_value(value).run()
            assert not at.exception, at.exception
            times.append(at.session_state[TIMINGS_KEY][section])
        logger.info("%-15s -> %-8s section ms: median %4.0f, max %4.0f  %s", key, section,
                    statistics.median(times), max(times), [round(t) for t in times])


def first_visit(at: AppTest, model: str) -> None:
    at.query_params["model"] = model
    at.run()
    at.switch_page("app_pages/positional.py")
    at.session_state["prompt_box_positional"] = PROMPT
    start = time.perf_counter()
    at.run()
    assert not at.exception, at.exception
    sections = {k: round(v) for k, v in at.session_state[TIMINGS_KEY].items()}
    logger.info("%s first visit: whole run %.2f s, sections ms %s", model,
                time.perf_counter() - start, sections)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    only_first = "--first" in sys.argv[1:]  # a fresh process: the first page it ever draws
    for name, controls in (("smollm2-135m", SMOLLM2_CONTROLS), ("minilm-l6", MINILM_CONTROLS)):
        load_off_the_main_thread(name)
        at = AppTest.from_file(APP, default_timeout=300)
        first_visit(at, name)
        if only_first:
            return
        measure(at, controls)


if __name__ == "__main__":
    main()
