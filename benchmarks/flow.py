"""The information flow graph on SmolLM2 (the Layers page's Information flow tab): all of a
prompt's block importances (`explorer.runs.flow.information_flow`, what the tab waits for
on its first open) against one plain forward of the same prompt, measured in the same run,
interleaved (forward, flow, forward, flow, ...), at 64, 128 and 256 tokens (the tab's cap).
Also the size of the graph's figure at the default threshold.

    python -m benchmarks.flow [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks.attention_page import load_off_the_main_thread, prompt_of
from explorer.analysis.flow import flow_graph
from explorer.runs import Tokens, run_prompt
from explorer.runs.flow import information_flow
from explorer.viz.flow import flow_figure

logger = logging.getLogger("benchmarks.flow")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lm = load_off_the_main_thread("smollm2-135m")
    logger.info("threads %d, load %s", torch.get_num_threads(), os.getloadavg())
    for n_tokens in (64, 128, 256):
        ids = lm.encode(prompt_of(lm, n_tokens, seed=n_tokens))[0]
        tokens = Tokens(ids, [str(int(i)) for i in ids], torch.zeros(len(ids), dtype=torch.bool))
        forward_s, flow_s = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                lm.model(ids[None])
            forward_s.append(time.perf_counter() - start)
            run = run_prompt(lm.model, "decoder", lm.config.n_heads, tokens)  # a fresh run
            start = time.perf_counter()
            flow = information_flow(run)
            flow_s.append(time.perf_counter() - start)
        edges = flow_graph(flow, len(ids) - 1, 0.04)
        figure = flow_figure(edges, [str(i) for i in range(len(ids))], flow.n_layers,
                             len(ids) - 1, 0.04)
        forward, flow_median = statistics.median(forward_s), statistics.median(flow_s)
        logger.info("%d tokens: flow %s s (median %.2f), plain forward median %.3f s: %.1fx a "
                    "forward; %d edges at 0.04, figure %d KiB", len(ids),
                    [round(s, 2) for s in flow_s], flow_median, forward,
                    flow_median / forward, len(edges), len(figure.to_json()) // 1024)


if __name__ == "__main__":
    main()
