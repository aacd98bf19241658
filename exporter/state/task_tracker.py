"""A bounded map from task id to what later events of the task do not carry.

Only `task-sent` and `task-received` carry the task name (and only `task-sent` the queue);
`task-started`, `-succeeded`, `-failed`... carry the uuid alone. This map remembers the
name, queue and timestamps in between. It is bounded twice:

- in size: at ``max_tasks`` the least recently touched task is evicted;
- in age: tasks untouched for ``max_age`` seconds are evicted by ``expire()``.

Both evictions are counted, so a lossy configuration shows on /metrics.

A task's final event does not end its story: Celery 5.7 sends ``task-failed`` and then
``task-rejected`` for a rejected task, and events from different processes arrive out of
order. Finished tasks therefore move to a small "recently finished" map (bounded by
``max_finished``) that still answers lookups.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from exporter.labels import UNKNOWN


class TrackedTask:
    __slots__ = (
        "due_at",
        "name",
        "queue",
        "received_at",
        "received_by",
        "sent_at",
        "started_at",
        "started_by",
        "touched",
    )

    def __init__(self, touched: float) -> None:
        self.name: str | None = None
        self.queue: str | None = None
        self.sent_at: float | None = None
        self.received_at: float | None = None
        self.received_by: str | None = None  # the worker that received it
        # ETA/countdown as an epoch timestamp: the task is not "waiting" before it.
        self.due_at: float | None = None
        self.started_at: float | None = None
        self.started_by: str | None = None  # the worker running it
        self.touched = touched


class TaskTracker:
    def __init__(self, max_tasks: int, max_age_seconds: float, max_finished: int = 10_000) -> None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.max_tasks = max_tasks
        self.max_age_seconds = max_age_seconds
        self.max_finished = max_finished
        self._tasks: OrderedDict[str, TrackedTask] = OrderedDict()
        self._finished: OrderedDict[str, TrackedTask] = OrderedDict()
        self.evicted_by_size = 0
        self.evicted_by_age = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def touch(self, uuid: str, now: float) -> TrackedTask:
        """The task's record, created if new, marked as most recently used."""
        tasks = self._tasks
        task = tasks.get(uuid)
        if task is None:
            # A finished task delivered again (same id) is in flight once more.
            task = self._finished.pop(uuid, None) or TrackedTask(now)
            task.touched = now
            tasks[uuid] = task
            if len(tasks) > self.max_tasks:
                tasks.popitem(last=False)
                self.evicted_by_size += 1
        else:
            task.touched = now
            tasks.move_to_end(uuid)
        return task

    def get(self, uuid: str, now: float) -> TrackedTask | None:
        task = self._tasks.get(uuid)
        if task is not None:
            task.touched = now
            self._tasks.move_to_end(uuid)
            return task
        return self._finished.get(uuid)

    def sent_at(self, uuid: str) -> float | None:
        task = self._tasks.get(uuid)
        return None if task is None else task.sent_at

    def known(self, uuid: str) -> bool:
        """Whether any event of this task was applied (in flight or recently finished)."""
        return uuid in self._tasks or uuid in self._finished

    def finished(self, uuid: str) -> TrackedTask | None:
        """The record of a recently finished task, if this uuid is one."""
        return self._finished.get(uuid)

    def finish(self, uuid: str) -> TrackedTask | None:
        """The task reached a final event: stop counting it in flight, keep it for late events."""
        task = self._tasks.pop(uuid, None)
        if task is None:
            return self._finished.get(uuid)
        if self.max_finished > 0:
            finished = self._finished
            finished[uuid] = task
            if len(finished) > self.max_finished:
                finished.popitem(last=False)
        return task

    def running(
        self, live_workers: set[str], idle_since: dict[str, float]
    ) -> dict[str, tuple[int, float]]:
        """Per task name: (tasks running on live workers, start time of the oldest). O(n).

        A task started before its worker last reported no running task (or restarted) is not
        running, even if its final event was lost.
        """
        result: dict[str, tuple[int, float]] = {}
        for task in self._tasks.values():
            started = task.started_at
            host = task.started_by
            if started is None or host not in live_workers:
                continue
            idle = idle_since.get(host)
            if idle is not None and idle >= task.touched:
                continue
            name = task.name or UNKNOWN
            count, oldest = result.get(name, (0, started))
            result[name] = (count + 1, min(oldest, started))
        return result

    def reserved(
        self,
        live_workers: set[str],
        online_since: dict[str, float],
        queue_of_worker: Callable[[str], str | None],
    ) -> dict[str, int]:
        """Per queue: tasks a live worker received and has not started (Celery's "reserved":
        prefetched, or ETA/countdown held). O(n). A task received before its worker last
        came online is not counted: the broker gave it back when the old process went."""
        counts: dict[str, int] = {}
        for task in self._tasks.values():
            host = task.received_by
            if task.started_at is not None or host is None or host not in live_workers:
                continue
            since = online_since.get(host)
            if since is not None and task.touched < since:
                continue
            queue = task.queue or queue_of_worker(host) or UNKNOWN
            counts[queue] = counts.get(queue, 0) + 1
        return counts

    def expire(self, now: float) -> None:
        """Evict tasks untouched for longer than the maximum age."""
        deadline = now - self.max_age_seconds
        tasks = self._tasks
        evicted = 0
        # Records are ordered by last touch, so the stale ones are all at the front.
        while tasks:
            uuid, task = next(iter(tasks.items()))
            if task.touched >= deadline:
                break
            del tasks[uuid]
            evicted += 1
        self.evicted_by_age += evicted
