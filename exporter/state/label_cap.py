"""A cap on the distinct values of one label that comes from the wire.

Queue names (``task-sent``), worker hostnames and exception classes are named by whoever
publishes events, so each gets a cap like task names have (``state/task_names.py``): the
first ``max_values`` distinct values get series of their own, later ones count under
``(other)``. Each folded value is counted once in
``celery_exporter_dropped_label_values_total{label,reason="over_limit"}``, and the first
fold is logged once (a flood of new values never floods the log).

Not thread-safe: used on the event thread, under the dispatcher's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from exporter.labels import UNKNOWN
from exporter.metrics.counting import LabelledCounter

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
        self._logged = False
        dropped.inc((label, "over_limit"), 0.0)

    def __len__(self) -> int:
        return len(self._admitted)

    def __contains__(self, value: object) -> bool:
        return value in self._admitted or value in self._preset

    def label(self, value: str) -> str:
        """``value`` (already a safe label value) if it has or gets a place, else ``(other)``."""
        if value in self._admitted or value in self._preset or value == UNKNOWN:
            return value
        if not self.max_values or len(self._admitted) < self.max_values:
            self._admitted.add(value)
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
        """``value``'s series are gone: it gives up its place (a later event admits it again)."""
        self._admitted.discard(value)
        self._folded.clear()
