"""Load-time benchmark: first load (conversion) and warm loads, each in a fresh process.

Targets on the team machine: SmolLM2 first load <= 10 s, warm <= 2 s; MiniLM <= 1 s. The
time is that of ``explorer.load`` itself (torch already imported), printed per model.

    python benchmarks/load.py [--fresh-cache DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, os, time, torch
torch.set_num_threads({threads})
import explorer
start = time.perf_counter()
lm = explorer.load({name!r}, device="cpu", dtype="float32")
print(json.dumps({{"seconds": time.perf_counter() - start, "from_cache": lm.from_cache}}))
"""


def timed_load(name: str, cache: str, threads: int) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(name=name, threads=threads)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-cache", default=None, help="cache dir (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warm-runs", type=int, default=2)
    args = parser.parse_args()
    cache = args.fresh_cache or tempfile.mkdtemp(prefix="explorer-load-bench-")
    rows = []
    for name in ("smollm2-135m", "minilm-l6"):
        runs = [timed_load(name, cache, args.threads) for _ in range(1 + args.warm_runs)]
        rows.append((name, runs[0]["seconds"], min(r["seconds"] for r in runs[1:])))
    lines = [f"{'model':<14}{'first s':>9}{'warm s':>9}   (cache {cache})"]
    lines += [f"{n:<14}{first:>9.2f}{warm:>9.2f}" for n, first, warm in rows]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
