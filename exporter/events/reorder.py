"""Hold a task's worker-side events briefly until its ``task-sent`` arrives.

A producer publishes ``task-sent`` just after the task message, so a fast worker's
``task-received`` (or ``task-revoked`` for a task revoked before delivery) can arrive
first; counted at once, it would carry ``queue_name="(unknown)"`` (and, for revoked,
``name="(unknown)"``) for ever, because counters cannot be relabelled.

So, for a task id the exporter has never seen:
- ``task-received`` is held while producers are known to send ``task-sent`` (one was seen
  in the last ``SENT_EVENTS_RECENT_SECONDS``);
- events that carry no name (started, succeeded, failed, retried, rejected, revoked) are
  held in any case;
- later events of a held task join it, in arrival order.

The task's ``task-sent`` releases them right after itself; otherwise they are released,
as they are, after ``window`` seconds. Known tasks (the common case) pass straight through.
The number of held tasks is bounded: past ``max_held`` the oldest is released at once (the
dispatcher sheds as soon as a new task passes the bound, not only on the clock), and a
held event keeps only the fields the handlers read.

A worker that has just come online (or was just seen) has not said yet which queues it
consumes: the exporter asks it at once (control.py), and its answer is the only fact that
pins the queue of a task whose ``task-sent`` is late or never sent. Events of new tasks on
such a worker are therefore held (``task-received`` too, with or without ``task-sent``
producers) until its answer arrives, up to ``WORKER_QUEUES_WAIT_SECONDS``; an answer that
takes longer than ``window`` no longer loses the race (incident of issue 15: one
``task-received`` of 330 counted under ``(unknown)`` on a busy machine).
"""

from __future__ import annotations

from collections import OrderedDict

from exporter.events.stages import AwaitsWorker, Event
from exporter.state.task_tracker import TaskTracker

SENT_EVENTS_RECENT_SECONDS = 300.0
# How long a new worker's task events may wait for its active_queues answer (a few retries
# of the control thread's request, which backs off 1, 2, 4 s).
WORKER_QUEUES_WAIT_SECONDS = 15.0
Held = tuple[float, list[Event], str]  # (when first held, events in arrival order, worker)
# Fields of task events that no handler reads and that can be large (Celery sends the
# reprs of the arguments and of the result, each up to 1 KiB by default): not kept while
# an event is held, so a held task costs the same whatever its payload.
UNREAD_FIELDS = ("args", "kwargs", "result")


class Reorder:
    def __init__(
        self,
        tracker: TaskTracker,
        window: float,
        max_held: int = 10_000,
        awaits_worker: AwaitsWorker = lambda hostname: False,
    ) -> None:
        self.tracker = tracker
        self.window = window
        self.max_held = max_held
        # True while this worker's queues are being asked and not known yet.
        self.awaits_worker = awaits_worker
        self.last_sent_at = float("-inf")
        # uuid -> (when the first event was held, the held events in arrival order, worker)
        self._held: OrderedDict[str, Held] = OrderedDict()
        # Past the window, still waiting for their worker's queues (few, short-lived).
        self._parked: OrderedDict[str, Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held) + len(self._parked)

    def hold(self, etype: str, uuid: str, event: Event, now: float, hostname: str = "") -> bool:
        """True when the event is held (the caller must not apply it now)."""
        if self.window <= 0:
            return False
        if etype == "task-sent":
            self.last_sent_at = now
            return False
        if self._held or self._parked:  # usually empty: skip the lookups
            held = self._held.get(uuid) or self._parked.get(uuid)
            if held is not None:
                held[1].append(_slim(event))
                return True
        if (
            etype == "task-received"
            and now - self.last_sent_at > SENT_EVENTS_RECENT_SECONDS
            and not self.awaits_worker(hostname)
        ):
            return False
        if self.tracker.known(uuid):
            return False
        self._held[uuid] = (now, [_slim(event)], hostname)
        return True

    def shed(self) -> list[Event]:
        """Past ``max_held`` (between two ``overdue`` passes: a flood), the events of the
        oldest tasks, held or parked, until the bound is met again; constant time per task."""
        released: list[Event] = []
        held, parked = self._held, self._parked
        while len(held) + len(parked) > self.max_held:
            source = held
            if parked and (not held or _first(parked)[0] <= _first(held)[0]):
                source = parked
            _, (_, events, _) = source.popitem(last=False)
            released.extend(events)
        return released

    def release(self, uuid: str) -> list[Event]:
        """The events held for a task whose task-sent has just been applied."""
        held = self._held.pop(uuid, None) or self._parked.pop(uuid, None)
        return [] if held is None else held[1]

    def overdue(self, now: float) -> list[Event]:
        """Events whose wait is over (or that no longer fit), oldest task first."""
        released: list[Event] = []
        deadline = now - self.window
        worker_deadline = now - WORKER_QUEUES_WAIT_SECONDS
        held, parked = self._held, self._parked
        for uuid, (since, events, hostname) in list(parked.items()):
            if since <= worker_deadline or not self.awaits_worker(hostname):
                del parked[uuid]
                released.extend(events)
        while held:
            uuid, entry = next(iter(held.items()))
            since, events, hostname = entry
            if since > deadline and len(self) <= self.max_held:
                break
            del held[uuid]
            if (
                len(self) < self.max_held
                and since > worker_deadline
                and self.awaits_worker(hostname)
            ):
                parked[uuid] = entry
            else:
                released.extend(events)
        return released


def _slim(event: Event) -> Event:
    for field in UNREAD_FIELDS:
        event.pop(field, None)
    return event


def _first(entries: OrderedDict[str, Held]) -> Held:
    return next(iter(entries.values()))
