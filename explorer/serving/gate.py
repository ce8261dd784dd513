"""`HeavyGate`: a first-come, first-served gate in front of heavy work on a shared server.

A forward over a long prompt, a generation or a patching grid each keep the CPUs busy; when
several visitors start one at once they all slow down together (and torch's thread pools
oversubscribe the cores). The gate lets ``capacity`` jobs run at once and queues the rest in
arrival order. A waiter learns how many jobs are ahead of it (running or queued earlier)
each time its ``on_wait`` callback runs, and may give up by raising from that callback: its
place is freed in every case (``leave`` runs in a ``finally``), so a visitor who closes the
tab or reruns the page never holds a place.

Pure threading, no Streamlit: `explorer.ui.gate` draws the "waiting for N others" message.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from explorer.serving.limits import env_limits

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a waiter wakes to report its place (and may give up)


class GateTimeout(TimeoutError):
    """The wait for a slot took longer than allowed."""


class HeavyGate:
    """At most ``capacity`` holders at once; the others wait in arrival order."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._holders: set[int] = set()
        self._tickets = itertools.count()

    # -- state ------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        with self._cond:
            return len(self._holders)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def ahead_of(self, ticket: int) -> int:
        """Jobs before ``ticket``: those running plus those queued earlier (0 once it runs)."""
        with self._cond:
            if ticket in self._holders:
                return 0
            try:
                return len(self._holders) + self._queue.index(ticket)
            except ValueError:
                return 0

    # -- protocol -------------------------------------------------------------------------
    def enter(self) -> int:
        """Join the queue; returns the ticket to wait with and to leave with."""
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            self._promote()
            return ticket

    def _promote(self) -> None:
        while self._queue and len(self._holders) < self.capacity:
            self._holders.add(self._queue.popleft())
        self._cond.notify_all()

    def wait_turn(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until ``ticket`` holds a slot (True) or ``timeout`` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: ticket in self._holders, timeout)

    def leave(self, ticket: int) -> None:
        """Give the slot back, or the place in the queue; idempotent."""
        with self._cond:
            self._holders.discard(ticket)
            with contextlib.suppress(ValueError):
                self._queue.remove(ticket)
            self._promote()

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None,
             max_wait_s: float | None = None, poll_s: float = POLL_S) -> Iterator[None]:
        """Hold a slot for the ``with`` body.

        While queued, ``on_wait(n_ahead)`` runs every ``poll_s`` seconds; an exception it
        raises (a closed tab, a rerun) leaves the queue and propagates. Raises
        `GateTimeout` after ``max_wait_s`` seconds of waiting.
        """
        ticket = self.enter()
        try:
            started = time.monotonic()
            while not self.wait_turn(ticket, poll_s):
                if max_wait_s is not None and time.monotonic() - started > max_wait_s:
                    raise GateTimeout(f"no free slot after {max_wait_s:.0f} s")
                if on_wait is not None:
                    on_wait(self.ahead_of(ticket))
            yield
        finally:
            self.leave(ticket)


_shared: HeavyGate | None = None
_shared_lock = threading.Lock()


def shared_gate() -> HeavyGate:
    """The process-wide gate, sized once from `explorer.serving.limits` (CPUs // 2 slots)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = HeavyGate(env_limits().slots())
            log.info("heavy-work gate: %d slot(s)", _shared.capacity)
        return _shared
