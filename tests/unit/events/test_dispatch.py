"""The event path from message body to /metrics text, fed with crafted event messages.

These use the real decode, dispatch, tracker, registry and exposition code; only the
broker is left out (the integration tests cover it). The clock is explicit so liveness
and ageing can be checked exactly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.daemon import Exporter
from exporter.labels import UNKNOWN
from exporter.settings import Settings
from tests.support.metrics import Samples, registry_samples, total, value


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_exporter(clock: Clock, **overrides: Any) -> Exporter:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", **overrides)
    return Exporter(settings, clock=clock)


def feed(exporter: Exporter, *events: Any, batch: bool = False) -> None:
    if batch:
        exporter.primary.dispatcher.on_message(json.dumps(list(events)), "application/json")
    else:
        for event in events:
            exporter.primary.dispatcher.on_message(json.dumps(event), "application/json")


def samples(exporter: Exporter) -> Samples:
    return registry_samples(exporter.registry)


def task_lifecycle(
    uuid: str,
    name: str,
    host: str,
    t: float,
    *,
    sent_queue: str | None,
    outcome: str = "succeeded",
    runtime: float = 0.5,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if sent_queue is not None:
        events.append(
            {
                "type": "task-sent",
                "uuid": uuid,
                "name": name,
                "queue": sent_queue,
                "hostname": "gen123@producer",
                "timestamp": t,
            }
        )
    events.append(
        {
            "type": "task-received",
            "uuid": uuid,
            "name": name,
            "hostname": host,
            "timestamp": t + 1.0,
        }
    )
    events.append({"type": "task-started", "uuid": uuid, "hostname": host, "timestamp": t + 2.0})
    if outcome == "succeeded":
        events.append(
            {
                "type": "task-succeeded",
                "uuid": uuid,
                "hostname": host,
                "runtime": runtime,
                "timestamp": t + 2.0 + runtime,
            }
        )
    else:
        events.append(
            {
                "type": "task-failed",
                "uuid": uuid,
                "hostname": host,
                "exception": "KeyError('missing')",
                "timestamp": t + 2.0 + runtime,
            }
        )
    return events


def test_counts_names_queues_and_histograms_exactly(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    for i in range(5):
        feed(exp, *task_lifecycle(f"ok-{i}", "app.add", "w1@h", t, sent_queue="math"), batch=True)
    for i in range(3):
        feed(
            exp,
            *task_lifecycle(
                f"bad-{i}", "app.add", "w1@h", t, sent_queue="math", outcome="failed", runtime=4.0
            ),
        )
    s = samples(exp)
    labels = {"name": "app.add", "hostname": "w1@h", "queue_name": "math"}
    assert value(s, "celery_task_sent_total", name="app.add", queue_name="math") == 8
    assert value(s, "celery_task_received_total", **labels) == 8
    assert value(s, "celery_task_started_total", **labels) == 8
    assert value(s, "celery_task_succeeded_total", **labels) == 5
    assert value(s, "celery_task_failed_total", exception="KeyError", **labels) == 3
    ok = {"name": "app.add", "queue_name": "math", "state": "succeeded"}
    bad = {"name": "app.add", "queue_name": "math", "state": "failed"}
    assert value(s, "celery_task_runtime_seconds_count", **ok) == 5
    assert value(s, "celery_task_runtime_seconds_sum", **ok) == pytest.approx(2.5)
    assert value(s, "celery_task_runtime_seconds_bucket", le="0.5", **ok) == 5
    assert value(s, "celery_task_runtime_seconds_bucket", le="0.25", **ok) == 0
    # failed runtime = failed timestamp - started timestamp (same worker clock)
    assert value(s, "celery_task_runtime_seconds_sum", **bad) == pytest.approx(12.0)
    assert value(s, "celery_task_runtime_seconds_bucket", le="2.5", **bad) == 0
    assert value(s, "celery_task_runtime_seconds_bucket", le="5.0", **bad) == 3
    # queue wait: started (t+2) - sent (t) = 2 s each
    assert value(s, "celery_task_queue_wait_seconds_count", name="app.add", queue_name="math") == 8
    assert value(
        s, "celery_task_queue_wait_seconds_sum", name="app.add", queue_name="math"
    ) == pytest.approx(16.0)
    assert value(s, "celery_exporter_tracked_tasks") == 0


def test_without_task_sent_the_queue_is_unknown_not_celery(clock: Clock) -> None:
    exp = make_exporter(clock)
    feed(exp, *task_lifecycle("u1", "app.add", "w1@h", clock.now, sent_queue=None), batch=True)
    s = samples(exp)
    assert (
        value(s, "celery_task_succeeded_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert total(s, "celery_task_succeeded_total", queue_name="celery") == 0
    # queue wait from received (t+1) to started (t+2)
    assert value(
        s, "celery_task_queue_wait_seconds_sum", name="app.add", queue_name=UNKNOWN
    ) == pytest.approx(1.0)


def test_single_queue_worker_supplies_the_queue(clock: Clock) -> None:
    exp = make_exporter(clock)
    exp.primary.worker_queues.set("w2@h", ("ml_processing",))
    feed(exp, *task_lifecycle("u1", "ml.detect", "w2@h", clock.now, sent_queue=None))
    s = samples(exp)
    assert (
        value(
            s,
            "celery_task_succeeded_total",
            name="ml.detect",
            hostname="w2@h",
            queue_name="ml_processing",
        )
        == 1
    )


def test_sent_events_from_many_producers_do_not_make_hostname_series(clock: Clock) -> None:
    exp = make_exporter(clock)
    for pid in range(50):
        feed(
            exp,
            {
                "type": "task-sent",
                "uuid": f"u{pid}",
                "name": "app.add",
                "queue": "celery",
                "hostname": f"gen{pid}@web",
                "timestamp": clock.now,
            },
        )
    s = samples(exp)
    sent = [k for k in s if k[0] == "celery_task_sent_total"]
    assert sent == [
        ("celery_task_sent_total", frozenset({("name", "app.add"), ("queue_name", "celery")}))
    ]
    assert s[sent[0]] == 50


def test_eta_countdown_is_not_counted_as_queue_wait(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    eta = "2023-11-14T22:14:20+00:00"  # t + 60
    assert t == 1_700_000_000.0
    feed(
        exp,
        {
            "type": "task-sent",
            "uuid": "e1",
            "name": "app.later",
            "queue": "celery",
            "eta": eta,
            "timestamp": t,
        },
        {
            "type": "task-received",
            "uuid": "e1",
            "name": "app.later",
            "hostname": "w1@h",
            "eta": eta,
            "timestamp": t + 0.1,
        },
        {"type": "task-started", "uuid": "e1", "hostname": "w1@h", "timestamp": t + 60.5},
    )
    s = samples(exp)
    assert value(
        s, "celery_task_queue_wait_seconds_sum", name="app.later", queue_name="celery"
    ) == pytest.approx(0.5)


def test_retry_counts_every_delivery_and_survives_out_of_order_events(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    host = "w1@h"
    feed(
        exp,
        {"type": "task-sent", "uuid": "r1", "name": "app.flaky", "queue": "io", "timestamp": t},
        {
            "type": "task-received",
            "uuid": "r1",
            "name": "app.flaky",
            "hostname": host,
            "timestamp": t + 0.1,
        },
        {"type": "task-started", "uuid": "r1", "hostname": host, "timestamp": t + 0.2},
        # the retry's new task-sent arrives before the worker's task-retried
        {
            "type": "task-sent",
            "uuid": "r1",
            "name": "app.flaky",
            "queue": "io",
            "retries": 1,
            "timestamp": t + 0.3,
        },
        {"type": "task-retried", "uuid": "r1", "hostname": host, "timestamp": t + 0.3},
        {
            "type": "task-received",
            "uuid": "r1",
            "name": "app.flaky",
            "hostname": host,
            "retries": 1,
            "timestamp": t + 0.4,
        },
        {"type": "task-started", "uuid": "r1", "hostname": host, "timestamp": t + 0.5},
        {
            "type": "task-succeeded",
            "uuid": "r1",
            "hostname": host,
            "runtime": 0.1,
            "timestamp": t + 0.6,
        },
    )
    s = samples(exp)
    labels = {"name": "app.flaky", "hostname": host, "queue_name": "io"}
    assert value(s, "celery_task_sent_total", name="app.flaky", queue_name="io") == 2
    assert value(s, "celery_task_received_total", **labels) == 2
    assert value(s, "celery_task_started_total", **labels) == 2
    assert value(s, "celery_task_retried_total", **labels) == 1
    assert value(s, "celery_task_succeeded_total", **labels) == 1
    assert value(s, "celery_exporter_tracked_tasks") == 0


def test_revoked_before_delivery_and_rejected(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    feed(
        exp,
        {"type": "task-sent", "uuid": "v1", "name": "app.slow", "queue": "q", "timestamp": t},
        {
            "type": "task-revoked",
            "uuid": "v1",
            "hostname": "w1@h",
            "terminated": False,
            "expired": False,
            "timestamp": t + 1,
        },
        # without task-sent a revoked task's name is unknown
        {"type": "task-revoked", "uuid": "v2", "hostname": "w1@h", "timestamp": t + 1},
        {
            "type": "task-received",
            "uuid": "j1",
            "name": "app.bad",
            "hostname": "w1@h",
            "timestamp": t,
        },
        {
            "type": "task-rejected",
            "uuid": "j1",
            "hostname": "w1@h",
            "requeue": False,
            "timestamp": t + 1,
        },
    )
    # v2 and j1 were never announced by task-sent: their events wait out the reorder window.
    assert value(samples(exp), "celery_exporter_held_tasks") == 2
    clock.now += 2.5
    exp.tick()
    s = samples(exp)
    assert value(s, "celery_exporter_held_tasks") == 0
    assert (
        value(s, "celery_task_revoked_total", name="app.slow", hostname="w1@h", queue_name="q") == 1
    )
    assert (
        value(s, "celery_task_revoked_total", name=UNKNOWN, hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert (
        value(s, "celery_task_rejected_total", name="app.bad", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )


def test_tracker_is_bounded_by_size_and_age_and_counts_evictions(clock: Clock) -> None:
    exp = make_exporter(clock, max_tracked_tasks=10, tracked_task_max_age=60.0)
    for i in range(15):
        feed(
            exp,
            {
                "type": "task-received",
                "uuid": f"s{i}",
                "name": "app.x",
                "hostname": "w1@h",
                "timestamp": clock.now,
            },
        )
    exp.tick()
    s = samples(exp)
    assert value(s, "celery_exporter_tracked_tasks") == 10
    assert value(s, "celery_exporter_tracked_task_evictions_total", reason="size") == 5
    # an evicted task's later events are still counted, with name (unknown)
    feed(exp, {"type": "task-succeeded", "uuid": "s0", "hostname": "w1@h", "runtime": 1.0})
    # the remaining ten age out
    clock.now += 61
    exp.tick()
    s = samples(exp)
    assert value(s, "celery_exporter_tracked_tasks") == 0
    assert value(s, "celery_exporter_tracked_task_evictions_total", reason="age") == 10
    assert (
        value(s, "celery_task_succeeded_total", name=UNKNOWN, hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )


def test_malformed_and_unknown_events_are_counted_and_skipped(clock: Clock) -> None:
    exp = make_exporter(clock)
    d = exp.primary.dispatcher
    d.on_message(b"\x00not json", "application/json")
    d.on_message(b'"just a string"', "application/json")
    d.on_message(b"{}", "application/x-python-serialize")
    feed(
        exp,
        [1, 2],
        {"no": "type"},
        {"type": "task-custom-progress", "uuid": "x"},
        {"type": "task-started", "uuid": 42},
        {"type": "task-started"},
        {"type": "worker-heartbeat", "hostname": "w1@h", "freq": "fast", "active": "x"},
        batch=True,
    )
    # a valid event after all that is still counted
    feed(exp, *task_lifecycle("ok", "app.add", "w1@h", clock.now, sent_queue="q"))
    s = samples(exp)
    skipped = {
        dict(ls)["reason"]: v
        for (n, ls), v in s.items()
        if n == "celery_exporter_events_skipped_total"
    }
    assert skipped == {
        "not_json": 1,
        "not_object": 2,
        "content_type": 1,
        "missing_type": 1,
        "unknown_type": 1,
        "bad_uuid": 2,
    }
    assert (
        value(s, "celery_task_succeeded_total", name="app.add", hostname="w1@h", queue_name="q")
        == 1
    )
    # the heartbeat with wrong field types still proves the worker alive, with defaults
    assert value(s, "celery_worker_up", hostname="w1@h") == 1
    assert value(s, "celery_worker_heartbeat_interval_seconds", hostname="w1@h") == 2.0


def test_huge_and_hostile_label_values_are_bounded(clock: Clock) -> None:
    exp = make_exporter(clock)
    feed(
        exp,
        {
            "type": "task-received",
            "uuid": "h1",
            "name": "n" * 1_000_000,
            "hostname": "w\ud800\n@h",
            "timestamp": clock.now,
        },
    )
    text_families = samples(exp)
    names = [dict(ls)["name"] for (n, ls) in text_families if n == "celery_task_received_total"]
    assert len(names) == 1 and len(names[0]) == 200
    hosts = [dict(ls)["hostname"] for (n, ls) in text_families if n == "celery_task_received_total"]
    assert hosts == ["w??@h"]


def test_worker_liveness_on_the_clock(clock: Clock) -> None:
    exp = make_exporter(clock, worker_timeout_heartbeats=5.0, worker_purge_after=900.0)
    feed(exp, {"type": "worker-online", "hostname": "w1@h", "freq": 2.0, "timestamp": clock.now})
    feed(
        exp,
        {
            "type": "worker-heartbeat",
            "hostname": "w1@h",
            "freq": 2.0,
            "active": 3,
            "processed": 10,
            "timestamp": clock.now,
        },
    )
    s = samples(exp)
    assert value(s, "celery_worker_up", hostname="w1@h") == 1
    assert value(s, "celery_worker_active_tasks", hostname="w1@h") == 3
    assert value(s, "celery_worker_processed_tasks_total", hostname="w1@h") == 10
    assert value(s, "celery_worker_online_total", hostname="w1@h") == 1
    assert value(s, "celery_workers_online") == 1
    assert value(s, "celery_worker_last_heartbeat_timestamp_seconds", hostname="w1@h") == (
        clock.now
    )
    clock.now += 10.0  # exactly 5 intervals: not yet overdue
    exp.tick()
    assert value(samples(exp), "celery_worker_up", hostname="w1@h") == 1
    clock.now += 0.5
    exp.tick()
    s = samples(exp)
    assert value(s, "celery_worker_up", hostname="w1@h") == 0
    assert value(s, "celery_worker_active_tasks", hostname="w1@h") == 0
    assert value(s, "celery_workers_online") == 0
    clock.now += 899.0  # still within the purge time: series stay, at 0
    exp.tick()
    assert value(samples(exp), "celery_worker_up", hostname="w1@h") == 0
    clock.now += 1.0
    exp.tick()
    assert value(samples(exp), "celery_worker_up", hostname="w1@h") is None


def test_worker_advertised_interval_decides_overdue(clock: Clock) -> None:
    exp = make_exporter(clock, worker_timeout_heartbeats=5.0)
    feed(exp, {"type": "worker-heartbeat", "hostname": "slow@h", "freq": 30.0})
    clock.now += 120.0
    exp.tick()
    assert value(samples(exp), "celery_worker_up", hostname="slow@h") == 1
    clock.now += 31.0
    exp.tick()
    assert value(samples(exp), "celery_worker_up", hostname="slow@h") == 0


def test_offline_event_marks_down_and_restarts_count(clock: Clock) -> None:
    exp = make_exporter(clock)
    for _ in range(3):
        feed(exp, {"type": "worker-online", "hostname": "w1@h", "freq": 2.0})
        feed(exp, {"type": "worker-offline", "hostname": "w1@h"})
    s = samples(exp)
    assert value(s, "celery_worker_up", hostname="w1@h") == 0
    assert value(s, "celery_worker_online_total", hostname="w1@h") == 3
    assert value(s, "celery_worker_offline_total", hostname="w1@h") == 3
    assert value(s, "celery_worker_starts_total") == 3


def test_worker_without_task_events_is_detected(clock: Clock) -> None:
    exp = make_exporter(clock)
    hb = {"type": "worker-heartbeat", "hostname": "quiet@h", "freq": 2.0, "active": 0}
    feed(exp, {**hb, "processed": 0})
    feed(exp, {**hb, "processed": 0, "type": "worker-heartbeat", "hostname": "loud@h"})
    assert value(samples(exp), "celery_worker_task_events_enabled", hostname="quiet@h") is None
    feed(exp, {**hb, "processed": 4})
    feed(exp, {**hb, "hostname": "loud@h", "processed": 4})
    feed(exp, *task_lifecycle("l1", "app.add", "loud@h", clock.now, sent_queue="q"))
    clock.now += 14.0  # batched task events may lag the heartbeat: grace period
    exp.tick()
    s = samples(exp)
    assert value(s, "celery_worker_task_events_enabled", hostname="quiet@h") is None
    assert value(s, "celery_worker_task_events_enabled", hostname="loud@h") == 1
    clock.now += 1.5
    feed(exp, {**hb, "processed": 5})
    exp.tick()
    assert value(samples(exp), "celery_worker_task_events_enabled", hostname="quiet@h") == 0


def test_late_events_after_the_final_one_keep_the_name(clock: Clock) -> None:
    # Celery 5.7 sends task-failed, then task-rejected, for Reject(requeue=False).
    exp = make_exporter(clock)
    t = clock.now
    feed(
        exp,
        {
            "type": "task-received",
            "uuid": "j1",
            "name": "app.bad",
            "hostname": "w1@h",
            "timestamp": t,
        },
        {"type": "task-started", "uuid": "j1", "hostname": "w1@h", "timestamp": t},
        {
            "type": "task-failed",
            "uuid": "j1",
            "hostname": "w1@h",
            "exception": "reject requeue=False: no thanks",
            "timestamp": t + 1,
        },
        {
            "type": "task-rejected",
            "uuid": "j1",
            "hostname": "w1@h",
            "requeue": False,
            "timestamp": t + 1,
        },
    )
    s = samples(exp)
    assert (
        value(
            s,
            "celery_task_failed_total",
            name="app.bad",
            hostname="w1@h",
            queue_name=UNKNOWN,
            exception="Reject",
        )
        == 1
    )
    assert (
        value(s, "celery_task_rejected_total", name="app.bad", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert value(s, "celery_exporter_tracked_tasks") == 0


def test_task_sent_arriving_after_the_task_finished_is_not_left_in_flight(clock: Clock) -> None:
    exp = make_exporter(clock)
    events = task_lifecycle("late", "app.add", "w1@h", clock.now, sent_queue="q")
    sent, rest = events[0], events[1:]
    feed(exp, *rest, sent)
    s = samples(exp)
    assert value(s, "celery_task_sent_total", name="app.add", queue_name="q") == 1
    assert (
        value(s, "celery_task_succeeded_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert value(s, "celery_exporter_tracked_tasks") == 0


def test_worker_events_that_outrun_task_sent_wait_for_it(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    host = "w1@h"
    # Producers send task-sent (seen once), so unknown tasks' events wait for theirs.
    feed(exp, *task_lifecycle("first", "app.add", host, t, sent_queue="math"))
    fast = task_lifecycle("fast", "app.add", host, t, sent_queue="math")
    feed(exp, *fast[1:])  # received, started, succeeded before their task-sent
    assert value(samples(exp), "celery_exporter_held_tasks") == 1
    clock.now += 0.2
    feed(exp, fast[0])
    # revoked before delivery: task-revoked first, then its task-sent
    feed(exp, {"type": "task-revoked", "uuid": "gone", "hostname": host, "timestamp": t})
    feed(
        exp,
        {"type": "task-sent", "uuid": "gone", "name": "app.slow", "queue": "math", "timestamp": t},
    )
    s = samples(exp)
    labels = {"name": "app.add", "hostname": host, "queue_name": "math"}
    assert value(s, "celery_task_received_total", **labels) == 2
    assert value(s, "celery_task_succeeded_total", **labels) == 2
    assert value(s, "celery_task_queue_wait_seconds_count", name="app.add", queue_name="math") == 2
    assert (
        value(s, "celery_task_revoked_total", name="app.slow", hostname=host, queue_name="math")
        == 1
    )
    assert value(s, "celery_exporter_held_tasks") == 0
    assert value(s, "celery_exporter_tracked_tasks") == 0
    assert not [k for k in s if UNKNOWN in dict(k[1]).values()]


def test_held_events_are_released_after_the_window_without_task_sent(clock: Clock) -> None:
    exp = make_exporter(clock, reorder_window=2.0)
    feed(
        exp,
        {"type": "task-sent", "uuid": "x", "name": "app.x", "queue": "q", "timestamp": clock.now},
    )
    orphan = task_lifecycle("orphan", "app.add", "w1@h", clock.now, sent_queue=None)
    feed(exp, *orphan)
    clock.now += 1.9
    exp.tick()
    s = samples(exp)
    assert (
        value(s, "celery_task_succeeded_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        is None
    )
    clock.now += 0.2
    exp.tick()
    s = samples(exp)
    assert (
        value(s, "celery_task_received_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert (
        value(s, "celery_task_succeeded_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert value(s, "celery_exporter_held_tasks") == 0


def test_received_is_not_held_when_producers_send_no_task_sent(clock: Clock) -> None:
    exp = make_exporter(clock)
    feed(exp, *task_lifecycle("u", "app.add", "w1@h", clock.now, sent_queue=None))
    s = samples(exp)
    assert (
        value(s, "celery_task_succeeded_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert value(s, "celery_exporter_held_tasks") == 0


def test_decoding_accepts_what_celerys_encoder_can_produce() -> None:
    from exporter.events.decode import decode_events

    # NaN and lone surrogates: valid for Python's json (Celery's encoder), not for orjson.
    events = decode_events(b'[{"type": "x", "v": NaN, "s": "\\ud800"}]', "application/json")
    assert events[0]["type"] == "x" and events[0]["s"] == "\ud800"
    assert decode_events('{"type": "y"}', None) == [{"type": "y"}]


def test_running_tasks_per_name_on_live_workers(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    for host in ("w1@h", "w2@h"):
        feed(exp, {"type": "worker-heartbeat", "hostname": host, "freq": 2.0, "active": 1})
    for uuid, host, started in (
        ("a", "w1@h", t - 300),
        ("b", "w1@h", t - 100),
        ("c", "w2@h", t - 900),
    ):
        feed(
            exp,
            {
                "type": "task-received",
                "uuid": uuid,
                "name": "app.long",
                "hostname": host,
                "timestamp": started,
            },
            {"type": "task-started", "uuid": uuid, "hostname": host, "timestamp": started},
        )
    for _ in range(5):
        exp.tick()
    s = samples(exp)
    assert value(s, "celery_task_running", name="app.long") == 3
    assert (
        value(s, "celery_task_oldest_running_start_timestamp_seconds", name="app.long") == t - 900
    )
    # w2 dies without a word: its task no longer counts as running once it is down.
    clock.now += 10.0
    feed(exp, {"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "active": 2})
    feed(exp, {"type": "task-succeeded", "uuid": "a", "hostname": "w1@h", "runtime": 1.0})
    clock.now += 0.5
    for _ in range(5):
        exp.tick()
    s = samples(exp)
    assert value(s, "celery_worker_up", hostname="w2@h") == 0
    assert value(s, "celery_task_running", name="app.long") == 1
    assert (
        value(s, "celery_task_oldest_running_start_timestamp_seconds", name="app.long") == t - 100
    )


def test_arrival_rhythm_and_senders_show_a_second_beat(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now

    def sent(uuid: str, at: float, sender: str) -> dict[str, Any]:
        return {
            "type": "task-sent",
            "uuid": uuid,
            "name": "beat.tick",
            "queue": "celery",
            "hostname": sender,
            "retries": 0,
            "timestamp": at,
        }

    for i in range(5):
        feed(exp, sent(f"a{i}", t + 60 * i, "gen11@beat-1"))
    s = samples(exp)
    assert value(s, "celery_task_last_arrival_timestamp_seconds", name="beat.tick") == t + 240
    assert value(s, "celery_task_arrival_interval_seconds", name="beat.tick") == 60
    assert value(s, "celery_task_senders", name="beat.tick") == 1
    # A second beat starts, 30 s out of phase: arrivals every 30 s from two senders.
    for i in range(5, 20):
        feed(
            exp,
            sent(f"a{i}", t + 60 * i, "gen11@beat-1"),
            sent(f"b{i}", t + 60 * i + 30, "gen22@beat-2"),
        )
    s = samples(exp)
    assert value(s, "celery_task_arrival_interval_seconds", name="beat.tick") == 30
    assert value(s, "celery_task_senders", name="beat.tick") == 2
    # A retry is not an arrival.
    feed(exp, {**sent("a19", t + 5000, "gen33@worker"), "retries": 1})
    s = samples(exp)
    assert value(s, "celery_task_last_arrival_timestamp_seconds", name="beat.tick") == (
        t + 60 * 19 + 30
    )


def test_only_arrivals_that_keep_time_are_regular(clock: Clock) -> None:
    """celery_task_arrival_regular: beat's rhythm is regular once learned (and stays so
    through one missed arrival); Poisson traffic and a burst from one producer are not."""
    import random

    exp = make_exporter(clock)
    t = clock.now
    rng = random.Random(14)

    def sent(name: str, uuid: str, at: float) -> dict[str, Any]:
        return {"type": "task-sent", "uuid": uuid, "name": name, "queue": "celery",
                "hostname": "gen1@app", "retries": 0, "timestamp": at}  # fmt: skip

    # Beat: every 60 s, its few-millisecond jitter; regular from the 10th interval on.
    for i in range(10):
        feed(exp, sent("beat.tick", f"b{i}", t + 60 * i + rng.uniform(0, 0.005)))
    assert value(samples(exp), "celery_task_arrival_regular", name="beat.tick") == 0
    feed(exp, sent("beat.tick", "b10", t + 600))
    assert value(samples(exp), "celery_task_arrival_regular", name="beat.tick") == 1
    # One run missed (an exporter outage): a single outlier among 16.
    feed(exp, sent("beat.tick", "b12", t + 720))
    assert value(samples(exp), "celery_task_arrival_regular", name="beat.tick") == 1

    # One producer, Poisson arrivals (mean 5 s): never regular.
    at = t
    for i in range(200):
        at += rng.expovariate(0.2)
        feed(exp, sent("web.job", f"w{i}", at))
        if i >= 10:
            assert value(samples(exp), "celery_task_arrival_regular", name="web.job") == 0, i
    # A burst sent in a loop: evenly spaced, but milliseconds apart.
    for i in range(20):
        feed(exp, sent("web.burst", f"x{i}", t + 0.002 * i))
    s = samples(exp)
    assert value(s, "celery_task_arrival_regular", name="web.burst") == 0
    burst_interval = value(s, "celery_task_arrival_interval_seconds", name="web.burst")
    assert burst_interval == pytest.approx(0.002, rel=1e-3)


def test_arrivals_without_task_sent_come_from_first_delivery(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    for i in range(3):
        feed(
            exp,
            {
                "type": "task-received",
                "uuid": f"r{i}",
                "name": "app.poll",
                "hostname": "w1@h",
                "retries": 0,
                "timestamp": t + 10 * i,
            },
        )
    s = samples(exp)
    assert value(s, "celery_task_arrival_interval_seconds", name="app.poll") == 10
    assert value(s, "celery_task_senders", name="app.poll") is None


def test_beat_schedule_intervals() -> None:
    from datetime import timedelta

    from celery import Celery
    from celery.schedules import crontab, schedule

    from exporter.beat_schedule import read_schedule

    app = Celery("sched", set_as_current=False)
    app.conf.beat_schedule = {
        "every-10s": {"task": "app.a", "schedule": 10.0},
        "every-2m": {"task": "app.b", "schedule": timedelta(minutes=2)},
        "every-42s": {"task": "app.c", "schedule": schedule(timedelta(seconds=42))},
        "five-minutes": {"task": "app.d", "schedule": crontab(minute="*/5")},
        "nightly": {"task": "app.e", "schedule": crontab(minute=30, hour=3)},
        "broken": {"schedule": 5},
    }
    got = {(e.entry, e.task): e.interval_seconds for e in read_schedule(app)}
    assert got == {
        ("every-10s", "app.a"): 10.0,
        ("every-2m", "app.b"): 120.0,
        ("every-42s", "app.c"): 42.0,
        ("five-minutes", "app.d"): 300.0,
        ("nightly", "app.e"): 86400.0,
    }


def test_tasks_whose_final_event_was_lost_stop_counting_as_running(clock: Clock) -> None:
    exp = make_exporter(clock)
    t = clock.now
    feed(exp, {"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "active": 1})
    feed(
        exp,
        {
            "type": "task-received",
            "uuid": "lost",
            "name": "app.long",
            "hostname": "w1@h",
            "timestamp": t,
        },
        {"type": "task-started", "uuid": "lost", "hostname": "w1@h", "timestamp": t},
    )
    for _ in range(5):
        exp.tick()
    assert value(samples(exp), "celery_task_running", name="app.long") == 1
    # Its task-succeeded was lost (a reconnect); the worker then reports nothing running.
    clock.now += 2.0
    feed(exp, {"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "active": 0})
    for _ in range(5):
        exp.tick()
    assert value(samples(exp), "celery_task_running", name="app.long") is None


def test_forgotten_worker_takes_its_task_series_along(clock: Clock) -> None:
    exp = make_exporter(clock, worker_purge_after=60.0)
    feed(exp, {"type": "worker-heartbeat", "hostname": "pod-abc@h", "freq": 2.0})
    feed(exp, *task_lifecycle("u", "app.add", "pod-abc@h", clock.now, sent_queue=None))
    assert (
        value(
            samples(exp),
            "celery_task_succeeded_total",
            name="app.add",
            hostname="pod-abc@h",
            queue_name=UNKNOWN,
        )
        == 1
    )
    clock.now += 11.0
    exp.tick()  # down
    clock.now += 60.0
    exp.tick()  # forgotten
    s = samples(exp)
    assert value(s, "celery_worker_up", hostname="pod-abc@h") is None
    assert not [k for k in s if dict(k[1]).get("hostname") == "pod-abc@h"]


def test_offline_from_an_unknown_worker_is_forgotten_in_time(clock: Clock) -> None:
    exp = make_exporter(clock, worker_purge_after=60.0)
    feed(exp, {"type": "worker-offline", "hostname": "ghost@h"})
    assert value(samples(exp), "celery_worker_up", hostname="ghost@h") == 0
    clock.now += 61.0
    exp.tick()
    assert value(samples(exp), "celery_worker_up", hostname="ghost@h") is None


def test_deeply_nested_and_infinite_values_are_skipped_not_fatal(clock: Clock) -> None:
    exp = make_exporter(clock)
    exp.primary.dispatcher.on_message(b"[" * 200_000, "application/json")
    feed(exp, {"type": "task-received", "uuid": "i", "name": "app.inf", "hostname": "w1@h"})
    exp.primary.dispatcher.on_message(
        b'{"type": "task-succeeded", "uuid": "i", "hostname": "w1@h", "runtime": Infinity}',
        "application/json",
    )
    s = samples(exp)
    assert value(s, "celery_exporter_events_skipped_total", reason="not_json") == 1
    assert (
        value(s, "celery_task_succeeded_total", name="app.inf", hostname="w1@h", queue_name=UNKNOWN)
        == 1
    )
    assert (
        value(
            s,
            "celery_task_runtime_seconds_count",
            name="app.inf",
            queue_name=UNKNOWN,
            state="succeeded",
        )
        is None
    )


def test_late_task_sent_keeps_the_start_and_reserved_counts_follow() -> None:
    """A first delivery's task-sent arriving after its task-started (producers publish it
    after the message) must not erase the start: the task is running, not reserved; a
    task received and not started is reserved on its worker's only queue."""
    clock = Clock()
    exp = make_exporter(clock)
    exp.primary.worker_queues.set("w@h", ("jobs",))
    t = clock.now
    feed(exp, {"type": "worker-online", "hostname": "w@h", "freq": 2.0, "active": 1})
    clock.now += 0.5
    feed(
        exp,
        {"type": "task-received", "uuid": "a", "name": "app.t", "hostname": "w@h", "timestamp": t},
        {"type": "task-started", "uuid": "a", "hostname": "w@h", "timestamp": t},
        {"type": "task-received", "uuid": "b", "name": "app.t", "hostname": "w@h", "timestamp": t},
        {"type": "task-sent", "uuid": "a", "name": "app.t", "queue": "jobs", "timestamp": t},
    )
    clock.now += 1.0
    for _ in range(5):
        exp.tick()
    s = samples(exp)
    assert value(s, "celery_task_running", name="app.t") == 1
    assert value(s, "celery_queue_worker_reserved_tasks", queue_name="jobs") == 1


def test_held_tasks_never_pass_the_bound_between_two_ticks(clock: Clock) -> None:
    """A flood of new tasks without their task-sent, faster than the clock's housekeeping:
    the oldest held task is released (and counted) as soon as a new one passes the bound,
    so held events never hold more than max_held tasks' memory."""
    exp = make_exporter(clock, reorder_window=2.0)
    reorder = exp.primary.dispatcher.reorder
    reorder.max_held = 50
    feed(exp, *task_lifecycle("seen", "app.add", "w1@h", clock.now, sent_queue="q"))
    sizes = []
    for n in range(200):  # no tick between them
        feed(exp, *task_lifecycle(f"t{n}", "app.add", "w1@h", clock.now, sent_queue=None)[:1])
        sizes.append(len(reorder))
    assert max(sizes) == 50 and sizes[-1] == 50
    s = samples(exp)
    received = value(
        s, "celery_task_received_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN
    )
    assert received == 150  # the oldest 150, released in arrival order, counted once each
    clock.now += 2.1
    exp.tick()
    s = samples(exp)
    assert value(s, "celery_exporter_held_tasks") == 0
    assert (
        value(s, "celery_task_received_total", name="app.add", hostname="w1@h", queue_name=UNKNOWN)
        == 200
    )
