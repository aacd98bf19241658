"""Range checks of an event's numbers, at the edge, before any of them reaches a metric.

Anyone who can publish to the broker can send events, so a number is only used when it is
one a real sender could have sent: a timestamp within ``time_window`` of the exporter's
clock (clock skew, batching and lag stay far inside it), a task runtime from 0 to
``MAX_RUNTIME_SECONDS``, a heartbeat ``freq`` within Celery's meaningful range (its default
is 2 s), task counts from 0 to ``MAX_COUNT``. An event carrying a number outside its range
has that number removed before any handler sees it, and is counted once in
``celery_exporter_events_skipped_total{reason="out_of_range"}``: the value is skipped, the
event still counts for what else it says (a success with an absurd runtime is a success
with no runtime; a timestamp from a wrong clock is replaced by the arrival time, as a
missing one always was).

A field that is absent, or not a number, is not checked here: handlers treat it as
missing, as they always did. Comparisons are made before any conversion, so a JSON integer
of 400 digits is compared, never converted (``float()`` of it raises ``OverflowError``).
"""

from __future__ import annotations

from typing import Any

# Celery's heartbeat interval (`worker --heartbeat-interval`) is 2 s by default; an interval
# of over an hour would keep a stopped worker "up" for hours (defect: freq 1e308).
MAX_HEARTBEAT_FREQ_SECONDS = 3600.0
# A task's own runtime (task-succeeded `runtime`): up to 30 days.
MAX_RUNTIME_SECONDS = 30 * 86400.0
# Tasks running or processed by one worker (`active`, `processed`).
MAX_COUNT = 10**12
DEFAULT_TIME_WINDOW_SECONDS = 86400.0

# Per event type: (field, lowest, highest, lowest allowed itself).
_Bound = tuple[str, float, float, bool]
_WORKER_FIELDS: tuple[_Bound, ...] = (
    ("freq", 0.0, MAX_HEARTBEAT_FREQ_SECONDS, False),
    ("active", 0.0, float(MAX_COUNT), True),
    ("processed", 0.0, float(MAX_COUNT), True),
)
_FIELDS: dict[str, tuple[_Bound, ...]] = {
    "task-succeeded": (("runtime", 0.0, MAX_RUNTIME_SECONDS, True),),
    "worker-online": _WORKER_FIELDS,
    "worker-heartbeat": _WORKER_FIELDS,
}


# Event types with numbers besides the timestamp to check.
CHECKED_TYPES = frozenset(_FIELDS)


class EventRanges:
    def __init__(self, time_window: float = DEFAULT_TIME_WINDOW_SECONDS) -> None:
        self.time_window = time_window

    def bad_fields(self, event: dict[str, Any], etype: str, now: float) -> list[str]:
        """The names of the fields out of their range (usually none: an empty list)."""
        bad: list[str] = []
        ts: Any = event.get("timestamp")
        kind: type = type(ts)
        # NaN fails both comparisons, so it is out of range too.
        if (kind is float or kind is int) and not (
            now - self.time_window <= ts <= now + self.time_window
        ):
            bad.append("timestamp")
        bounds = _FIELDS.get(etype)
        if bounds is not None:
            for field, low, high, low_ok in bounds:
                value: Any = event.get(field)
                kind = type(value)
                if kind is not float and kind is not int:  # bool is not int here
                    continue
                if not (low <= value <= high) or (value == low and not low_ok):
                    bad.append(field)
        return bad
