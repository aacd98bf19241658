#!/usr/bin/env python
"""Soak: ten times the steady event traffic of bench/ingest.py's soak for two hours, with
task names, workers and queues coming and going, a scrape every 15 s; the exporter's
memory must stay flat.

Run ``.venv/bin/python bench/soak.py --minutes 120 --tasks-per-second 10000`` (``make
bench-soak``). A private redis-server and the exporter daemon (defaults, except
``--worker-purge-after 300`` so that gone workers are purged within the run); a builder
thread makes, a few seconds ahead, and a publisher thread sends, every second, the events
of ``--tasks-per-second`` tasks (received/started/succeeded-or-failed, batched in kombu's
exact wire format as prefork workers send them; a task-sent, one message each, for a fifth
of them, naming the queue; heartbeats every 2 s; worker-online when a worker comes,
worker-offline when half of those that go leave). Churn: every 5 minutes the active
window (10 of 20 task names, 10 of 20 workers, 4 of 8 queues) moves by a quarter, so each
value is in use for 10 minutes and idle for 10; the whole universe is in use within the
warm-up (the first quarter of the run), so that growth after it would be a leak, not new
label values. Every 15 s this script scrapes ``/metrics`` as Prometheus would
(OpenMetrics, gzip) and samples the exporter's RSS (/proc, just before the scrape), its
tracked tasks and the number of series (sample lines).

**Flat** means: after the warm-up, the RSS level (the median of each 5 minutes of
samples; a single sample also holds the second's traffic in flight, 1-3 MiB at this rate)
stays within 2 MiB (the issue's criterion; the raw range is reported too); the highest RSS
of the last quarter is at most 3% (and at least 2 MiB of slack) above that of the second
quarter; the series stay within the label space of the universe; the tracked tasks stay
under 2x the tasks the workers hold. The least-squares slope of RSS over the second half,
extrapolated to one hour, is reported too. At the end every published event must have
been counted, and the publisher must have sent its seconds on time (a second whose
messages were not all published within it is late). Writes the "## Soak" section of
bench/RESULTS.md and the RSS curve, bench/soak-rss.png; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
import scrape as scrape_bench
from png import line_chart
from results import RESULTS_PATH, replace_section, run_facts

from exporter.settings import DEFAULT_RUNTIME_BUCKETS

Event = dict[str, Any]

HEADER = "## Soak"
PNG_PATH = Path(__file__).resolve().parent / "soak-rss.png"
SCRAPE_EVERY = 15.0
# Churn: a universe of task names, worker hostnames and queues of which a window is active;
# the window moves every PHASE_SECONDS and comes round every PHASES phases. The whole
# universe is in use within the warm-up, so growth after it would be a leak, not new label
# values. A worker is active for two phases and gone for two: half leave with
# worker-offline (a clean shutdown), half just stop (a crash); with WORKER_PURGE_AFTER the
# exporter purges the gone ones (and releases their hostname) before they come back.
PHASE_SECONDS = 300
PHASES = 4
NAMES, ACTIVE_NAMES = 20, 10
WORKERS, ACTIVE_WORKERS = 20, 10
QUEUES, ACTIVE_QUEUES = 8, 4
PRODUCERS = 3
SENT_SHARE = 0.2  # tasks whose producer sends task-sent (task_send_sent_event): the queue
HEARTBEAT_EVERY = 2  # seconds (a worker's default heartbeat interval)
WORKER_PURGE_AFTER = 300  # seconds (--worker-purge-after, default 3600)
SLICES = 10  # of a second: each sends its task-sent messages, then its workers' batches
AHEAD = 4  # seconds of traffic built ahead of the publisher
WARM_UP = 0.25  # of the run
RSS_FLAT_MIB = 2.0  # the criterion: RSS flat within 2 MiB after the warm-up
# RSS is judged by its level: the median of each window of this many seconds. A single
# sample also holds the second's traffic in flight (at 32,000 events/s, 1-3 MiB of messages
# being read and decoded), which comes and goes and is not growth.
LEVEL_WINDOW = 300.0
RSS_GROWTH = 0.03
RSS_SLACK_MIB = 2.0
LATE_ALLOWED = 0.01  # of the publisher's seconds


def window(universe: int, active: int, phase: int) -> list[int]:
    shift = universe // PHASES
    return [(phase * shift + k) % universe for k in range(active)]


class ChurnWorkload(ingest.Workload):
    """bench/ingest.py's events, one second at a time, for the active window of names,
    workers and queues; timestamps follow the wall clock of the second they are sent in."""

    def __init__(self, fmt: ingest.WireFormat, tasks_per_second: int, phase_seconds: int) -> None:
        super().__init__(fmt.utcoffset, 7, names=NAMES, workers=WORKERS)
        self.phase_seconds = phase_seconds
        self.fmt = fmt
        self.tasks_per_second = tasks_per_second
        self.queues = [f"soak.queue-{q + 1}" for q in range(QUEUES)]
        self.producers = [ingest._Worker(100 + i, fmt.utcoffset) for i in range(PRODUCERS)]
        for i, producer in enumerate(self.producers):
            producer.hostname = f"gen{2200 + i}@bench-web-{i + 1}"
        self.pack_rng = random.Random(8)
        self.step = 1.0 / (tasks_per_second * 3.2)  # mean timestamp step: a second's events
        self.active: list[int] = []

    def _tick(self) -> float:
        self.now += self.rng.random() * 2 * self.step
        return self.now

    def sent(self, producer: ingest._Worker, task_id: str, name: str, queue: str) -> Event:
        # celery.app.amqp.send_task_message -> EventDispatcher.publish: this field order.
        rng = self.rng
        event = producer.base()
        event.update(
            uuid=task_id,
            root_id=task_id,
            parent_id=None,
            name=name,
            args=f"({rng.randrange(1, 10**6)},)",
            kwargs="{}",
            retries=0,
            eta=None,
            expires=None,
            queue=queue,
            exchange="",
            routing_key=queue,
            timestamp=self._tick(),
            type="task-sent",
        )
        return event

    def second(self, index: int, wall: float) -> tuple[list[ingest.Message], int]:
        """The messages of second ``index`` (sent at ``wall``) and the events they carry."""
        rng = self.rng
        self.now = wall
        phase = (index // self.phase_seconds) % PHASES
        workers = [self.workers[w] for w in window(WORKERS, ACTIVE_WORKERS, phase)]
        names = [TASK_NAMES_ALL[n] for n in window(NAMES, ACTIVE_NAMES, phase)]
        queues = [self.queues[q] for q in window(QUEUES, ACTIVE_QUEUES, phase)]
        weights = [1.0 / (i + 1) ** 0.8 for i in range(len(names))]
        control: list[tuple[ingest._Worker, Event]] = []
        active = [self.workers.index(w) for w in workers]
        if active != self.active:
            for w in set(self.active) - set(active):
                if w % 2 == 0:  # a clean shutdown; the odd ones just stop (a crash)
                    event = self.heartbeat(self.workers[w])
                    event["type"] = "worker-offline"
                    control.append((self.workers[w], event))
            for w in set(active) - set(self.active):
                event = self.heartbeat(self.workers[w])
                event["type"] = "worker-online"
                control.append((self.workers[w], event))
            self.active = active
        if index % HEARTBEAT_EVERY == 0:
            control += [(worker, self.heartbeat(worker)) for worker in workers]
        messages = ingest.pack(self.fmt, control, batched=False, rng=self.pack_rng).messages
        events = len(control)
        chosen = rng.choices(names, weights, k=self.tasks_per_second)
        size = -(-len(chosen) // SLICES)
        for k in range(0, len(chosen), size):
            # A slice's task-sent messages (one each) precede its workers' batches.
            sent: list[tuple[ingest._Worker, Event]] = []
            stream: list[tuple[ingest._Worker, Event]] = []
            for name in chosen[k : k + size]:
                worker = workers[rng.randrange(len(workers))]
                task_id = self.uuid()
                if rng.random() < SENT_SHARE:
                    producer = self.producers[rng.randrange(PRODUCERS)]
                    queue = rng.choice(queues)
                    sent.append((producer, self.sent(producer, task_id, name, queue)))
                worker.processed += 1
                stream.append((worker, self.received(worker, task_id, name)))
                worker.pending.append((task_id, name))
                if len(worker.pending) > ingest.PREFETCH:
                    old_id, old_name = worker.pending.popleft()
                    stream.append((worker, self.started(worker, old_id)))
                    stream.append((worker, self.terminal(worker, old_id, old_name)))
            if k + size >= len(chosen):  # the second ends with every task finished
                for worker in workers:
                    while worker.pending:
                        old_id, old_name = worker.pending.popleft()
                        stream.append((worker, self.started(worker, old_id)))
                        stream.append((worker, self.terminal(worker, old_id, old_name)))
            for part in (
                ingest.pack(self.fmt, sent, batched=False, rng=self.pack_rng),
                ingest.pack(self.fmt, stream, batched=True, rng=self.pack_rng),
            ):
                messages += part.messages
                events += part.events
        return messages, events


TASK_NAMES_ALL = ingest.TASK_NAMES


class Publisher(threading.Thread):
    """Sends one second of traffic per wall-clock second; a builder thread makes the
    seconds AHEAD of time, so a slow build shows as a late second, not a slower rate."""

    def __init__(
        self, port: int, fmt: ingest.WireFormat, tasks_per_second: int, phase_seconds: int
    ) -> None:
        super().__init__(name="soak-publisher", daemon=True)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.workload = ChurnWorkload(fmt, tasks_per_second, phase_seconds)
        self.stop = threading.Event()
        self.ready: queue.Queue[tuple[list[ingest.Message], int]] = queue.Queue(AHEAD)
        self.published = 0
        self.messages = 0
        self.receivers = 0
        self.seconds = 0
        self.late_seconds = 0
        self.t0 = time.time() + 2.0
        self.builder = threading.Thread(target=self._build, name="soak-builder", daemon=True)

    def _build(self) -> None:
        index = 0
        while not self.stop.is_set():
            batch = self.workload.second(index, self.t0 + index)
            while not self.stop.is_set():
                try:
                    self.ready.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue
            index += 1

    def run(self) -> None:
        self.builder.start()
        next_tick = time.monotonic() + (self.t0 - time.time())
        while not self.stop.is_set():
            delay = next_tick - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            if self.stop.is_set():
                break
            messages, events = self.ready.get()
            result = ingest.publish(self.client, messages)
            self.published += events
            self.messages += len(messages)
            self.receivers += result["receivers"]
            self.seconds += 1
            next_tick += 1.0
            if time.monotonic() > next_tick:  # this second's traffic did not fit in it
                self.late_seconds += 1


MAP_KINDS = ("heap", "arenas", "stacks", "anon", "files")
ARENA_HEAP_KIB = 65536  # glibc's HEAP_MAX_SIZE on 64-bit: each per-thread arena heap
KERNEL_MAPPINGS = ("[stack]", "[vvar]", "[vdso]", "[vsyscall]")


def memory_map(pid: int) -> dict[str, float]:
    """The exporter's RSS (MiB) by kind of mapping, from /proc/<pid>/smaps, so that a step
    in RSS can be put down to one allocator: ``heap`` is glibc's main (brk) heap;
    ``arenas`` glibc's per-thread arena heaps (anonymous, aligned to and at most 64 MiB: a
    heap's used part is read-write, the rest ``---p``); ``stacks`` 8 MiB thread stacks;
    ``anon`` any other anonymous mapping: pymalloc's 1 MiB arenas (the kernel merges
    neighbouring ones into bigger mappings, so they cannot be told apart by size) and the
    blocks of 256 KiB and more that malloc maps on their own (exporter/malloc.py); ``files``
    the mapped code and data of files. The kinds are told apart by shape only."""
    kinds = dict.fromkeys(MAP_KINDS, 0.0)
    maps: list[tuple[int, str, int, int]] = []  # start address, path, size kB, rss kB
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return kinds
    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            start = int(head[0].split("-")[0], 16)
            maps.append((start, head[5] if len(head) > 5 else "", 0, 0))
        elif head[0] == "Size:":
            start, path, _, rss = maps[-1]
            maps[-1] = (start, path, int(head[1]), rss)
        elif head[0] == "Rss:":
            start, path, size, _ = maps[-1]
            maps[-1] = (start, path, size, int(head[1]))
    for start, path, size, rss in maps:
        if path == "[heap]":
            kind = "heap"
        elif path in KERNEL_MAPPINGS:
            continue  # the main thread's stack and the kernel's pages
        elif path and not path.startswith("[anon"):
            kind = "files"
        elif start % (ARENA_HEAP_KIB * 1024) == 0 and size <= ARENA_HEAP_KIB:
            kind = "arenas"
        elif size == 8192:
            kind = "stacks"
        else:
            kind = "anon"
        kinds[kind] += rss / 1024
    return kinds


def levels(points: list[tuple[float, float]], window: float) -> list[tuple[float, float]]:
    """(window start, median RSS) of each full ``window`` of (seconds, RSS) points."""
    if not points:
        return []
    out = []
    start = points[0][0]
    while True:
        chunk = [rss for t, rss in points if start <= t < start + window]
        if not chunk or points[-1][0] < start + window * 0.9:
            break
        out.append((start, statistics.median(chunk)))
        start += window
    return out


def rss_figures(points: list[tuple[float, float]]) -> dict[str, Any]:
    """The RSS figures of a run from its (seconds, RSS MiB) samples: after the warm-up (the
    first quarter), the raw range, the window levels, the last quarter against the second,
    the slope over the second half."""
    n = len(points)
    q1, q2, q3 = n // 4, n // 2, (3 * n) // 4
    after = points[q1:] or points
    ref = max(p[1] for p in points[q1:q2] or points[:1])
    end = max(p[1] for p in points[q3:] or points[-1:])
    # A run shorter than a window after its warm-up has one level: the median of it all.
    level = levels(after, LEVEL_WINDOW) or [(after[0][0], statistics.median(p[1] for p in after))]
    return {
        "warm_up_minutes": after[0][0] / 60,
        "lo": min(p[1] for p in after),
        "hi": max(p[1] for p in after),
        "levels": level,
        "level_lo": min(v for _, v in level),
        "level_hi": max(v for _, v in level),
        "ref": ref,
        "end": end,
        "slope": slope_per_hour(points[q2:]),
    }


def print_samples(path: Path) -> None:
    """``--samples``: the RSS figures of a samples.csv (a run still going, or done)."""
    rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line]
    figures = rss_figures([(float(r[0]), float(r[1])) for r in rows])
    print(
        f"{len(rows)} samples, {float(rows[-1][0]) / 60:.1f} minutes; after minute "
        f"{figures['warm_up_minutes']:.1f}: RSS {figures['lo']:.1f}-{figures['hi']:.1f} MiB; "
        f"{LEVEL_WINDOW / 60:g}-minute medians {figures['level_lo']:.1f}-"
        f"{figures['level_hi']:.1f} MiB ({figures['level_hi'] - figures['level_lo']:.1f} apart); "
        f"highest, last quarter {figures['end']:.1f} vs second quarter {figures['ref']:.1f}; "
        f"slope over the second half {figures['slope']:+.1f} MiB/h"
    )
    print(" ".join(f"{t / 60:.0f}:{v:.1f}" for t, v in figures["levels"]))


def by_kind(mapped: list[dict[str, float]], kind: str, first: bool = False) -> float:
    """Median RSS of one kind of mapping over the first (or last) level window of samples."""
    count = max(1, int(LEVEL_WINDOW / SCRAPE_EVERY))
    chunk = mapped[:count] if first else mapped[-count:]
    return statistics.median(m[kind] for m in chunk) if chunk else 0.0


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den * 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--tasks-per-second", type=int, default=10_000)
    parser.add_argument(
        "--phase-seconds", type=int, default=PHASE_SECONDS, help="churn: seconds per phase"
    )
    parser.add_argument(
        "--samples", type=Path, help="only print the RSS figures of a run's samples.csv"
    )
    parser.add_argument("--no-results", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    if args.samples:
        print_samples(args.samples)
        return 0
    command = " ".join([".venv/bin/python bench/soak.py", *(argv or sys.argv[1:])])
    facts = run_facts(command)
    duration = args.minutes * 60
    # The exporter's own environment (auto_envvar_prefix): purge a gone worker after 5 min.
    os.environ.setdefault("CELERY_EXPORTER_WORKER_PURGE_AFTER", str(WORKER_PURGE_AFTER))
    workdir = Path(tempfile.mkdtemp(prefix="cme-soak-"))
    server = ingest.RedisServer(workdir)
    exporters = ingest.Exporters(server, workdir)
    samples: list[tuple[float, float, int, int, float]] = []  # t, RSS MiB, tracked, series, ms
    mapped: list[dict[str, float]] = []  # RSS by kind of mapping, at each sample
    checks: list[tuple[str, bool, str]] = []
    publisher: Publisher | None = None
    started = time.monotonic()
    try:
        server.start()
        fmt = ingest.capture_wire_format(server)
        exporter = exporters.start()
        url = exporter.url("/metrics")
        publisher = Publisher(server.port, fmt, args.tasks_per_second, args.phase_seconds)
        publisher.start()
        t0 = time.monotonic()
        csv = (workdir / "samples.csv").open("w", buffering=1)
        csv.write(
            "seconds,rss_mib,tracked,series,scrape_ms,published,"
            + ",".join(f"{k}_mib" for k in MAP_KINDS)
            + "\n"
        )
        ingest.log(f"exporter pid {exporter.pid}; samples in {workdir / 'samples.csv'}")
        next_scrape = t0 + SCRAPE_EVERY
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            time.sleep(max(0.0, min(next_scrape, t0 + duration) - now))
            if time.monotonic() < next_scrape:
                continue
            next_scrape += SCRAPE_EVERY
            rss = exporter.rss_kib() / 1024  # before the scrape allocates its text
            mapped.append(memory_map(exporter.pid))
            elapsed, body, _ = scrape_bench.scrape(url, scrape_bench.PROMETHEUS_ACCEPT, True)
            metrics = ingest.Metrics(body.decode())
            tracked = int(metrics.total("celery_exporter_tracked_tasks"))
            series = scrape_bench.sample_lines(body)
            samples.append((time.monotonic() - t0, rss, tracked, series, elapsed * 1e3))
            csv.write(
                ",".join(f"{v:.3f}" for v in samples[-1])
                + f",{publisher.published},"
                + ",".join(f"{mapped[-1][k]:.3f}" for k in MAP_KINDS)
                + "\n"
            )
            if len(samples) % 4 == 0:
                ingest.log(
                    f"{samples[-1][0] / 60:.1f} min: RSS {rss:.1f} MiB, tracked {tracked:,}, "
                    f"series {series:,}, scrape {elapsed * 1e3:.0f} ms, "
                    f"{publisher.published:,} events published, "
                    f"{publisher.late_seconds} late seconds"
                )
        publisher.stop.set()
        publisher.join(10)
        deadline = time.monotonic() + 60
        while ingest.events_total(metrics := exporter.scrape()) < publisher.published:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        counted = ingest.events_total(metrics)
        skipped = metrics.total("celery_exporter_events_skipped_total")
        reconnects = metrics.total("celery_exporter_broker_reconnects_total")
        backlog = metrics.total("celery_exporter_event_backlog_bytes")
        dropped = metrics.by_label("celery_exporter_dropped_label_values_total", "label")
        exporter_cpu = ingest.cpu_seconds(exporter.pid)
    finally:
        if publisher is not None:
            publisher.stop.set()
        exporters.stop_all()
        server.stop()
    assert publisher is not None
    n = len(samples)
    q1, q2, q3 = n // 4, n // 2, (3 * n) // 4
    second = samples[q1:q2] or samples[:1]
    last = samples[q3:] or samples[-1:]
    ref = max(s[1] for s in second)
    end = max(s[1] for s in last)
    allowed = max(ref * RSS_GROWTH, RSS_SLACK_MIB)
    figures = rss_figures([(s[0], s[1]) for s in samples])
    flat_lo, flat_hi = figures["lo"], figures["hi"]
    level_lo, level_hi = figures["level_lo"], figures["level_hi"]
    warm_up_minutes = figures["warm_up_minutes"]
    slope = slope_per_hour([(s[0], s[1]) for s in samples[q2:]])
    # Workers hold PREFETCH + 1 tasks each; a slice's task-sent messages go just before
    # its tasks' worker events.
    held = ACTIVE_WORKERS * (ingest.PREFETCH + 1) + round(
        args.tasks_per_second / SLICES * SENT_SHARE
    )
    # Every label combination the universe can produce: worker-side counters per (name,
    # worker, queue or unknown), the failed counter per exception class too, task-sent per
    # (name, queue), histograms per (name, queue), plus the exporter's own and the workers'
    # series. Rare combinations keep appearing for a long time (the names are skewed), so
    # the series count approaches this bound slowly: growth towards it is new label
    # values, not a leak.
    buckets = len(DEFAULT_RUNTIME_BUCKETS) + 3
    queues = QUEUES + 1
    bound = (
        NAMES * WORKERS * queues * (3 + len(ingest.EXCEPTIONS))
        + NAMES * queues * (1 + 3 * buckets)
        + WORKERS * 20
        + 1_000
    )
    checks += [
        (
            f"RSS flat within {RSS_FLAT_MIB:g} MiB after the warm-up",
            level_hi - level_lo <= RSS_FLAT_MIB,
            f"{LEVEL_WINDOW / 60:g}-minute medians {level_lo:.1f}-{level_hi:.1f} MiB, "
            f"{level_hi - level_lo:.1f} MiB apart; single samples "
            f"{flat_lo:.1f}-{flat_hi:.1f} MiB after minute {warm_up_minutes:.1f}: "
            f"{flat_hi - flat_lo:.1f} MiB apart",
        ),
        (
            "RSS growth",
            end - ref <= allowed,
            f"highest RSS, last quarter {end:.1f} MiB vs second quarter {ref:.1f} MiB: "
            f"{end - ref:+.1f} MiB (allowed {allowed:.1f})",
        ),
        (
            "series bounded by the label space",
            samples[-1][3] <= bound,
            f"{samples[q1][3]:,} after the warm-up, {samples[-1][3]:,} at the end, bound {bound:,}",
        ),
        (
            "tracked tasks bounded",
            max(s[2] for s in samples) < 2 * held,
            f"at most {max(s[2] for s in samples):,} (workers hold up to {held:,})",
        ),
        (
            "every event counted",
            counted == publisher.published,
            f"{counted:,.0f} of {publisher.published:,}",
        ),
        (
            "every message reached the exporter",
            publisher.receivers == publisher.messages,
            f"{publisher.receivers:,} of {publisher.messages:,}",
        ),
        ("nothing skipped, no reconnect", skipped == 0 and reconnects == 0, ""),
        (
            "the publisher kept up",
            publisher.late_seconds <= LATE_ALLOWED * max(1, publisher.seconds)
            and publisher.seconds >= 0.99 * duration - 3,
            f"{publisher.seconds:,} seconds sent, {publisher.late_seconds} late "
            f"(allowed {LATE_ALLOWED:.0%})",
        ),
    ]
    failed = [c for c in checks if not c[1]]
    minutes = (time.monotonic() - started) / 60
    scrape_ms = [s[4] for s in samples]
    lines = [
        HEADER,
        "",
        f"Written by `bench/soak.py`: {args.minutes:g} minutes of steady traffic "
        f"({args.tasks_per_second:,} tasks/s, about "
        f"{publisher.published / max(1, publisher.seconds):,.0f} events/s, "
        f"{publisher.messages / max(1, publisher.seconds):,.0f} messages/s; churn every "
        f"{args.phase_seconds} s over {NAMES} task names, {WORKERS} workers and {QUEUES} queues, "
        f"{ACTIVE_NAMES}/{ACTIVE_WORKERS}/{ACTIVE_QUEUES} active at a time), a scrape every "
        f"{SCRAPE_EVERY:.0f} s (OpenMetrics, gzip). "
        + " ".join(p.replace("\n", " ") for p in __doc__.split("\n\n")[1:3]),
        "",
        f"![RSS of the exporter (MiB) against minutes; grey: the warm-up; green: "
        f"{RSS_FLAT_MIB:g} MiB above the lowest {LEVEL_WINDOW / 60:g}-minute median after it]"
        f"({PNG_PATH.name})",
        "",
        *facts,
        f"- Duration: {minutes:.1f} minutes in all; {n} samples"
        + (
            ""
            if args.minutes >= 120
            else f". **Shorter than the two hours of the issue ({args.minutes:g} minutes)**"
        ),
        f"- Checks: {len(checks) - len(failed)} of {len(checks)} passed"
        + ("" if not failed else " - **FAILED: " + "; ".join(c[0] for c in failed) + "**"),
        f"- RSS slope over the second half: {slope:+.1f} MiB per hour; scrapes: median "
        f"{statistics.median(scrape_ms):.0f} ms, max {max(scrape_ms):.0f} ms; publisher late "
        f"{publisher.late_seconds} of its seconds; backlog at the end "
        f"{backlog:,.0f} bytes; exporter CPU {exporter_cpu:,.0f} s in all, "
        f"{exporter_cpu / max(1, counted) * 1e6:.1f} µs per event",
        "- RSS by kind of mapping (`memory_map`), median of the first and of the last "
        f"{LEVEL_WINDOW / 60:g} minutes after the warm-up: "
        + ", ".join(
            f"{k} {by_kind(mapped[q1:], k, first=True):.1f} -> {by_kind(mapped[q1:], k):.1f} MiB"
            for k in MAP_KINDS
        ),
        "- Label values released or folded (celery_exporter_dropped_label_values_total): "
        + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(dropped.items())) or "none"),
        "",
        "| minute | RSS MiB | tracked tasks | series | scrape ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    step = max(1, n // 20)
    for i, (t, rss, tracked, series, ms) in enumerate(samples):
        if i % step == 0 or i == n - 1:
            lines.append(f"| {t / 60:.1f} | {rss:.1f} | {tracked:,} | {series:,} | {ms:.0f} |")
    lines += [
        "",
        "| check | result | details |",
        "|---|---|---|",
        *(f"| {name} | {'ok' if ok else 'FAILED'} | {d} |" for name, ok, d in checks),
    ]
    print("\n".join(lines))
    if not args.no_results:
        if samples:
            line_chart(
                PNG_PATH,
                [(s[0] / 60, s[1]) for s in samples],
                shade_until=warm_up_minutes,
                band=(level_lo, level_lo + RSS_FLAT_MIB),
            )
        replace_section(RESULTS_PATH, HEADER, lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
