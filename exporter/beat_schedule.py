"""The beat schedule of the user's Celery app (``--app module:attribute``), if given.

Only read at start: entry name, task name and the interval between two runs, so that a
periodic task's learned rhythm can be compared with what beat is configured to do.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class ScheduleEntry:
    entry: str
    task: str
    interval_seconds: float


class AppNotFound(ValueError):
    pass


def load_app(spec: str) -> Any:
    """``package.module:app`` (or ``package.module``, taking its ``app``/``celery``)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppNotFound(f"cannot import {module_name!r}: {exc}") from None
    names = [attribute] if attribute else ["app", "celery"]
    for name in names:
        app = getattr(module, name, None)
        if app is not None and hasattr(app, "conf"):
            return app
    raise AppNotFound(f"{spec!r} does not name a Celery app")


def interval_of(schedule: Any) -> float | None:
    """Seconds between two runs: numbers, timedeltas, celery schedules and crontabs."""
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    run_every = getattr(schedule, "run_every", None)
    if isinstance(run_every, timedelta):
        return run_every.total_seconds()
    remaining = getattr(schedule, "remaining_estimate", None)
    now = getattr(schedule, "now", None)
    if callable(remaining) and callable(now):
        # crontab and friends: remaining_estimate(last_run) is "next run after last_run,
        # minus now", so the gap between the next two runs is the difference of two calls.
        try:
            start = now()
            first = remaining(start)
            second = remaining(start + first + timedelta(seconds=1))
            # crontab resolution is a minute: drop the microseconds of the two calls.
            return float(round((second - first).total_seconds()))
        except Exception:
            return None
    return None


def read_schedule(app: Any) -> list[ScheduleEntry]:
    entries: list[ScheduleEntry] = []
    schedule = getattr(app.conf, "beat_schedule", None) or {}
    for entry, spec in schedule.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
            continue
        interval = interval_of(spec.get("schedule"))
        if interval is not None and interval > 0:
            entries.append(ScheduleEntry(str(entry), spec["task"], interval))
    return entries
