"""A walk over the Redis keyspace whose cost per sample is bounded, whatever its size.

The queue sampler needs keys it cannot name in advance: kombu's binding tables
(``_kombu.binding.<exchange>``: which queues exist) and priority lists of layouts nobody
told the exporter about. ``KEYS`` would block Redis; one full ``SCAN`` pass per sample
costs about 0.4 s of Redis CPU per million keys (bench/RESULTS.md). So each sample makes
at most ``calls`` ``SCAN`` calls of ``COUNT`` keys, narrowed by ``MATCH`` on the
``global_keyprefix`` when there is one, and the cursor carries on at the next sample: a
database of up to ``calls * count`` keys (20,000 by default) is walked in every sample; a
bigger one over several (a million keys: about 50 samples, 4 minutes at 5 s).

What a pass found stays known until the next pass completes, so a key never disappears
from view in the middle of a walk.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

SCAN_COUNT = 1000
SCAN_CALLS_PER_SAMPLE = 20


def glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class KeyspaceWalk:
    def __init__(
        self,
        prefix: str = "",
        count: int = SCAN_COUNT,
        calls: int = SCAN_CALLS_PER_SAMPLE,
    ) -> None:
        self.match = f"{glob_escape(prefix)}*" if prefix else None
        self.count = count
        self.calls = calls
        self._cursor = 0
        self._current: set[str] = set()  # kept keys of the pass under way
        self._previous: set[str] = set()  # kept keys of the last complete pass
        self.passes = 0  # complete passes, ever

    def step(self, client: redis.Redis, keep: Callable[[str], bool]) -> set[str]:
        """Walk on a little, remembering the keys ``keep`` accepts; return those of the last
        complete pass and of this one."""
        for _ in range(self.calls):
            cursor, keys = client.scan(self._cursor, match=self.match, count=self.count)
            for raw in keys:
                key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                if keep(key):
                    self._current.add(key)
            self._cursor = int(cursor)
            if self._cursor == 0:
                self._previous, self._current = self._current, set()
                self.passes += 1
                return set(self._previous)
        return self._previous | self._current

    def reset(self) -> None:
        """A new connection may be another server: start over (keeping what is known)."""
        self._cursor = 0
        self._current = set()
