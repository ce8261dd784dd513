"""Activation patching on SmolLM2: the full residual grid (30 layers x 20 positions) and the
head grid (270 heads) for a 20-token prompt pair, batched (many patches per forward,
each batch starting at its earliest patched block) against the baseline of one full
forward per patch, measured on a sample of cells in the same run (interleaved).

Target (issue 18): each grid within 15 s on this CPU.

    python -m benchmarks.patching [--batch 32]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks.attention_page import load_off_the_main_thread
from explorer.interventions import logit_diff_metric, patch_grid, patched_outcome

logger = logging.getLogger("benchmarks.patching")
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def twenty_tokens(lm, text: str) -> torch.Tensor:
    """The text's ids padded with a neutral continuation to exactly 20 tokens."""
    ids = lm.encode(text)[0].tolist()
    filler = lm.tokenizer.encode(" and then they", add_special_tokens=False)
    while len(ids) < 20:
        ids = filler[: 20 - len(ids)] + ids
    return torch.tensor([ids[-20:]])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lm = load_off_the_main_thread("smollm2-135m")
    clean, corrupt = twenty_tokens(lm, CLEAN), twenty_tokens(lm, CORRUPT)
    with torch.no_grad():
        answer = int(lm.model(clean)[0, -1].argmax())
        distractor = int(lm.model(corrupt)[0, -1].argmax())
    logger.info("answer %r, distractor %r, threads %d, load %s", lm.decode([answer]),
                lm.decode([distractor]), torch.get_num_threads(), os.getloadavg())
    metric = logit_diff_metric(answer, distractor)
    for site, cells in (("resid", 30 * 20), ("head", 30 * 9)):
        grid_s, single_s = [], []
        for repeat in range(2):  # interleave: grid, sample of single patches, grid, sample
            start = time.perf_counter()
            grid = patch_grid(lm.model, clean, corrupt, site, metric, batch_size=args.batch)
            grid_s.append(time.perf_counter() - start)
            sample = [(layer, col) for layer in (0, 10, 20, 29) for col in (repeat, 5 + repeat)]
            start = time.perf_counter()
            for layer, col in sample:
                patched_outcome(lm.model, clean, corrupt, site, layer, col)
            single_s.append((time.perf_counter() - start) / len(sample))
        one_by_one = min(single_s) * cells
        logger.info("%s grid (%d patches): batched %s s (target <= 15 s); one forward per "
                    "patch would take about %.1f s (%.0f ms a patch): %.1fx faster; "
                    "restored most at layer/column %s (normalised %.2f)",
                    site, cells, [round(s, 1) for s in grid_s], one_by_one,
                    1000 * min(single_s), one_by_one / min(grid_s),
                    divmod(int(grid.normalised.nan_to_num(-1e9).argmax()),
                           grid.values.shape[1]),
                    float(grid.normalised.nan_to_num(-1e9).max()))


if __name__ == "__main__":
    main()
