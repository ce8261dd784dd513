"""Attention page timings, server side, through Streamlit's AppTest (no browser).

Prints the first analysis of 64-token prompts on SmolLM2 (target <= 1.5 s), and the work of
the page fragment when the selected head or layer changes on a cached 256-token prompt
(target <= 150 ms for a head switch). The page stores its fragment's time in
``st.session_state["attn_fragment_ms"]`` and its analysis time in an "Analysed in" caption.

    python -m benchmarks.attention_page
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from streamlit.testing.v1 import AppTest

import explorer

logger = logging.getLogger("benchmarks.attention_page")
APP = str(Path(__file__).resolve().parents[1] / "app.py")


def prompt_of(lm: explorer.LoadedModel, n_tokens: int, seed: int) -> str:
    """A random text that tokenizes to exactly ``n_tokens`` tokens (plus any BOS)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (n_tokens + 40,), generator=generator)
    return lm.decode(lm.tokenizer.encode(lm.decode(ids))[:n_tokens])


def load_off_the_main_thread(name: str) -> explorer.LoadedModel:
    """Load as the app does, in a worker thread. Torch work on the main thread (the loader
    packs weights with parallel copies) keeps libgomp's main-thread pool alive; with more
    OpenMP threads than cores every parallel region in the script threads then wakes its
    worker through the kernel (~70 us a region on this VM), which the app never pays."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(explorer.load, name).result()


def analysed_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Analysed"))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lm = load_off_the_main_thread("smollm2-135m")
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("app_pages/attention.py")
    for seed in (1, 2, 3):
        at.session_state["prompt_box_attention"] = prompt_of(lm, 64, seed)
        start = time.perf_counter()
        at.run()
        logger.info("64 tokens, first visit: %s (whole AppTest run %.2f s)",
                    analysed_caption(at), time.perf_counter() - start)
    at.session_state["prompt_box_attention"] = prompt_of(lm, 256, 7)
    at.run()
    logger.info("256 tokens: %s", analysed_caption(at))
    head_ms = []
    for head in [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3]:
        at.selectbox(key="attn_head").set_value(head).run()
        head_ms.append(at.session_state["attn_fragment_ms"])
    logger.info("head switch, fragment ms: median %.0f, max %.0f (target <= 150)",
                statistics.median(head_ms), max(head_ms))
    layer_ms = []
    for layer in [3, 10, 20]:
        at.selectbox(key="attn_layer").set_value(layer).run()
        layer_ms.append(at.session_state["attn_fragment_ms"])
    logger.info("layer switch, fragment ms: %s", [round(ms) for ms in layer_ms])


if __name__ == "__main__":
    main()
