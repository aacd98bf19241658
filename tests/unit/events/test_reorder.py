"""The hold of task events for a new worker's queues (exporter/events/reorder.py); the queue
label under CPU contention with real workers: tests/integration/queues/test_queue_attribution.py.
"""

from __future__ import annotations

from exporter.events.reorder import WORKER_QUEUES_WAIT_SECONDS, Reorder
from exporter.state.task_tracker import TaskTracker


def test_reorder_waits_for_a_new_workers_answer_and_no_longer() -> None:
    """The hold in events/reorder.py, on a clock of its own: a new worker's task events wait
    past the window while its queues are being asked, go as soon as they are known, and
    never wait past WORKER_QUEUES_WAIT_SECONDS; a worker that answered is not waited for."""
    tracker = TaskTracker(1000, 3600)
    awaiting = {"new@h"}
    reorder = Reorder(tracker, window=2.0, awaits_worker=lambda host: host in awaiting)
    received = {"type": "task-received", "uuid": "a", "hostname": "new@h"}
    assert reorder.hold("task-received", "a", received, 100.0, "new@h")
    # No task-sent producers seen and a worker that already answered: nothing to wait for.
    other = {"type": "task-received", "uuid": "b", "hostname": "old@h"}
    assert not reorder.hold("task-received", "b", other, 100.0, "old@h")
    started = {"type": "task-started", "uuid": "a", "hostname": "new@h"}
    assert reorder.hold("task-started", "a", started, 101.0, "new@h")  # joins its task
    assert reorder.overdue(103.0) == [] and len(reorder) == 1  # past the window: parked
    assert reorder.overdue(110.0) == []
    awaiting.clear()  # the worker answered
    assert reorder.overdue(110.5) == [received, started] and len(reorder) == 0
    # A worker that never answers holds nothing past the cap.
    awaiting.add("mute@h")
    mute = {"type": "task-received", "uuid": "c", "hostname": "mute@h"}
    assert reorder.hold("task-received", "c", mute, 200.0, "mute@h")
    assert reorder.overdue(200.0 + WORKER_QUEUES_WAIT_SECONDS - 0.5) == []
    assert reorder.overdue(200.0 + WORKER_QUEUES_WAIT_SECONDS) == [mute]
