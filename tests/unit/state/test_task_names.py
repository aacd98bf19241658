"""Series limits: task-name patterns and cap fold into ``(other)`` without losing a count,
the worker label can be dropped, idle names lose their series (never those an alert needs),
and nothing exports ``_created`` series.

These drive the real daemon object in-process (decode, dispatch, metrics, exposition) with
a clock the test controls, since idle times are hours long. The limits given as flags to
the exporter process, with a real worker: tests/integration/events/test_series_limits.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.daemon import IDLE_NAMES_TICKS, Exporter
from exporter.settings import MIN_TASK_NAME_FORGET_SECONDS, Settings
from exporter.state.task_names import OTHER, TaskNames
from tests.support.metrics import label_values, registry_samples, total, value

REPO_ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_exporter(clock: Clock, **overrides: Any) -> Exporter:
    return Exporter(
        Settings(broker_url="redis://127.0.0.1:1/0", reorder_window=0, **overrides),
        clock=clock,
    )


def run_task(
    exporter: Exporter,
    uuid: str,
    name: str,
    at: float,
    hostname: str = "w1@host",
    fail: bool = False,
    sent: bool = True,
) -> None:
    """A task's events as a worker (and, with ``sent``, its producer) send them."""
    events: list[dict[str, Any]] = []
    if sent:
        events.append(
            {"type": "task-sent", "uuid": uuid, "name": name, "queue": "celery",
             "hostname": "gen1@producer", "timestamp": at}
        )  # fmt: skip
    events += [
        {"type": "task-received", "uuid": uuid, "name": name, "hostname": hostname,
         "timestamp": at},
        {"type": "task-started", "uuid": uuid, "hostname": hostname, "timestamp": at + 0.1},
    ]  # fmt: skip
    if fail:
        events.append(
            {"type": "task-failed", "uuid": uuid, "hostname": hostname,
             "exception": "ValueError('x')", "timestamp": at + 0.2}
        )  # fmt: skip
    else:
        events.append(
            {"type": "task-succeeded", "uuid": uuid, "hostname": hostname, "runtime": 0.1,
             "timestamp": at + 0.2}
        )  # fmt: skip
    exporter.primary.dispatcher.on_message(json.dumps(events).encode(), "application/json")


def test_patterns_and_cap_fold_names_into_other_and_keep_every_count() -> None:
    clock = Clock()
    exporter = make_exporter(
        clock,
        task_include=("app.*", "billing.charge"),
        task_exclude=("app.internal.*",),
        max_task_names=3,
    )
    # name -> tasks run; admitted in order of first appearance until the cap of 3.
    runs = {
        "app.a": 2,
        "other.lib.task": 3,  # not included
        "app.internal.cleanup": 4,  # excluded
        "billing.charge": 1,
        "app.b": 5,
        "app.c": 6,  # over the cap (app.a, billing.charge, app.b came first)
        "app.d": 7,  # over the cap
    }
    n = 0
    for name, count in runs.items():
        for _ in range(count):
            n += 1
            run_task(exporter, f"t{n}", name, clock.now)
    samples = registry_samples(exporter.registry)

    assert label_values(samples, "celery_task_succeeded_total", "name") == {
        "app.a", "billing.charge", "app.b", OTHER
    }  # fmt: skip
    assert value(samples, "celery_task_succeeded_total", name="app.b", hostname="w1@host",
                 queue_name="celery") == 5  # fmt: skip
    assert total(samples, "celery_task_succeeded_total", name=OTHER) == 3 + 4 + 6 + 7
    assert total(samples, "celery_task_sent_total", name=OTHER) == 3 + 4 + 6 + 7
    # Every task is counted exactly once, folded or not.
    assert total(samples, "celery_task_succeeded_total") == sum(runs.values())
    assert total(samples, "celery_task_runtime_seconds_count") == sum(runs.values())
    # Each folded name is counted once, by reason.
    dropped = "celery_exporter_dropped_label_values_total"
    assert value(samples, dropped, label="name", reason="excluded") == 2
    assert value(samples, dropped, label="name", reason="over_limit") == 2
    assert value(samples, dropped, label="name", reason="idle") == 0
    assert value(samples, "celery_exporter_task_names") == 3
    # Arrival series only for names of their own: the (other) mix has no rhythm to learn.
    assert label_values(samples, "celery_task_last_arrival_timestamp_seconds", "name") == {
        "app.a", "billing.charge", "app.b"
    }  # fmt: skip


def test_without_the_worker_label_task_counters_are_per_name_and_queue() -> None:
    clock = Clock()
    exporter = make_exporter(clock, task_worker_label=False)
    for i, host in enumerate(["pod-a@x", "pod-b@x", "pod-c@x"]):
        run_task(exporter, f"ok{i}", "app.work", clock.now, hostname=host)
        run_task(exporter, f"bad{i}", "app.work", clock.now, hostname=host, fail=True)
    samples = registry_samples(exporter.registry)
    for metric in ("received", "started", "succeeded", "failed"):
        for (name, labels), _ in samples.items():
            if name == f"celery_task_{metric}_total":
                assert "hostname" not in dict(labels)
    assert value(samples, "celery_task_succeeded_total", name="app.work",
                 queue_name="celery") == 3  # fmt: skip
    assert value(samples, "celery_task_failed_total", name="app.work", queue_name="celery",
                 exception="ValueError") == 3  # fmt: skip
    assert total(samples, "celery_task_received_total") == 6


def test_idle_names_lose_their_series_but_periodic_arrivals_stay() -> None:
    clock = Clock()
    forget = MIN_TASK_NAME_FORGET_SECONDS
    # The queue (named once, at the start) is not forgotten here: see the queue cap's test.
    exporter = make_exporter(
        clock, task_name_forget_after=forget, max_task_names=2,
        queue_forget_after=4 * forget,
    )  # fmt: skip
    start = clock.now
    # A one-off task, a periodic task (every 10 minutes) that then stops, and a busy one.
    run_task(exporter, "once", "app.once", start)
    for i in range(4):
        run_task(exporter, f"periodic{i}", "app.periodic", start + 600 * i)
    run_task(exporter, "late", "app.late", start)  # over the cap of 2: (other)
    samples = registry_samples(exporter.registry)
    assert value(samples, "celery_task_succeeded_total", name=OTHER, hostname="w1@host",
                 queue_name="celery") == 1  # fmt: skip

    # The clock ticks once a second (idle names are looked for every IDLE_NAMES_TICKS)
    # while app.once keeps running every 5 minutes.
    busy_at = start
    while clock.now < start + forget + 2 * IDLE_NAMES_TICKS:
        busy_at += 300
        run_task(exporter, f"busy{int(busy_at)}", "app.once", busy_at, sent=False)
        while clock.now < busy_at:
            clock.now += 1.0
            exporter.tick()
    samples = registry_samples(exporter.registry)
    # app.once stayed busy; app.periodic went idle: its counters are gone...
    assert label_values(samples, "celery_task_succeeded_total", "name") == {"app.once", OTHER}
    assert value(samples, "celery_exporter_dropped_label_values_total", label="name",
                 reason="idle") == 1  # fmt: skip
    # ...but its arrival series stay: CeleryPeriodicTaskMissed needs them to fire.
    assert value(samples, "celery_task_last_arrival_timestamp_seconds",
                 name="app.periodic") == start + 1800  # fmt: skip
    assert value(samples, "celery_task_arrival_interval_seconds", name="app.periodic") == 600

    # Its place under the cap is free: the next new name gets series of its own, and a
    # returning idle name is admitted again and counted from zero.
    run_task(exporter, "new", "app.new", clock.now)
    samples = registry_samples(exporter.registry)
    assert value(samples, "celery_task_succeeded_total", name="app.new", hostname="w1@host",
                 queue_name="celery") == 1  # fmt: skip
    assert value(samples, "celery_exporter_task_names") == 2


def test_a_one_off_name_loses_its_arrivals_too() -> None:
    names = TaskNames(max_names=10)
    exporter = make_exporter(Clock())
    arrivals = exporter.primary.dispatcher.tasks.arrivals
    arrivals.arrive("app.report", 100.0, None)
    arrivals.arrive("app.report", 200_000.0, None)  # a gap over a day: not periodic
    arrivals.arrive("app.tick", 100.0, None)
    arrivals.arrive("app.tick", 160.0, None)
    arrivals.arrive("app.beat_entry", 100.0, None)
    assert arrivals.forget_unless_periodic("app.report", keep=set())
    assert not arrivals.forget_unless_periodic("app.tick", keep=set())
    assert not arrivals.forget_unless_periodic("app.beat_entry", keep={"app.beat_entry"})
    assert set(arrivals.stats()) == {"app.tick", "app.beat_entry"}
    assert len(names) == 0


def test_task_name_memo_never_readmits_over_the_cap() -> None:
    names = TaskNames(max_names=2)
    assert [names.label(n) for n in ("a", "b", "c", "a", "c", "d")] == [
        "a", "b", OTHER, "a", OTHER, OTHER
    ]  # fmt: skip
    assert names.dropped.get(("name", "over_limit")) == 2
    names.touch("a", 10.0)
    names.touch("b", 500.0)
    assert names.idle(now=1000.0, forget_after=600.0) == ["a"]
    assert names.label("c") == "c"  # the freed place
    assert names.label("a") == OTHER  # full again


def test_no_created_series_in_either_format() -> None:
    clock = Clock()
    exporter = make_exporter(clock)
    run_task(exporter, "t", "app.a", clock.now)
    for text in (
        generate_latest(exporter.registry).decode(),
        generate_openmetrics(exporter.registry).decode(),
    ):
        assert "celery_task_succeeded_total" in text
        assert "_created" not in text


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text)
    assert match, text
    return int(match.group(1)) * units[match.group(2)]


def test_idle_removal_outlives_every_shipped_alert_window() -> None:
    """No alert can lose a series it needs: the shortest idle time allowed exceeds the
    longest range selector plus the longest ``for:`` among the shipped rules. The exporter's
    own series (``celery_exporter_*``, e.g. CeleryExporterAbsent's day of build_info) carry
    no idle-released label, so their windows do not count."""
    longest_range = longest_for = 0.0
    selector = re.compile(
        r"([A-Za-z_:][A-Za-z0-9_:]*)?(?:\{[^}]*\})?\[(\d+(?:ms|s|m|h|d|w))(?::[^\]]*)?\]"
    )
    for path in sorted((REPO_ROOT / "alerts").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for metric, window in selector.findall(rule["expr"]):
                    if metric.startswith("celery_exporter_"):
                        continue
                    longest_range = max(longest_range, _seconds(window))
                if "for" in rule:
                    longest_for = max(longest_for, _seconds(rule["for"]))
    assert longest_range > 0 and longest_for > 0
    assert longest_range + longest_for < MIN_TASK_NAME_FORGET_SECONDS


def test_label_cap_folds_counts_each_value_once_and_frees_a_place_on_forget() -> None:
    from exporter.prom.counting import LabelledCounter
    from exporter.state.label_cap import LabelCap

    dropped = LabelledCounter("celery_exporter_dropped_label_values_total", "", ("label", "reason"))
    cap = LabelCap("hostname", 2, dropped, "--max-worker-hostnames", preset=("fixed",))
    assert [cap.label(v) for v in ("a", "fixed", "b", "c", "c", "(unknown)")] == [
        "a", "fixed", "b", OTHER, OTHER, "(unknown)"
    ]  # fmt: skip
    assert dropped.values[("hostname", "over_limit")] == 1  # "c" once
    cap.forget("a")  # a purged worker gives its place up
    assert cap.label("c") == "c"
    assert cap.label("a") == OTHER
    assert dropped.values[("hostname", "over_limit")] == 2


def test_worker_hostname_cap_and_a_purged_worker_frees_its_place() -> None:
    clock = Clock()
    exporter = make_exporter(clock, max_worker_hostnames=1, worker_purge_after=60.0)

    def beat(hostname: str) -> None:
        event = {"type": "worker-heartbeat", "hostname": hostname, "freq": 2.0,
                 "timestamp": clock.now}  # fmt: skip
        exporter.primary.dispatcher.on_message(json.dumps(event).encode(), "application/json")

    beat("a@h")
    beat("b@h")  # over the cap: counted, not tracked
    run_task(exporter, "t1", "app.t", clock.now, hostname="b@h")
    samples = registry_samples(exporter.registry)
    assert label_values(samples, "celery_worker_up", "hostname") == {"a@h"}
    assert value(samples, "celery_exporter_events_total", type="worker-heartbeat") == 2
    assert value(samples, "celery_task_succeeded_total", name="app.t", hostname=OTHER,
                 queue_name="celery") == 1  # fmt: skip
    assert value(samples, "celery_exporter_dropped_label_values_total",
                 label="hostname", reason="over_limit") == 1  # fmt: skip
    clock.now += 11  # a@h down (5 x 2 s), then purged after 60 s
    exporter.tick()
    clock.now += 61
    exporter.tick()
    beat("b@h")
    samples = registry_samples(exporter.registry)
    assert label_values(samples, "celery_worker_up", "hostname") == {"b@h"}


def test_label_cap_counts_a_folded_value_once_across_forgets() -> None:
    from exporter.prom.counting import LabelledCounter
    from exporter.state.label_cap import LabelCap

    dropped = LabelledCounter("celery_exporter_dropped_label_values_total", "", ("label", "reason"))
    cap = LabelCap("queue_name", 1, dropped, "--max-queue-names")
    assert [cap.label(v) for v in ("a", "b")] == ["a", OTHER]
    cap.forget("a")
    assert [cap.label(v) for v in ("b", "a")] == ["b", OTHER]
    cap.forget("b")
    assert [cap.label(v) for v in ("a", "b")] == ["a", OTHER]  # "b" folded again
    assert dropped.values[("queue_name", "over_limit")] == 2  # "b" and "a", once each


def _send(exporter: Exporter, *events: dict[str, Any]) -> None:
    exporter.primary.dispatcher.on_message(json.dumps(list(events)).encode(), "application/json")


def test_task_event_hostnames_give_their_place_back_when_idle_and_unregistered() -> None:
    clock = Clock()
    exporter = make_exporter(clock, max_worker_hostnames=3, worker_purge_after=60.0,
                             queue_forget_after=86_400.0)  # fmt: skip
    # A real worker's first task events come before its first heartbeat (batched).
    run_task(exporter, "t0", "app.t", clock.now, hostname="real@early")
    for i in range(2):  # junk hostnames in task events only, never a worker event
        _send(exporter, {"type": "task-started", "uuid": f"x{i}", "hostname": f"junk{i}",
                         "timestamp": clock.now})  # fmt: skip
    beat = {"type": "worker-heartbeat", "freq": 2.0}
    _send(exporter, {**beat, "hostname": "real@early", "timestamp": clock.now})
    for _ in range(5):
        clock.now += 3600
        _send(exporter, {**beat, "hostname": "real@early", "timestamp": clock.now})
        exporter.tick()
    _send(exporter, {"type": "worker-online", "hostname": "real@pod", "freq": 2.0,
                     "timestamp": clock.now}, {**beat, "hostname": "real@pod",
                                               "timestamp": clock.now})  # fmt: skip
    run_task(exporter, "t1", "app.t", clock.now, hostname="real@pod")
    samples = registry_samples(exporter.registry)
    assert label_values(samples, "celery_worker_up", "hostname") == {"real@early", "real@pod"}
    assert value(samples, "celery_workers_online") == 2
    # The early worker kept its label and its first task's count (it joined the registry).
    assert label_values(samples, "celery_task_started_total", "hostname") == {
        "real@early", "real@pod"
    }  # fmt: skip
    assert value(samples, "celery_task_succeeded_total", name="app.t", hostname="real@early",
                 queue_name="celery") == 1  # fmt: skip
    assert value(samples, "celery_exporter_dropped_label_values_total",
                 label="hostname", reason="idle") == 2  # fmt: skip
    assert value(samples, "celery_exporter_dropped_label_values_total",
                 label="hostname", reason="over_limit") == 0  # fmt: skip


def test_idle_queue_names_and_exception_classes_give_their_place_back() -> None:
    from exporter.watch import EXCEPTION_FORGET_AFTER_SECONDS

    clock = Clock()
    exporter = make_exporter(
        clock, max_queue_names=1, max_exception_classes=1, queue_forget_after=600.0
    )
    idle = MIN_TASK_NAME_FORGET_SECONDS  # the floor of a queue label's idle time

    def sent(uuid: str, queue: str) -> None:
        _send(exporter, {"type": "task-sent", "uuid": uuid, "name": "app.t", "queue": queue,
                         "hostname": "p@h", "timestamp": clock.now})  # fmt: skip

    def failed(uuid: str, exception: str) -> None:
        _send(exporter, {"type": "task-failed", "uuid": uuid, "hostname": "w@h",
                         "exception": exception, "timestamp": clock.now})  # fmt: skip

    sent("s1", "junk")
    sent("s2", "real")
    failed("f1", "JunkError('x')")
    failed("f2", "RealError('x')")
    samples = registry_samples(exporter.registry)
    assert label_values(samples, "celery_task_sent_total", "queue_name") == {"junk", OTHER}
    assert label_values(samples, "celery_task_failed_total", "exception") == {"JunkError", OTHER}
    clock.now += idle + 1
    exporter.tick()
    sent("s3", "real")
    samples = registry_samples(exporter.registry)
    assert label_values(samples, "celery_task_sent_total", "queue_name") == {"real", OTHER}
    assert value(samples, "celery_exporter_dropped_label_values_total",
                 label="queue_name", reason="idle") == 1  # fmt: skip
    clock.now += EXCEPTION_FORGET_AFTER_SECONDS
    sent("s4", "real")  # in use: keeps its place
    exporter.tick()
    failed("f3", "RealError('x')")
    samples = registry_samples(exporter.registry)
    assert label_values(samples, "celery_task_sent_total", "queue_name") == {"real", OTHER}
    # (w@h never sent a worker event: its series went with its idle hostname.)
    assert label_values(samples, "celery_task_failed_total", "exception") == {"RealError"}
    assert value(samples, "celery_exporter_dropped_label_values_total",
                 label="exception", reason="idle") == 1  # fmt: skip
