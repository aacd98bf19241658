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


def test_shed_releases_the_oldest_tasks_held_or_parked_down_to_the_bound() -> None:
    """Past max_held between two overdue passes, the oldest tasks go first, whether held or
    parked (waiting for their worker's queues), until the bound is met."""
    tracker = TaskTracker(1000, 3600)
    awaiting = {"new@h"}
    reorder = Reorder(tracker, window=2.0, max_held=3, awaits_worker=lambda host: host in awaiting)

    def received(uuid: str, host: str) -> dict[str, str]:
        return {"type": "task-received", "uuid": uuid, "hostname": host}

    events = {uuid: received(uuid, "new@h") for uuid in ("p1", "p2")}
    for at, uuid in enumerate(events, start=100):
        assert reorder.hold("task-received", uuid, events[uuid], float(at), "new@h")
    assert reorder.overdue(103.0) == [] and len(reorder) == 2  # both parked
    events.update({uuid: received(uuid, "new@h") for uuid in ("h1", "h2", "h3")})
    for at, uuid in enumerate(("h1", "h2", "h3"), start=104):
        assert reorder.hold("task-received", uuid, events[uuid], float(at), "new@h")
    assert len(reorder) == 5
    assert reorder.shed() == [events["p1"], events["p2"]]  # parked at 100 and 101: oldest
    assert len(reorder) == 3 and reorder.shed() == []
    assert reorder.hold("task-received", "h4", received("h4", "new@h"), 107.0, "new@h")
    assert reorder.shed() == [events["h1"]]


def test_held_events_keep_no_arguments_or_result() -> None:
    """Celery sends the reprs of a task's arguments and result (up to 1 KiB each); no
    handler reads them, so a held event does not keep them."""
    tracker = TaskTracker(1000, 3600)
    reorder = Reorder(tracker, window=2.0, awaits_worker=lambda host: True)
    big = "x" * 1024
    received = {"type": "task-received", "uuid": "a", "name": "app.add", "args": big,
                "kwargs": big, "hostname": "w@h", "timestamp": 100.0}  # fmt: skip
    succeeded = {"type": "task-succeeded", "uuid": "a", "result": big, "runtime": 0.5,
                 "hostname": "w@h", "timestamp": 100.5}  # fmt: skip
    assert reorder.hold("task-received", "a", received, 100.0, "w@h")
    assert reorder.hold("task-succeeded", "a", succeeded, 100.5, "w@h")
    assert reorder.release("a") == [
        {"type": "task-received", "uuid": "a", "name": "app.add", "hostname": "w@h",
         "timestamp": 100.0},
        {"type": "task-succeeded", "uuid": "a", "runtime": 0.5, "hostname": "w@h",
         "timestamp": 100.5},
    ]  # fmt: skip
