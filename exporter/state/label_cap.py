"""A cap on the distinct values of one label that comes from the wire.

Queue names (``task-sent``), worker hostnames and exception classes are named by whoever
publishes events, so each gets a cap like task names have (``state/task_names.py``): the
first ``max_values`` distinct values get series of their own, later ones count under
``(other)``. Each folded value is counted once in
``celery_exporter_dropped_label_values_total{label,reason="over_limit"}``, and the first
fold is logged once (a flood of new values never floods the log).

A place is not held for good: callers note when an admitted value was last used
(``last_seen``) and ``release_idle`` frees the places of values idle longer than a
forget-after time (their series are removed by the caller), so a burst of junk values
cannot fill the cap until restart.

Not thread-safe: used on the event thread, under the dispatcher's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from exporter.labels import UNKNOWN
from exporter.prom.counting import LabelledCounter

log = logging.getLogger(__name__)

OTHER = "(other)"
# Folded values remembered so each is counted once; beyond it a value may count again.
MAX_FOLDED_REMEMBERED = 100_000


class LabelCap:
    def __init__(
        self,
        label: str,
        max_values: int,
        dropped: LabelledCounter,
        flag: str,
        preset: Iterable[str] = (),
    ) -> None:
        self.name = label
        self.max_values = max_values  # 0: no cap
        self.dropped = dropped
        self.flag = flag
        # Values named by configuration (--queues): admitted without taking a place.
        self._preset = frozenset(preset)
        self._admitted: set[str] = set()
        self._folded: set[str] = set()
        # Admitted value -> when it was last used (by callers that release idle values).
        self.last_seen: dict[str, float] = {}
        self._logged = False
        dropped.inc((label, "over_limit"), 0.0)

    def __len__(self) -> int:
        return len(self._admitted)

    def __contains__(self, value: object) -> bool:
        return value in self._admitted or value in self._preset

    def label(self, value: str, now: float | None = None) -> str:
        """``value`` (already a safe label value) if it has or gets a place, else ``(other)``;
        with ``now``, notes the use for ``release_idle``."""
        if value in self._admitted or value in self._preset or value == UNKNOWN:
            if now is not None and value in self._admitted:
                self.last_seen[value] = now
            return value
        if not self.max_values or len(self._admitted) < self.max_values:
            self._admitted.add(value)
            if now is not None:
                self.last_seen[value] = now
            return value
        if value not in self._folded:
            if len(self._folded) < MAX_FOLDED_REMEMBERED:
                self._folded.add(value)
            self.dropped.inc((self.name, "over_limit"))
            if not self._logged:
                self._logged = True
                log.warning(
                    "more than %d distinct %s values: later ones are counted under %s=%r "
                    "(raise %s if they are real; see "
                    "celery_exporter_dropped_label_values_total)",
                    self.max_values,
                    self.name,
                    self.name,
                    OTHER,
                    self.flag,
                )
        return OTHER

    def forget(self, value: str) -> None:
        """``value``'s series are gone: it gives up its place (a later event admits it again).

        Folded values stay remembered, so none is counted as dropped twice."""
        self._admitted.discard(value)
        self.last_seen.pop(value, None)

    def release_idle(
        self, now: float, idle_after: float, keep: Callable[[str], bool] = lambda v: False
    ) -> list[str]:
        """Forget the admitted values last used more than ``idle_after`` seconds ago (unless
        ``keep`` vouches for them); returns them, for the caller to remove their series."""
        cutoff = now - idle_after
        gone = [
            value
            for value, seen in self.last_seen.items()
            if seen < cutoff and value in self._admitted and not keep(value)
        ]
        for value in gone:
            self.forget(value)
        return gone
