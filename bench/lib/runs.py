"""One measured run: a flood into the baseline or the exporter, its rate, CPU, losses and memory."""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lib.baseline import Baseline
from lib.exporter_process import ExporterProcess
from lib.procs import cpu_seconds, proc_status_kib, process_state
from lib.publisher import Publisher
from lib.redis_server import RedisServer
from lib.scraped import Metrics, counter_delta, events_total, fmt_counts
from lib.wire import WireFormat
from lib.workload import IN_FLIGHT_ROUNDS, IN_FLIGHT_TASKS

TARGET_RATIO = 0.75
MODES = ("live", "drain")


@dataclass
class Run:
    consumer: str  # "baseline" or "exporter"
    shape: str  # "batched" or "single"
    mode: str  # "live": consumer runs during the publish; "drain": paused until it is done
    published: int  # events
    messages: int
    consumed: int
    seconds: float  # live: first PUBLISH -> last event; drain: resume -> last event
    cpu_seconds: float
    publish_seconds: float
    peak_rss_kib: int
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.consumed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.consumed * 1e6 if self.consumed else float("nan")

    @property
    def lost(self) -> int:
        return self.published - self.consumed

    def named_checks(self) -> list[tuple[str, bool, str]]:
        prefix = f"{self.consumer} {self.shape} {self.mode}"
        return [(f"{prefix}: {name}", ok, detail) for name, ok, detail in self.checks]


def start_flood(
    pid: int, publisher: Publisher, name: str, mode: str
) -> tuple[float | None, dict[str, Any] | None]:
    """Start publishing flood ``name`` at the consumer ``pid``.

    live: returns at once (None, None); the consumer drains while the publisher publishes.
    drain: the consumer is stopped (SIGSTOP) until the whole flood waits in Redis, then
    resumed; returns (the resume time, the publish result). On 2 cores this keeps the
    publisher from competing with the consumer for CPU.
    """
    if mode == "live":
        publisher.start_publish(name)
        return None, None
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while process_state(pid) not in "Tt" and time.monotonic() < deadline:
            time.sleep(0.005)
        publisher.start_publish(name)
        pub = publisher.result()
    finally:
        resumed = time.time()
        os.kill(pid, signal.SIGCONT)
    return resumed, pub


def run_baseline(
    server: RedisServer,
    fmt: WireFormat,
    publisher: Publisher,
    shape: str,
    mode: str,
    factory: Any = None,
    consumer: str = "baseline",
) -> Run:
    """One flood into a reference subscriber: ``Baseline``, or what ``factory(port, pattern,
    expect)`` starts (bench/reference.py's hiredis one)."""
    flood = publisher.flood(shape)
    baseline = (factory or Baseline)(server.port, fmt.pattern, flood["events"])
    pid = baseline.proc.pid
    try:
        if server.numpat() != 1:
            raise RuntimeError("expected exactly one pattern subscriber (the baseline)")
        cpu0 = cpu_seconds(pid)
        resumed, pub = start_flood(pid, publisher, shape, mode)
        deadline = time.monotonic() + 900
        while (result := baseline.result(timeout=0.2)) is None:
            if pub is None and publisher.done():
                pub = publisher.result()
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline subscriber did not finish")
        cpu1 = cpu_seconds(pid)
        peak = proc_status_kib(pid, "VmHWM")  # a fresh process: its peak is this flood's
        if pub is None:
            pub = publisher.result()
    finally:
        baseline.close()
    start = resumed if resumed is not None else pub["start"]
    run = Run(
        consumer=consumer,
        shape=shape,
        mode=mode,
        published=flood["events"],
        messages=flood["messages"],
        consumed=result["events"],
        seconds=result["last"] - start,
        cpu_seconds=cpu1 - cpu0,
        publish_seconds=pub["end"] - pub["start"],
        peak_rss_kib=peak,
    )
    run.checks.append(("every event decoded", run.lost == 0, f"{run.consumed} of {run.published}"))
    run.checks.append(
        (
            "every message reached 1 subscriber",
            pub["receivers"] == flood["messages"],
            f"{pub['receivers']} of {flood['messages']}",
        )
    )
    return run


def wait_until_ingested(
    exporter: ExporterProcess,
    publisher: Publisher,
    base_total: float,
    expected: int,
    pub: dict[str, Any] | None = None,
) -> tuple[Metrics, float, dict[str, Any], int]:
    """Wait for the publisher, then for the exporter to go idle; scrape only then.

    Scraping /metrics renders thousands of series under the dispatcher's lock, so polling it
    during the flood would slow the consumer down. Instead /proc tells when the process has
    stopped using CPU (drained, or stuck); then one scrape says whether everything arrived.
    Returns the metrics, the exporter's CPU time when it went idle, the publish result and
    the highest RSS sampled meanwhile.
    """
    samples: deque[tuple[float, float]] = deque()
    peak = 0
    last_count = -1.0
    stalled_since = 0.0
    deadline = time.monotonic() + 900
    while True:
        time.sleep(0.1)
        if pub is None and publisher.done():
            pub = publisher.result()
        now = time.monotonic()
        cpu = cpu_seconds(exporter.pid)
        peak = max(peak, exporter.rss_kib())
        samples.append((now, cpu))
        while len(samples) > 2 and now - samples[1][0] >= 0.6:
            samples.popleft()
        window = now - samples[0][0]
        idle = pub is not None and window >= 0.6 and cpu - samples[0][1] < 0.03
        if not idle and now < deadline:
            continue
        metrics = exporter.scrape()
        count = events_total(metrics) - base_total
        if count >= expected or now >= deadline:
            break
        if count != last_count:
            last_count, stalled_since = count, now
        elif now - stalled_since >= 3.0:
            break  # idle and not increasing for 3 s: the rest is lost
        samples.clear()
    assert pub is not None
    return metrics, cpu, pub, peak


def wait_until_released(
    exporter: ExporterProcess, after: Metrics, cpu: float, timeout: float = 30.0
) -> tuple[Metrics, float]:
    """Every event is consumed, but a new worker's first tasks may still be held for its
    active_queues answer (events/reorder.py; the bench's workers never answer, so for the
    reorder window): they are counted when released. Wait for that, CPU included."""
    deadline = time.monotonic() + timeout
    while after.total("celery_exporter_held_tasks") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        after = exporter.scrape()
        cpu = cpu_seconds(exporter.pid)
    return after, cpu


def run_exporter_flood(
    exporter: ExporterProcess, publisher: Publisher, shape: str, mode: str
) -> Run:
    flood = publisher.flood(shape)
    before = exporter.scrape()
    base_total = events_total(before)
    cpu0 = cpu_seconds(exporter.pid)
    resumed, pub = start_flood(exporter.pid, publisher, shape, mode)
    after, cpu1, pub, peak = wait_until_ingested(
        exporter, publisher, base_total, flood["events"], pub
    )
    after, cpu1 = wait_until_released(exporter, after, cpu1)
    consumed = int(events_total(after) - base_total)
    last_event = after.total("celery_exporter_last_event_timestamp_seconds")
    start = resumed if resumed is not None else pub["start"]
    run = Run(
        consumer="exporter",
        shape=shape,
        mode=mode,
        published=flood["events"],
        messages=flood["messages"],
        consumed=consumed,
        seconds=last_event - start,
        cpu_seconds=cpu1 - cpu0,
        publish_seconds=pub["end"] - pub["start"],
        peak_rss_kib=peak,
    )
    run.checks = exporter_checks(flood, before, after, pub)
    return run


def exporter_checks(
    flood: dict[str, Any], before: Metrics, after: Metrics, pub: dict[str, Any]
) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    types = counter_delta(after, before, "celery_exporter_events_total", "type")
    expected_types = {k: float(v) for k, v in flood["types"].items()}
    checks.append(
        (
            "events_total per type == published",
            types == expected_types,
            f"got {fmt_counts(types)}"
            + ("" if types == expected_types else f", published {fmt_counts(expected_types)}"),
        )
    )
    done = sum(counter_delta(after, before, "celery_task_succeeded_total", "name").values())
    done += sum(counter_delta(after, before, "celery_task_failed_total", "name").values())
    checks.append(
        (
            "succeeded + failed == tasks",
            done == flood["succeeded"] + flood["failed"],
            f"{done:,.0f} of {flood['succeeded'] + flood['failed']:,}",
        )
    )
    unknown = sum(
        counter_delta(after, before, metric, "name").get("(unknown)", 0.0)
        for metric in (
            "celery_task_started_total",
            "celery_task_succeeded_total",
            "celery_task_failed_total",
        )
    )
    checks.append(("no task lost its name", unknown == 0, f"{unknown:.0f} as (unknown)"))
    skipped = after.total("celery_exporter_events_skipped_total") - before.total(
        "celery_exporter_events_skipped_total"
    )
    checks.append(("nothing skipped", skipped == 0, f"{skipped:.0f} skipped"))
    reconnects = after.total("celery_exporter_broker_reconnects_total") - before.total(
        "celery_exporter_broker_reconnects_total"
    )
    checks.append(("no reconnect", reconnects == 0, f"{reconnects:.0f} reconnects"))
    checks.append(
        (
            "every message reached 1 subscriber",
            pub["receivers"] == flood["messages"],
            f"{pub['receivers']:,} of {flood['messages']:,}",
        )
    )
    return checks


@dataclass
class MemoryPoint:
    label: str
    rss_kib: int
    metric_rss_kib: int
    tracked: int
    peak_kib: int = 0  # highest RSS sampled while getting there (0: not sampled)


def memory_point(exporter: ExporterProcess, label: str, peak_kib: int = 0) -> MemoryPoint:
    rss = exporter.rss_kib()  # before the scrape, which allocates while rendering
    metrics = exporter.scrape()
    return MemoryPoint(
        label,
        rss,
        int(metrics.total("process_resident_memory_bytes") / 1024),
        int(metrics.total("celery_exporter_tracked_tasks")),
        peak_kib,
    )


@dataclass
class InFlight:
    points: list[MemoryPoint]
    checks: list[tuple[str, bool, str]]
    task_bytes: float  # RSS per tracked task (round 1)


LEAK_ALLOWANCE = 0.10  # of what the tracked tasks themselves cost, per round after warm-up


def run_in_flight(exporter: ExporterProcess, publisher: Publisher) -> InFlight:
    points: list[MemoryPoint] = [memory_point(exporter, "before the in-flight rounds")]
    checks: list[tuple[str, bool, str]] = []
    for round_no in range(1, IN_FLIGHT_ROUNDS + 1):
        for phase in ("received", "succeeded"):
            name = f"inflight{round_no}-{phase}"
            flood = publisher.flood(name)
            before = exporter.scrape()
            publisher.start_publish(name)
            after, _, pub, peak = wait_until_ingested(
                exporter, publisher, events_total(before), flood["events"]
            )
            checks.extend(
                (f"in flight, round {round_no}, {phase}: {c}", ok, d)
                for c, ok, d in exporter_checks(flood, before, after, pub)
            )
            label = (
                f"round {round_no}: {IN_FLIGHT_TASKS:,} tasks in flight"
                if phase == "received"
                else f"round {round_no}: all {IN_FLIGHT_TASKS:,} succeeded"
            )
            point = memory_point(exporter, label, peak)
            points.append(point)
            want = IN_FLIGHT_TASKS if phase == "received" else 0
            checks.append(
                (
                    f"in flight, round {round_no}, {phase}: tracked_tasks == {want:,}",
                    point.tracked == want,
                    f"{point.tracked:,}",
                )
            )
    in_flight = [p.rss_kib for p in points[1::2]]
    done = [p.rss_kib for p in points[2::2]]
    cost = in_flight[0] - points[0].rss_kib  # what 100,000 tracked tasks take
    # Round 1 warms up the allocator (the tracker's table grows to 100,000 entries); from
    # round 2 on, a leak of the task records would add about `cost` per round.
    ref = 1 if IN_FLIGHT_ROUNDS >= 3 else 0
    rounds_after = IN_FLIGHT_ROUNDS - 1 - ref
    allowed = max(2048, int(LEAK_ALLOWANCE * cost * rounds_after))
    for what, series in (("in flight", in_flight), ("after all succeeded", done)):
        growth = series[-1] - series[ref]
        checks.append(
            (
                f"RSS flat {what}: round {IN_FLIGHT_ROUNDS} vs round {ref + 1} grows less than "
                f"{LEAK_ALLOWANCE:.0%} of the tasks' own cost per round",
                growth <= allowed,
                f"{growth / 1024:+.1f} MiB (allowed {allowed / 1024:.1f} MiB; 100,000 tracked "
                f"tasks cost {cost / 1024:.1f} MiB)",
            )
        )
    return InFlight(points, checks, cost * 1024 / IN_FLIGHT_TASKS)
