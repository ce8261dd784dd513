"""Forward-pass benchmark: our engine vs transformers on SmolLM2, float32 CPU.

(a) plain forward: our fused path (torch SDPA kernel) vs transformers with sdpa attention;
(b) everything captured: our ``run_with_cache`` (every pattern and residual) vs transformers
eager with ``output_attentions`` and ``output_hidden_states``.
Both models hold the same weights. Prints ratio ours/transformers (lower is better) and the
fraction of this machine's float32 matmul peak each forward reaches.

    python benchmarks/forward.py --threads 2 --repeats 5 --lengths 128 512
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import explorer
from benchmarks.common import (
    forward_flops,
    matmul_peak,
    paired_times,
    transformers_llama,
)

logger = logging.getLogger("benchmarks.forward")

# What transformers returns with output_attentions + output_hidden_states: every pattern and
# the residual stream at every layer boundary (resid_post of a block is the next block's
# resid_pre, the same tensor; final_norm is transformers' last hidden state).
CAPTURED = ["embed", "blocks.*.attn.pattern", "blocks.*.resid_pre", "blocks.*.resid_post",
            "final_norm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    lm = explorer.load(args.model, device="cpu", dtype="float32")
    cfg = lm.config
    sdpa = transformers_llama(lm.model, cfg, "sdpa")
    eager = transformers_llama(lm.model, cfg, "eager")
    peaks = [matmul_peak()]
    rows = []
    with torch.inference_mode():
        for n in args.lengths:
            ids = torch.randint(0, cfg.d_vocab, (1, n), generator=torch.Generator().manual_seed(n))
            flops = forward_flops(cfg, n)
            cases = {
                "(a) forward": (lambda x=ids: lm.model(x),
                                lambda x=ids: sdpa(x, use_cache=False).logits),
                "(b) capture all": (lambda x=ids: lm.model.run_with_cache(x, names=CAPTURED),
                                    lambda x=ids: eager(x, use_cache=False,
                                                        output_attentions=True,
                                                        output_hidden_states=True)),
            }
            for case, (ours, theirs) in cases.items():
                ours_t, theirs_t = paired_times(ours, theirs, args.repeats)
                rows.append((case, n, ours_t, theirs_t, flops))
    peaks.append(matmul_peak())  # measured before and after: the best is the peak
    peak = max(peaks)
    lines = [
        f"{args.model}, float32 cpu, {args.threads} threads, best of {args.repeats}; "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s",
        f"{'case':<16}{'tokens':>7}{'ours ms':>10}{'hf ms':>10}{'ratio':>8}"
        f"{'ours %peak':>12}{'hf %peak':>10}",
    ]
    for case, n, ours_t, theirs_t, flops in rows:
        lines.append(f"{case:<16}{n:>7}{ours_t * 1e3:>10.1f}{theirs_t * 1e3:>10.1f}"
                     f"{ours_t / theirs_t:>8.3f}{flops / ours_t / peak:>11.0%}"
                     f"{flops / theirs_t / peak:>10.0%}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
