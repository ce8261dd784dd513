"""explorer.runs.memo.LRUMemo: bounds by entries and bytes, recency, one computation per key
across threads, sizes measured when asked."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from explorer.runs.memo import LRUMemo, nbytes_of


def test_nbytes_of_tensors_arrays_containers_and_dataclasses() -> None:
    @dataclass
    class Pair:
        a: torch.Tensor
        b: object

    class Reports:
        def nbytes(self) -> int:
            return 7

    t = torch.zeros(10, dtype=torch.float32)
    assert nbytes_of(t) == 40
    assert nbytes_of(np.zeros(5, dtype=np.float64)) == 40
    assert nbytes_of({"x": t, "y": [t.half(), (t,)]}) == 40 + 20 + 40
    assert nbytes_of(Pair(t, "text")) == 40
    assert nbytes_of(Reports()) == 7
    assert nbytes_of("a string") == 0 and nbytes_of(None) == 0


def test_entries_bound_drops_the_least_recently_used() -> None:
    memo = LRUMemo(max_entries=2)
    memo.get("a", lambda: 1)
    memo.get("b", lambda: 2)
    assert memo.get("a", lambda: -1) == 1  # hit: "a" is now the most recent
    memo.get("c", lambda: 3)
    assert memo.keys() == ["a", "c"]
    assert (memo.hits, memo.misses) == (1, 3)


def test_bytes_bound_measured_at_eviction_time() -> None:
    memo = LRUMemo(max_entries=10, max_bytes=100)
    memo.get("a", lambda: torch.zeros(10))  # 40 bytes
    memo.get("b", lambda: torch.zeros(10))
    assert memo.nbytes() == 80
    memo.get("c", lambda: torch.zeros(10))  # 120 > 100: "a" goes
    assert memo.keys() == ["b", "c"] and memo.nbytes() == 80
    big = memo.get("d", lambda: torch.zeros(100))  # larger than the budget: kept alone
    assert memo.keys() == ["d"] and memo.peek("d") is big


def test_a_value_that_grew_is_counted_at_its_new_size() -> None:
    class Growing:
        def __init__(self) -> None:
            self.size = 10

        def nbytes(self) -> int:
            return self.size

    memo = LRUMemo(max_entries=10, max_bytes=100)
    first = memo.get("first", Growing)
    memo.get("second", Growing)
    first.size = 95  # e.g. a run that derived views after it was stored
    memo.put("third", Growing())
    assert "first" not in memo and memo.keys() == ["second", "third"]


def test_two_threads_compute_a_key_once() -> None:
    memo = LRUMemo()
    calls = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 42

    results = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("k", slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 4 and len(calls) == 1


def test_a_failed_computation_is_not_stored_and_can_be_retried() -> None:
    memo = LRUMemo()

    def boom() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        memo.get("k", boom)
    assert "k" not in memo
    assert memo.get("k", lambda: 5) == 5
