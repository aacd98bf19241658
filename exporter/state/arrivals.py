"""When each task name last arrived, how regularly, and from how many senders.

Periodic (beat) tasks arrive on a rhythm. Learning it from traffic shows a beat that died
(no arrival for several intervals) or runs twice (the interval halves; two senders). An
arrival is a task's ``task-sent`` (its timestamp), or, for producers that send none, its
first ``task-received``; retries are not arrivals.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from statistics import median

HISTORY = 16
MAX_NAMES = 10_000
# A name arriving at least daily may be periodic: CeleryPeriodicTaskMissed watches it (for
# intervals up to a day), so its series are never removed for being idle.
PERIODIC_MAX_INTERVAL = 86400.0


@dataclass
class _Arrivals:
    last: float
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    senders: deque[str] = field(default_factory=lambda: deque(maxlen=HISTORY))


@dataclass(frozen=True)
class ArrivalStats:
    last: float
    interval: float | None  # median of the recent intervals (None before two arrivals)
    senders: int  # distinct task-sent senders among the recent arrivals (0 if none)


class ArrivalTracker:
    def __init__(self) -> None:
        self._names: dict[str, _Arrivals] = {}

    def arrive(self, name: str, at: float, sender: str | None) -> None:
        entry = self._names.get(name)
        if entry is None:
            if len(self._names) >= MAX_NAMES:
                return
            entry = self._names[name] = _Arrivals(at)
        else:
            if at >= entry.last:
                entry.intervals.append(at - entry.last)
                entry.last = at
            else:  # out of order: an earlier arrival, not a new interval
                entry.intervals.append(0.0)
        if sender is not None:
            entry.senders.append(sender)

    def forget_unless_periodic(self, name: str, keep: set[str]) -> bool:
        """Drop an idle name's arrivals unless an alert may need them: names in ``keep``
        (the beat schedule) and names that arrived on a rhythm of a day or less."""
        entry = self._names.get(name)
        if entry is None or name in keep:
            return False
        if entry.intervals and median(entry.intervals) <= PERIODIC_MAX_INTERVAL:
            return False
        del self._names[name]
        return True

    def stats(self) -> dict[str, ArrivalStats]:
        return {
            name: ArrivalStats(
                last=e.last,
                interval=median(e.intervals) if e.intervals else None,
                senders=len(set(e.senders)),
            )
            for name, e in list(self._names.items())
        }
