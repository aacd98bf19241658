"""Which queues to sample, from every source that names one.

A queue is watched when it is named with ``--queues`` (always), consumed by a worker,
seen in a ``task-sent`` event, or listed by the broker (Redis: kombu's bindings). One
that leaves every source and stays empty for ``forget_after`` seconds is dropped.
"""

from __future__ import annotations

import threading


class QueueRegistry:
    def __init__(self, named: tuple[str, ...], forget_after: float) -> None:
        self.named = frozenset(named)
        self.forget_after = forget_after
        self._last_relevant: dict[str, float] = {}
        self.forgotten = 0  # queues dropped for being idle, ever
        self._lock = threading.Lock()

    def note(self, queues: set[str] | list[str] | tuple[str, ...], now: float) -> None:
        with self._lock:
            for queue in queues:
                self._last_relevant[queue] = now

    def watched(self, now: float) -> list[str]:
        """Queues to sample now (forgetting the stale ones)."""
        with self._lock:
            for queue, seen in list(self._last_relevant.items()):
                if queue not in self.named and now - seen > self.forget_after:
                    del self._last_relevant[queue]
                    self.forgotten += 1
            return sorted(self.named | self._last_relevant.keys())
