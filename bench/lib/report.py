"""The report: machine and revision, the rate, memory and profile tables, and bench/RESULTS.md
(whose other benchmarks' sections are kept)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.procs import ROOT, mib
from lib.profiling import PROFILE_EVENTS, Profile
from lib.redis_server import RedisServer
from lib.runs import TARGET_RATIO, InFlight, MemoryPoint, Run
from lib.scraped import fmt_counts
from lib.workload import (
    BATCH_LIMIT,
    EARLY_FLUSH_PROBABILITY,
    FAILURE_RATE,
    HEARTBEAT_EVERY_TASKS,
    IN_FLIGHT_ROUNDS,
    IN_FLIGHT_TASKS,
    N_TASK_NAMES,
    N_WORKERS,
    PREFETCH,
)

# Sections of RESULTS.md written by the other scripts (matrix.py, scrape.py, memory.py,
# soak.py, backlog.py, slow_readers.py...) or by hand: kept when this script rewrites the file.
OTHER_SECTIONS = (
    "## Ingestion rate matrix",
    "## /metrics latency",
    "## Memory after 1,000,000 tasks",
    "## Soak",
    "## Memory drift",  # hand-written (bench/drift.py)
    "## HTTP listen backlog",
    "## Clients that do not read",
    "## Protobuf exposition",
    "## Reference subscribers",
    "## Redis queue sampling with 1,000,000 keys",
    "## Redesign (issue 16): before and after",
)


def machine_info(server: RedisServer, revision: str) -> list[tuple[str, str]]:
    from importlib.metadata import version

    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    versions = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in ("celery", "kombu", "redis", "prometheus_client", "celery-metrics-exporter")
    )
    return [
        ("exporter code (at the start)", revision),
        ("nproc", nproc or str(os.cpu_count())),
        ("CPU model", cpu_model),
        ("memory", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("packages", versions),
        ("hiredis", "yes" if _hiredis() else "no (redis-py's pure-Python parser)"),
        ("broker", server.version),
        ("load average at the start (1, 5, 15 min)", load_average()),
    ]


def load_average() -> str:
    """``uptime``'s load average: the machine is shared, so say how busy it was."""
    try:
        with open("/proc/loadavg") as f:
            return ", ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def _hiredis() -> bool:
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


def exporter_fingerprint() -> str:
    """sha256 over exporter/**/*.py: the code this run measures (checked again at the end)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def exporter_revision() -> str:
    """The git commit, and whether exporter/ differs from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("log", "-1", "--format=%h %s")
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "exporter")
    return f"{commit} (exporter/ {'has uncommitted changes' if dirty else 'as committed'})"


def utc_date() -> str:
    try:
        return subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())


SHAPE_NAMES = {"batched": "batched (`task.multi`)", "single": "single-event"}


@dataclass
class Pair:
    """A baseline run and, right after it, an exporter run (a fresh daemon) on the same flood."""

    baseline: Run
    exporter: Run
    idle: MemoryPoint  # the fresh exporter before the flood
    after: MemoryPoint  # and after it

    @property
    def ratio(self) -> float:
        return self.exporter.rate / self.baseline.rate


@dataclass
class Summary:
    """One shape and mode, over the repeats."""

    shape: str
    mode: str
    pairs: list[Pair]

    def runs(self, consumer: str) -> list[Run]:
        return [getattr(pair, consumer) for pair in self.pairs]

    def rate(self, consumer: str) -> float:
        runs = self.runs(consumer)
        return sum(r.rate for r in runs) / len(runs)

    def cpu_us(self, consumer: str) -> float:
        runs = self.runs(consumer)
        return sum(r.cpu_seconds for r in runs) / max(1, sum(r.consumed for r in runs)) * 1e6

    def peak_kib(self, consumer: str) -> int:
        return max(r.peak_rss_kib for r in self.runs(consumer))

    def lost(self, consumer: str) -> int:
        return sum(r.lost for r in self.runs(consumer))

    @property
    def ratio(self) -> float:
        return self.rate("exporter") / self.rate("baseline")

    @property
    def ratio_range(self) -> str:
        ratios = [pair.ratio for pair in self.pairs]
        if len(ratios) == 1:
            return f"{ratios[0]:.2f}"
        return f"{min(ratios):.2f}-{max(ratios):.2f}"


def rate_table(summaries: list[Summary]) -> list[str]:
    lines = [
        "| shape | measured | consumer | events/s | vs baseline | each pair | CPU µs/event "
        "| CPU vs baseline | peak RSS | lost |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        for consumer in ("baseline", "exporter"):
            is_base = consumer == "baseline"
            ratio = "1.00" if is_base else f"**{s.ratio:.2f}**"
            pairs = "" if is_base else s.ratio_range
            cpu_ratio = "1.00" if is_base else f"{s.cpu_us(consumer) / s.cpu_us('baseline'):.2f}"
            lines.append(
                f"| {SHAPE_NAMES[s.shape]} | {s.mode} | {consumer} | {s.rate(consumer):,.0f} "
                f"| {ratio} | {pairs} | {s.cpu_us(consumer):.1f} | {cpu_ratio} "
                f"| {mib(s.peak_kib(consumer))} | {s.lost(consumer):,} |"
            )
    return lines


def console_table(summaries: list[Summary]) -> str:
    head = (
        f"{'shape':<8} {'mode':<6} {'consumer':<9} {'events/s':>9} {'ratio':>6} "
        f"{'pairs':>10} {'CPU us/ev':>9} {'CPU ratio':>9} {'peak RSS':>10} {'lost':>5}"
    )
    out = [head, "-" * len(head)]
    for s in summaries:
        for consumer in ("baseline", "exporter"):
            is_base = consumer == "baseline"
            out.append(
                f"{s.shape:<8} {s.mode:<6} {consumer:<9} {s.rate(consumer):>9,.0f} "
                f"{1.0 if is_base else s.ratio:>6.2f} {'' if is_base else s.ratio_range:>10} "
                f"{s.cpu_us(consumer):>9.1f} {s.cpu_us(consumer) / s.cpu_us('baseline'):>9.2f} "
                f"{mib(s.peak_kib(consumer)):>10} {s.lost(consumer):>5,}"
            )
    return "\n".join(out)


def memory_table(points: list[MemoryPoint]) -> list[str]:
    return [
        "| when | RSS (/proc VmRSS) | `process_resident_memory_bytes` | highest RSS sampled "
        "on the way | tracked tasks |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {p.label} | {mib(p.rss_kib)} | {mib(p.metric_rss_kib)} | {mib(p.peak_kib)} "
            f"| {p.tracked:,} |"
            for p in points
        ),
    ]


def profile_section(
    profiles: list[Profile],
    heap: list[tuple[str, float]],
    variants: list[tuple[str, dict[str, float]]],
    date: str,
    command: str,
) -> list[str]:
    lines = [
        "## Profile",
        "",
        f"From `{command}` on `{date}`. cProfile (CPU-time clock) of the exporter's own "
        "consumer loop (`EventConsumer._consume` -> kombu -> `EventDispatcher.on_message`) run "
        "in the benchmark's process against the same Redis and floods; live mode. Profiling "
        "slows everything down, so read shares, not absolute times. The first "
        f"~{PROFILE_EVENTS:,} events of each flood.",
        "",
    ]
    for prof in profiles:
        lines += [
            f"### {SHAPE_NAMES[prof.shape]}: {prof.events:,} events, "
            f"{prof.cpu_seconds / max(prof.events, 1) * 1e6:.1f} µs CPU/event under the profiler",
            "",
            "Self time by package: "
            + ", ".join(f"{g} {pct:.0f}%" for g, pct in prof.groups if pct >= 0.5)
            + ".",
            "",
            "| function | calls | self % | cumulative % |",
            "|---|---:|---:|---:|",
            *(
                f"| `{name}` | {calls:,} | {own:.1f} | {cum:.1f} |"
                for name, calls, own, cum in prof.top
            ),
            "",
        ]
    if variants:
        lines += [
            "### What-if: the dispatcher alone (`EventDispatcher.on_message` on decoded bodies)",
            "",
            "In this process, best of 3, the same first events of each flood; changes applied "
            "by patching modules here, not by editing exporter/:",
            "",
            "| variant | batched µs/event | single-event µs/event |",
            "|---|---:|---:|",
            *(f"| {name} | {v['batched']:.2f} | {v['single']:.2f} |" for name, v in variants),
            "",
        ]
    if heap:
        lines += [
            "### Python heap with 100,000 tasks in flight (tracemalloc)",
            "",
            "A fresh `EventDispatcher` in this process, fed the in-flight rounds' message "
            "bodies; the traced heap after each step (envelope decoding excluded):",
            "",
            "| step | traced Python heap |",
            "|---|---:|",
            *(f"| {step} | {size / 2**20:.2f} MiB |" for step, size in heap),
            "",
        ]
    return lines


def grouped(checks: list[tuple[str, bool, str]]) -> list[tuple[str, str, str]]:
    """One row per run: checks named "<run>: <check>" share the row of <run>."""
    groups: dict[str, list[tuple[str, bool, str]]] = {}
    for name, ok, detail in checks:
        head, sep, tail = name.partition(": ")
        key, item = (head, tail) if sep else (name, "")
        groups.setdefault(key, []).append((item, ok, detail))
    rows: list[tuple[str, str, str]] = []
    for key, items in groups.items():
        failed = [item for item in items if not item[1]]
        result = f"{len(items)} ok" if not failed else f"**{len(failed)} FAILED**"
        details = "; ".join(
            (f"{item}: {detail}" if item else detail) + ("" if ok else " **(failed)**")
            for item, ok, detail in items
        )
        rows.append((key, result, details))
    return rows


def _section(text: str, header: str) -> list[str]:
    """The lines of a "## " section of ``text`` (up to the next one), or []."""
    start = text.find("\n" + header)
    if start < 0:
        return []
    end = text.find("\n## ", start + 1)
    body = text[start + 1 : end if end >= 0 else len(text)].rstrip()
    return [*body.split("\n"), ""]


def write_results(
    path: Path,
    *,
    command: str,
    date: str,
    machine: list[tuple[str, str]],
    server: RedisServer,
    buffer_limit: str,
    manifest: dict[str, Any],
    summaries: list[Summary],
    memory: list[MemoryPoint],
    in_flight: InFlight,
    exporter_command: str,
    channel_prefix: str,
    ready_seconds: float,
    wall_seconds: float,
    checks: list[tuple[str, bool, str]],
    profile: list[str],
) -> None:
    floods = manifest["floods"]
    batched, single = floods["batched"], floods["single"]
    failed = [c for c in checks if not c[1]]
    repeats = len(summaries[0].pairs)
    publish_times = [
        r.publish_seconds for s in summaries for p in s.pairs for r in (p.baseline, p.exporter)
    ]
    lines: list[str] = [
        "# Ingestion benchmark results",
        "",
        "Written by `bench/ingest.py`; `bench/README.md` explains each figure. Re-running the "
        "benchmark overwrites this file.",
        "",
        f"- Date: `{date}`",
        f"- Command: `{command}`",
        f"- Wall time: {wall_seconds:.0f} s (building the floods: "
        f"{manifest['build_seconds']:.1f} s of it)",
        f"- Checks: {len(checks) - len(failed)} of {len(checks)} passed"
        + ("" if not failed else " - **FAILED: " + "; ".join(c[0] for c in failed) + "**"),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine),
        "",
        "## Ingestion rate and CPU",
        "",
        *rate_table(summaries),
        "",
        f"Target: the exporter at >= {TARGET_RATIO:.0%} of the baseline's rate in both shapes, "
        f"no event lost. Each line is over {repeats} baseline-then-exporter pair(s) run back to "
        "back (a fresh exporter each time); *each pair* gives the spread of the pairs' ratios. "
        "**live**: the consumer drains while the publisher floods (they compete for the "
        "CPUs); **drain**: the consumer is paused (SIGSTOP) until the whole flood waits in "
        "Redis, then resumed and timed alone. CPU µs/event counts every thread of the "
        "consumer process. Peak RSS: the baseline's is mostly redis-py's read buffer, which "
        "the exporter compacts as it goes (see README). Publishing "
        f"a flood took {min(publish_times):.1f}-{max(publish_times):.1f} s.",
        "",
        "## Exporter memory",
        "",
        *memory_table([*memory, *in_flight.points]),
        "",
        f"In-flight scenario (a fresh exporter): `task-received` for {IN_FLIGHT_TASKS:,} new "
        "task ids (batched, as prefork workers send them) and no terminal event, then their "
        f"`task-succeeded`; {IN_FLIGHT_ROUNDS} rounds, each with new ids. 100,000 tracked "
        f"tasks cost {in_flight.task_bytes:.0f} bytes of RSS each (round 1). Memory is flat "
        "when later rounds need no more than the earlier ones; CPython keeps freed memory for "
        "reuse, so RSS stays near its high-water mark after the tasks complete.",
        "",
        "## Setup",
        "",
        f"- A private `redis-server` on 127.0.0.1:{server.port}, started and stopped by the "
        'benchmark, `--save ""`, `--appendonly no`. Its pub/sub client output buffer limit '
        "is raised to 0 0 0 (unlimited; `CONFIG GET client-output-buffer-limit` said "
        f"`{buffer_limit}`), so **the broker itself never drops a slow subscriber**: the "
        "flood waits in Redis and each consumer drains it at its own speed. (Redis's default "
        "for pub/sub, 32 MB hard / 8 MB for 60 s, disconnects a lagging subscriber.)",
        "- Messages are in the exact format of kombu's Redis transport: Celery's own "
        "`EventDispatcher` (with `buffer_group=['task']`, as prefork workers use it) "
        "published a sample, a raw `psubscribe` captured it, and the benchmark's encoder "
        "reproduced every captured message byte for byte before the run: channel "
        f"`{channel_prefix}<routing key>`, a JSON envelope (`body` base64 of the JSON event "
        "or list, `content-type: application/json`, `properties.body_encoding: base64`, "
        "`delivery_info`, a fresh `delivery_tag`), and events with the fields, in the order, "
        "Celery sends them.",
        f"- Workload: {N_TASK_NAMES} task names (skewed), {N_WORKERS} workers. Per task "
        "`task-received` (name, args/kwargs reprs, retries, eta, expires...), `task-started`, "
        f"then `task-succeeded` (result repr, runtime) or, {FAILURE_RATE:.0%} of the time, "
        f"`task-failed` (exception repr and traceback); each worker holds {PREFETCH} tasks "
        "(its events interleave); a `worker-heartbeat` from every worker per "
        f"{HEARTBEAT_EVERY_TASKS:,} tasks. Per shape: {batched['tasks']:,} tasks, "
        f"{batched['events']:,} events ({fmt_counts(batched['types'])}).",
        "- Batched shape (prefork/solo/threads workers): each worker's task events in "
        f"`task.multi` lists of up to {BATCH_LIMIT} ({EARLY_FLUSH_PROBABILITY:.0%} chance of an "
        "early flush after each event, as the worker's hub flushes), heartbeats alone: "
        f"{batched['messages']:,} messages, {batched['events'] / batched['messages']:.1f} "
        f"events per message, {batched['bytes'] / 2**20:.0f} MiB.",
        "- Single-event shape (gevent/eventlet workers, `task-sent`): the same events, one "
        f"per message: {single['messages']:,} messages, {single['bytes'] / 2**20:.0f} MiB.",
        "- Publisher: a separate process replays the pre-encoded messages with redis-py "
        "`PUBLISH` pipelines (up to 1,000 commands or 1 MiB each) as fast as it can; the "
        "replies confirm each message reached exactly one subscriber.",
        "- Consumers, one at a time, each a subprocess of its own: the **baseline** (redis-py "
        "`psubscribe` on the event pattern, `json.loads` of the envelope, base64 decode, "
        "`json.loads` of the body, count the events, nothing else), then the **exporter** "
        f"(`{exporter_command}`, ready about {ready_seconds:.1f} s after start).",
        "- Rate = events / (first `PUBLISH`, or the resume in drain mode -> last event "
        "consumed), on this host's clock (for the exporter, its "
        "`celery_exporter_last_event_timestamp_seconds`). Completion is detected from /proc "
        "(the exporter goes idle), then one scrape checks the counts, so scrapes do not slow "
        "the flood.",
        "",
        "## Checks",
        "",
        "| checks | result | details |",
        "|---|---|---|",
        *(f"| {group} | {result} | {details} |" for group, result, details in grouped(checks)),
        "",
    ]
    existing = path.read_text() if path.exists() else ""
    # A Profile section from an earlier --profile run (it is dated) is kept unless this run
    # made a new one; a hand-written "## Notes" section is always kept, at the end.
    lines += profile or _section(existing, "## Profile")
    # Sections the other bench scripts write (bench/results.py) are kept as they are.
    for header in OTHER_SECTIONS:
        lines += _section(existing, header)
    lines += _section(existing, "## Notes")
    path.write_text("\n".join(lines))
