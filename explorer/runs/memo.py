"""`LRUMemo`: the one cache of the app, bounded by entries and by bytes, thread safe.

Used for the process-wide store of prompt runs, for what a run derives lazily (a layer's
patterns, head scores, rollout, lens windows, geometry) and for each browser session's
figure memo. Sizes are measured when asked (:func:`nbytes_of`), so a value that grows after
it was stored (a run deriving more views) is counted at its current size.

Two threads asking for the same missing key compute it once: the second waits on the
first's per-key lock. A value larger than the whole byte budget is still returned, and kept
alone (the most recent entry is never evicted by its own insertion).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


def nbytes_of(value: Any) -> int:
    """Bytes held by tensors and arrays inside ``value`` (recursing into containers and
    dataclasses; objects with an ``nbytes()`` method report their own). Other leaves count 0.
    """
    size = getattr(value, "nbytes", None)
    if callable(size):
        return int(size())
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # torch.Tensor
        return int(value.numel() * value.element_size())
    if isinstance(size, int):  # numpy arrays
        return size
    if isinstance(value, dict):
        return sum(nbytes_of(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(nbytes_of(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes_of(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


class LRUMemo:
    """A least-recently-used memo of at most ``max_entries`` values and ``max_bytes`` bytes.

    ``get(key, compute)`` returns the stored value or stores ``compute()``; ``peek`` reads
    without computing. ``max_bytes=None`` bounds by entries only (figure memos).
    """

    def __init__(self, max_entries: int = 64, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._values)

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """The stored value (marked recently used), or ``default``."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        return default

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value for ``key``, computed once (per key, across threads) when missing."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have computed it while we waited
                if key in self._values:
                    self._values.move_to_end(key)
                    self.hits += 1
                    return self._values[key]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            self.put(key, value)
            self.misses += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` as the most recent entry and evict down to the bounds."""
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            self._evict()

    def _evict(self) -> None:
        while len(self._values) > max(self.max_entries, 1):
            self._values.popitem(last=False)
        if self.max_bytes is None:
            return
        total = sum(nbytes_of(v) for v in self._values.values())
        while len(self._values) > 1 and total > self.max_bytes:
            _, dropped = self._values.popitem(last=False)
            total -= nbytes_of(dropped)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._values.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def nbytes(self) -> int:
        """Bytes held by the stored values, measured now."""
        with self._lock:
            values = list(self._values.values())
        return sum(nbytes_of(v) for v in values)
