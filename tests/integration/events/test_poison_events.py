"""No single event can poison the numbers: hostile events published on a real Redis, read by
the real exporter process with its default flags (issue 20, one test per defect).

One exporter serves the whole module; each test uses names of its own and waits for a
marker event published after its hostile ones (events of one publisher arrive in order).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.settings import (
    DEFAULT_MAX_EXCEPTION_CLASSES,
    DEFAULT_MAX_QUEUE_NAMES,
    DEFAULT_MAX_WORKER_HOSTNAMES,
)
from tests.conftest import _REDIS_DBS
from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, label_values, total, value
from tests.support.publish import publish_raw_events
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for

Event = dict[str, Any]
SKIPPED = "celery_exporter_events_skipped_total"
DROPPED = "celery_exporter_dropped_label_values_total"


class Hostile:
    """The module's exporter and a way to publish raw event batches to its broker."""

    def __init__(self, broker_url: str, exporter: ExporterProcess) -> None:
        self.broker_url = broker_url
        self.exporter = exporter

    def publish(self, *batches: list[Any]) -> Samples:
        """Publish each batch as one ``task.multi`` message, then a marker; return the scrape
        once the marker has been counted (so everything before it has been applied)."""
        marker = f"marker-{uuid.uuid4().hex}"
        bodies = [(json.dumps(batch).encode(), "application/json") for batch in batches]
        bodies.append((json.dumps([received(marker, "marker.task", "marker@h")]).encode(),
                       "application/json"))  # fmt: skip
        publish_raw_events(self.broker_url, bodies)

        def marker_counted() -> Samples | None:
            samples = self.exporter.scrape()
            seen = total(samples, "celery_task_received_total", name="marker.task")
            return samples if seen >= self.markers + 1 else None

        samples = wait_for(marker_counted, 20, message=lambda: self.exporter.log()[-3000:])
        self.markers += 1
        return samples

    markers = 0


@pytest.fixture(scope="module")
def hostile(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    db = next(_REDIS_DBS)
    with redis_server.client(db) as client:
        client.flushdb()
    url = redis_server.url(db)
    exporter = ExporterProcess(url, tmp_path_factory.mktemp("poison"))
    exporter.start()
    try:
        yield Hostile(url, exporter)
    finally:
        exporter.stop()


def received(task_id: str, name: str, hostname: str, t: float | None = None) -> Event:
    return {"type": "task-received", "uuid": task_id, "name": name, "hostname": hostname,
            "timestamp": time.time() if t is None else t}  # fmt: skip


def lifecycle(task_id: str, name: str, queue: str, t: float) -> list[Event]:
    """Sent, received, started (0.5 s later), succeeded (runtime 0.25 s)."""
    return [
        {"type": "task-sent", "uuid": task_id, "name": name, "queue": queue,
         "hostname": "producer@h", "timestamp": t},
        received(task_id, name, "w@h", t),
        {"type": "task-started", "uuid": task_id, "hostname": "w@h", "timestamp": t + 0.5},
        {"type": "task-succeeded", "uuid": task_id, "hostname": "w@h", "runtime": 0.25,
         "timestamp": t + 0.75},
    ]  # fmt: skip


def assert_all_finite(samples: Samples) -> None:
    bad = {(n, tuple(sorted(ls))): v for (n, ls), v in samples.items() if not math.isfinite(v)}
    assert not bad


# -- defect 1: a huge integer timestamp no longer costs its batch ---------------------------------


def test_huge_integer_timestamp_costs_nothing_but_its_value(hostile: Hostile) -> None:
    t = float(int(time.time()))
    batch: list[Any] = [received("d1-bad", "d1.task", "w@h", 10**400)]
    for i in range(5):
        batch += lifecycle(f"d1-{i}", "d1.task", "d1q", t)
    samples = hostile.publish(batch)
    key = {"name": "d1.task", "queue_name": "d1q"}
    assert value(samples, "celery_task_sent_total", **key) == 5
    assert value(samples, "celery_task_succeeded_total", hostname="w@h", **key) == 5
    # The bad event still counts as received (its timestamp is ignored, not trusted).
    assert total(samples, "celery_task_received_total", name="d1.task") == 6
    assert value(samples, SKIPPED, reason="out_of_range") == 1
    assert value(samples, SKIPPED, reason="handler_error") is None
    assert_all_finite(samples)


# -- defects 2 and 3: histograms and lag stay finite ----------------------------------------------


def test_extreme_timestamps_and_runtimes_never_reach_a_histogram_or_the_lag(
    hostile: Hostile,
) -> None:
    before = value(hostile.exporter.scrape(), SKIPPED, reason="out_of_range") or 0
    t = float(int(time.time()))
    sent = {"type": "task-sent", "uuid": "d2-a", "name": "d2.task", "queue": "d2q",
            "hostname": "producer@h", "timestamp": -1e308}  # fmt: skip
    started = {"type": "task-started", "uuid": "d2-a", "hostname": "w@h", "timestamp": 1e308}
    huge_runtime = {"type": "task-succeeded", "uuid": "d2-a", "hostname": "w@h",
                    "runtime": 1e300, "timestamp": t}  # fmt: skip
    lag = received("d2-lag", "d2.task", "w@h", -1e308)
    samples = hostile.publish(
        [sent, started, huge_runtime, lag, *lifecycle("d2-b", "d2.task", "d2q", t)]
    )
    key = {"name": "d2.task", "queue_name": "d2q"}
    assert_all_finite(samples)
    # Both tasks counted; only the good one's durations observed (the bad one's wait is
    # measured between arrival times, which are close: not 1e308).
    assert value(samples, "celery_task_succeeded_total", hostname="w@h", **key) == 2
    assert value(samples, "celery_task_runtime_seconds_count", state="succeeded", **key) == 1
    assert value(samples, "celery_task_runtime_seconds_sum", state="succeeded", **key) == 0.25
    wait_sum = value(samples, "celery_task_queue_wait_seconds_sum", **key)
    assert wait_sum is not None and 0.5 <= wait_sum < 60
    assert value(samples, SKIPPED, reason="out_of_range") == before + 4
    lag_seconds = value(samples, "celery_exporter_event_lag_seconds")
    assert lag_seconds is not None and abs(lag_seconds) < 60


# -- defect 4: a heartbeat cannot make its worker immortal ----------------------------------------


def test_heartbeat_with_absurd_freq_does_not_keep_a_worker_up(hostile: Hostile) -> None:
    beat = {"type": "worker-heartbeat", "hostname": "immortal@h", "freq": 1e308,
            "active": 0, "processed": 0, "timestamp": time.time()}  # fmt: skip
    samples = hostile.publish([beat])
    assert value(samples, "celery_worker_up", hostname="immortal@h") == 1
    # The default interval (2 s) applies: down after 5 of them.
    assert value(samples, "celery_worker_heartbeat_interval_seconds", hostname="immortal@h") == 2
    wait_for(
        lambda: value(hostile.exporter.scrape(), "celery_worker_up", hostname="immortal@h") == 0,
        30,
        message="the worker stayed up",
    )


# -- defect 5: every label from the wire is capped ------------------------------------------------


def test_queue_names_hostnames_and_exception_classes_are_capped(hostile: Hostile) -> None:
    t = time.time()
    extra = 50
    queues = [
        {"type": "task-sent", "uuid": f"q-{i}", "name": "d5.task", "queue": f"flood-{i}",
         "hostname": "producer@h", "timestamp": t}
        for i in range(DEFAULT_MAX_QUEUE_NAMES + extra)
    ]  # fmt: skip
    beats = [
        {"type": "worker-heartbeat", "hostname": f"flood-{i}@h", "freq": 2.0, "timestamp": t}
        for i in range(DEFAULT_MAX_WORKER_HOSTNAMES + extra)
    ]
    failures = [
        {"type": "task-failed", "uuid": f"x-{i}", "hostname": "w@h",
         "exception": f"Flood{i}Error('x')", "timestamp": t}
        for i in range(DEFAULT_MAX_EXCEPTION_CLASSES + extra)
    ]  # fmt: skip
    samples = hostile.publish(queues, beats, failures)
    # Every event still counted: under (other) beyond the cap.
    assert total(samples, "celery_task_sent_total", name="d5.task") == len(queues)
    admitted = label_values(samples, "celery_task_sent_total", "queue_name") - {"(other)"}
    assert len(admitted) == DEFAULT_MAX_QUEUE_NAMES  # earlier tests' queues included
    folded = value(samples, "celery_task_sent_total", name="d5.task", queue_name="(other)")
    assert folded is not None and folded >= extra
    assert value(samples, DROPPED, label="queue_name", reason="over_limit") == folded
    hosts = label_values(samples, "celery_worker_up", "hostname")
    assert len(hosts) <= DEFAULT_MAX_WORKER_HOSTNAMES
    assert "(other)" not in hosts  # workers beyond the cap are not tracked at all
    assert value(samples, "celery_exporter_events_total", type="worker-heartbeat") >= len(beats)
    exceptions = label_values(samples, "celery_task_failed_total", "exception")
    assert len(exceptions) <= DEFAULT_MAX_EXCEPTION_CLASSES + 1
    assert total(samples, "celery_task_failed_total", exception="(other)") >= extra
    for label in ("hostname", "exception"):
        assert (value(samples, DROPPED, label=label, reason="over_limit") or 0) >= extra, label
    # The flooding workers go down after 10 s: a bounded number of log lines says so.
    wait_for(
        lambda: value(hostile.exporter.scrape(), "celery_workers_online") == 0,
        40,
        message="the flooding workers never went down",
    )
    # Meanwhile the queues were sampled (every 5 s): admitted names are, folded ones never.
    sampled = wait_for(
        lambda: (
            found
            if "flood-0" in (found := label_values(hostile.exporter.scrape(),
                                                   "celery_queue_messages", "queue_name"))
            else None
        ),
        20,
        message="the admitted queues were never sampled",
    )  # fmt: skip
    assert not {f"flood-{DEFAULT_MAX_QUEUE_NAMES + i}" for i in range(extra)} & sampled
    log = hostile.exporter.log()
    flood_lines = [line for line in log.splitlines() if "flood-" in line]
    assert len(flood_lines) <= 60, flood_lines[:10]


def test_a_custom_exception_repr_makes_one_series(
    redis_url: str,
    worker_factory: Callable[..., Any],
    producer_factory: Callable[..., Any],
    exporter_factory: Callable[..., ExporterProcess],
    tmp_path: Path,
) -> None:
    """A real task raising an exception whose ``__repr__`` differs each time (an order id)."""
    exporter = exporter_factory(redis_url)
    # Prefork: the traceback is formatted in the pool process and sent by the parent.
    worker_factory(redis_url, "reprs@h", pool="prefork").wait_ready()
    producer = producer_factory(redis_url)
    for i in range(5):
        producer.send("tests.repr_error", args=(i,))

    def failed() -> Samples | None:
        samples = exporter.scrape()
        done = total(samples, "celery_task_failed_total", name="tests.repr_error")
        return samples if done >= 5 else None

    samples = wait_for(failed, 60, message=lambda: exporter.log()[-3000:])
    assert {
        dict(labels)["exception"]: count
        for (name, labels), count in samples.items()
        if name == "celery_task_failed_total" and dict(labels)["name"] == "tests.repr_error"
    } == {"OrderFailed": 5}
