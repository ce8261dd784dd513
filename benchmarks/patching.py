"""Activation patching on SmolLM2: the full residual grid (30 layers x 20 positions) and the
head grid (270 heads) for a 20-token prompt pair, three ways, interleaved in one run:
packed suffix runs (the default: only the positions a patch can change, many runs in one
sequence), whole-prompt batches (``packed=False``: many patches per forward, each batch from
its earliest patched block), and one full forward per patch (timed on a sample of cells).

Two pairs: the IOI pair, which differs only at position 15 (a name), and the same pair with
its first token changed too, the worst case for packing (every position can change).

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
from explorer.interventions import SITES, logit_diff_metric, patch_grid

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


@torch.no_grad()
def one_patched_forward(model, clean_cache, corrupt: torch.Tensor, site: str, layer: int,
                        column: int) -> torch.Tensor:
    """The baseline: the corrupted prompt's forward with one activation copied from the
    clean run's cache (a position's residual, or one head's output at every position)."""
    key = f"blocks.{layer}.{SITES[site][0]}"

    def edit(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[0, column] = clean_cache[key][0, column]
        return t
    return model(corrupt, edits={key: edit}, last_only=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lm = load_off_the_main_thread("smollm2-135m")
    clean, corrupt = twenty_tokens(lm, CLEAN), twenty_tokens(lm, CORRUPT)
    worst = corrupt.clone()
    worst[0, 0] = lm.tokenizer.encode(" But", add_special_tokens=False)[0]
    with torch.no_grad():
        answer = int(lm.model(clean)[0, -1].argmax())
        distractor = int(lm.model(corrupt)[0, -1].argmax())
    logger.info("answer %r, distractor %r, threads %d, load %s", lm.decode([answer]),
                lm.decode([distractor]), torch.get_num_threads(), os.getloadavg())
    metric = logit_diff_metric(answer, distractor)
    _, clean_cache = lm.model.run_with_cache(clean, names=[
        f"blocks.*.{SITES[site][0]}" for site in ("resid", "head")])
    for pair, corrupted in (("IOI pair (differs at position 15)", corrupt),
                            ("worst case (differs at position 0 too)", worst)):
        for site, cells in (("resid", 30 * 20), ("head", 30 * 9)):
            packed_s, whole_s, single_s = [], [], []
            for repeat in range(2):  # interleaved: packed, whole prompts, single patches
                grids = []
                for packed, times in ((True, packed_s), (False, whole_s)):
                    start = time.perf_counter()
                    grids.append(patch_grid(lm.model, clean, corrupted, site, metric,
                                            batch_size=args.batch, packed=packed))
                    times.append(time.perf_counter() - start)
                grid = grids[0]
                gap = float((grids[0].values - grids[1].values).abs().max())
                columns = (15 + repeat, 5 + repeat) if site == "resid" else (repeat, 5 + repeat)
                sample = [(layer, col) for layer in (0, 10, 20, 29) for col in columns]
                start = time.perf_counter()
                for layer, col in sample:
                    one_patched_forward(lm.model, clean_cache, corrupted, site, layer, col)
                single_s.append((time.perf_counter() - start) / len(sample))
            one_by_one = min(single_s) * cells
            logger.info(
                "%s, %s grid (%d patches): packed %s s (target <= 15 s); whole-prompt "
                "batches %s s (%.1fx); one forward per patch about %.1f s (%.0f ms a patch, "
                "%.1fx); packed vs whole-prompt values differ by at most %.1e; restored most at "
                "layer/column %s (normalised %.2f)",
                pair, site, cells, [round(s, 1) for s in packed_s],
                [round(s, 1) for s in whole_s], min(whole_s) / min(packed_s), one_by_one,
                1000 * min(single_s), one_by_one / min(packed_s), gap,
                divmod(int(grid.normalised.nan_to_num(-1e9).argmax()), grid.values.shape[1]),
                float(grid.normalised.nan_to_num(-1e9).max()))


if __name__ == "__main__":
    main()
