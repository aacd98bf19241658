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
The number of held tasks is bounded: past ``max_held`` the oldest is released at once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from exporter.state.task_tracker import TaskTracker

Event = dict[str, Any]
SENT_EVENTS_RECENT_SECONDS = 300.0


class Reorder:
    def __init__(self, tracker: TaskTracker, window: float, max_held: int = 10_000) -> None:
        self.tracker = tracker
        self.window = window
        self.max_held = max_held
        self.last_sent_at = float("-inf")
        # uuid -> (when the first event was held, the held events in arrival order)
        self._held: OrderedDict[str, tuple[float, list[Event]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, etype: str, uuid: str, event: Event, now: float) -> bool:
        """True when the event is held (the caller must not apply it now)."""
        if self.window <= 0:
            return False
        if etype == "task-sent":
            self.last_sent_at = now
            return False
        if self._held:  # usually empty: skip the lookup
            held = self._held.get(uuid)
            if held is not None:
                held[1].append(event)
                return True
        if etype == "task-received" and now - self.last_sent_at > SENT_EVENTS_RECENT_SECONDS:
            return False
        if self.tracker.known(uuid):
            return False
        self._held[uuid] = (now, [event])
        return True

    def release(self, uuid: str) -> list[Event]:
        """The events held for a task whose task-sent has just been applied."""
        held = self._held.pop(uuid, None)
        return [] if held is None else held[1]

    def overdue(self, now: float) -> list[Event]:
        """Events whose wait is over (or that no longer fit), oldest task first."""
        released: list[Event] = []
        deadline = now - self.window
        held = self._held
        while held:
            uuid, (since, events) = next(iter(held.items()))
            if since > deadline and len(held) <= self.max_held:
                break
            del held[uuid]
            released.extend(events)
        return released
