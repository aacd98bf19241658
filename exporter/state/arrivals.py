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

    def stats(self) -> dict[str, ArrivalStats]:
        return {
            name: ArrivalStats(
                last=e.last,
                interval=median(e.intervals) if e.intervals else None,
                senders=len(set(e.senders)),
            )
            for name, e in list(self._names.items())
        }
