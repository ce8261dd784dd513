"""Generation benchmark: our KV-cache greedy decoding vs transformers ``generate`` on SmolLM2.

Decoding one token reads every weight once, so memory bandwidth bounds it (Pope et al. 2022):
the bound is measured in the same run as one matrix-vector pass (``torch.mv``) over a
[N, 4096] matrix holding as many bytes as the model. Rounds are interleaved (bound, ours,
transformers, ours with attention capture, ours in bfloat16) so a busy shared machine slows
every contender alike; each figure is the best of the rounds (median in brackets).

Prints: tokens/s of ours and transformers (64 new tokens after a 32-token prompt, prefill
included) and their ratio; our decode speed as a fraction of the float32 bound; time to
first token for a 256-token prompt; bfloat16 weights; the cost of capturing attention.

    python benchmarks/generate.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import explorer
from benchmarks.common import transformers_llama

logger = logging.getLogger("benchmarks.generate")
TARGETS = {"ratio": 1.15, "bound": 0.90, "ttft": 0.8, "capture": 0.15}


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameter tensors (tied embeddings counted once)."""
    unique = {p.data_ptr(): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values())


def bandwidth_bound(nbytes: int, dtype: torch.dtype, passes: int = 3) -> float:
    """Seconds of the fastest of ``passes`` matrix-vector products over [N, 4096] weights of
    ``nbytes``: torch.mv in float32; F.linear for half types (mv is twice slower there)."""
    width = 4096
    rows = nbytes // (width * torch.finfo(dtype).bits // 8)
    weights, x = torch.randn(rows, width).to(dtype), torch.randn(width).to(dtype)
    if dtype == torch.float32:
        def product():
            return torch.mv(weights, x)
    else:
        def product():
            return torch.nn.functional.linear(x[None], weights)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(passes + 1):  # the first pass warms the pages
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
    return best


def ours(lm, ids: torch.Tensor, n_new: int, capture: bool = False) -> tuple[float, float]:
    """(seconds for n_new greedy tokens, decode tokens/s after the first)."""
    start = time.perf_counter()
    steps = list(explorer.generate(lm, ids, max_new_tokens=n_new, stop_ids=(),
                                   capture_attention=capture))
    assert len(steps) == n_new
    return time.perf_counter() - start, steps[-1].tokens_per_s


def theirs(ref: torch.nn.Module, ids: torch.Tensor, n_new: int) -> float:
    """Seconds for transformers to generate n_new greedy tokens (forced past eos)."""
    start = time.perf_counter()
    with torch.inference_mode():
        out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                           min_new_tokens=n_new, do_sample=False, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + n_new
    return time.perf_counter() - start


def ttft(lm, ids: torch.Tensor) -> float:
    return next(iter(explorer.generate(lm, ids, max_new_tokens=1, stop_ids=()))).elapsed


def summary(values: list[float], best: Callable[[list[float]], float]) -> tuple[float, float]:
    return best(values), statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--ttft-tokens", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    lm = explorer.load(args.model, device="cpu", dtype="float32")
    lm_bf16 = explorer.load(args.model, device="cpu", dtype="bfloat16")  # as the app loads it
    ref = transformers_llama(lm.model, lm.config, "sdpa")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 20000, (1, args.prompt_tokens), generator=gen)
    long_ids = torch.randint(100, 20000, (1, args.ttft_tokens), generator=gen)
    n = args.new_tokens
    fp32_bytes, bf16_bytes = model_bytes(lm.model), model_bytes(lm_bf16.model)

    runs: dict[str, list[float]] = {k: [] for k in (
        "bound", "bound_bf16", "ours_s", "ours_decode", "theirs_s", "capture_decode",
        "bf16_decode", "ttft")}
    ours(lm, ids, 4), theirs(ref, ids, 4), ours(lm_bf16, ids, 4)  # warm-up
    for r in range(args.rounds):
        runs["bound"].append(bandwidth_bound(fp32_bytes, torch.float32))
        total, decode = ours(lm, ids, n)
        runs["ours_s"].append(total)
        runs["ours_decode"].append(decode)
        runs["theirs_s"].append(theirs(ref, ids, n))
        runs["capture_decode"].append(ours(lm, ids, n, capture=True)[1])
        runs["bf16_decode"].append(ours(lm_bf16, ids, n)[1])
        runs["bound_bf16"].append(bandwidth_bound(bf16_bytes, torch.bfloat16))
        runs["ttft"].append(ttft(lm, long_ids))
        logger.info("round %d/%d done", r + 1, args.rounds)

    bound_s, bound_med = summary(runs["bound"], min)
    ours_s, ours_med = summary(runs["ours_s"], min)
    theirs_s, theirs_med = summary(runs["theirs_s"], min)
    decode, decode_med = summary(runs["ours_decode"], max)
    capture, capture_med = summary(runs["capture_decode"], max)
    bf16, bf16_med = summary(runs["bf16_decode"], max)
    bound_bf16_s, _ = summary(runs["bound_bf16"], min)
    first, first_med = summary(runs["ttft"], min)
    ratio = theirs_s / ours_s
    fraction = decode * bound_s
    capture_cost = 1 - capture / decode
    rows = [
        ("model bytes (float32)", f"{fp32_bytes / 1e6:.0f} MB", "", ""),
        ("bandwidth bound (mv pass)", f"{1 / bound_s:.1f} tok/s", f"[{1 / bound_med:.1f}]",
         f"{fp32_bytes / bound_s / 1e9:.1f} GB/s"),
        (f"ours greedy, {n} new after {args.prompt_tokens}", f"{n / ours_s:.1f} tok/s",
         f"[{n / ours_med:.1f}]", ""),
        ("transformers generate (sdpa)", f"{n / theirs_s:.1f} tok/s",
         f"[{n / theirs_med:.1f}]", f"{n / theirs_s * bound_s:.0%} of bound"),
        ("ratio ours / transformers", f"{ratio:.2f}x", f"[{theirs_med / ours_med:.2f}x]",
         f"target >= {TARGETS['ratio']}"),
        ("ours decode speed", f"{decode:.1f} tok/s", f"[{decode_med:.1f}]",
         f"{fraction:.0%} of bound (target >= {TARGETS['bound']:.0%})"),
        (f"time to first token, {args.ttft_tokens}-token prompt", f"{first:.3f} s",
         f"[{first_med:.3f}]", f"target <= {TARGETS['ttft']} s"),
        ("ours decode, bfloat16 weights", f"{bf16:.1f} tok/s", f"[{bf16_med:.1f}]",
         f"{bf16 / decode:.2f}x float32; {bf16 * bound_bf16_s:.0%} of bf16 bound "
         f"({1 / bound_bf16_s:.1f} tok/s)"),
        ("ours decode, capture_attention", f"{capture:.1f} tok/s", f"[{capture_med:.1f}]",
         f"cost {capture_cost:.1%} (target <= {TARGETS['capture']:.0%})"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"SmolLM2 generation, CPU, {args.threads} thread(s), best of {args.rounds} "
             "rounds [median]", "-" * (width + 60)]
    lines += [f"{a:<{width}}  {b:>14}  {c:>10}  {d}" for a, b, c, d in rows]
    logger.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
