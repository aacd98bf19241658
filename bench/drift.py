#!/usr/bin/env python
"""What the soak's slow RSS drift is: Python objects that grow, or allocator fragmentation.

Run ``.venv/bin/python bench/drift.py [--minutes 15] [--tasks-per-second 500]
[--scrape-every 1] [--tracemalloc 8]``. The old soak's steady workload (bench/ingest.py's:
10 task names, 10 workers, a label space filled within a minute) into a private
redis-server and the exporter daemon run under bench/drift_probe.py, which every
``--probe-every`` seconds records RSS, glibc's ``mallinfo2`` (bytes in use, free inside the
heap, mmapped), CPython's pymalloc arenas and, with ``--tracemalloc N``, a tracemalloc
snapshot. Scrapes (OpenMetrics, gzip) come every ``--scrape-every`` seconds: more often
than Prometheus's 15 s, so anything a scrape leaves behind shows sooner. Prints a table
over time and the biggest growth by allocation site between the first probe after the
warm-up and the last; writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
import scrape as scrape_bench

HERE = Path(__file__).resolve().parent


class Publisher(threading.Thread):
    def __init__(self, port: int, fmt: ingest.WireFormat, tasks_per_second: int) -> None:
        super().__init__(name="drift-publisher", daemon=True)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.fmt = fmt
        self.tasks_per_second = tasks_per_second
        self.workload = ingest.Workload(fmt.utcoffset, 7, names=10, workers=10)
        self.rng = random.Random(8)
        self.stop = threading.Event()
        self.published = 0

    def run(self) -> None:
        next_tick = time.monotonic()
        while not self.stop.is_set():
            stream = list(self.workload.task_stream(self.tasks_per_second))
            packed = ingest.pack(self.fmt, stream, batched=True, rng=self.rng)
            ingest.publish(self.client, packed.messages)
            self.published += packed.events
            next_tick += 1.0
            self.stop.wait(max(0.0, next_tick - time.monotonic()))


def smaps_kib(pid: int) -> dict[str, int]:
    """Resident KiB of a process by kind of mapping, from outside (it is not disturbed):
    ``heap`` (glibc's main arena, grown with brk), ``anon`` (every other anonymous mapping:
    CPython's 1 MiB pymalloc arenas, glibc's other arena, blocks of 256 KiB and more,
    thread stacks) and ``file`` (mapped libraries and files)."""
    out = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                fields = line.split()
                name = fields[5] if len(fields) > 5 else ""
                kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
            elif first == "Rss:":
                out[kind] += int(line.split()[1])
    return out


def watch(pid: int, minutes: float, every: float, out: Path) -> None:
    """Sample a running exporter's memory by mapping kind every ``every`` seconds."""
    started = time.monotonic()
    with out.open("a", buffering=1) as f:
        while time.monotonic() - started < minutes * 60:
            try:
                record = {"time": time.time(), **smaps_kib(pid)}
            except OSError:
                return
            f.write(json.dumps(record) + "\n")
            time.sleep(every)


def mib(b: float) -> str:
    return f"{b / 2**20:.2f}"


def report(outdir: Path, warm_up: float, top: int) -> None:
    probes = sorted(
        (json.loads(p.read_text()) for p in outdir.glob("probe-*.json")), key=lambda r: r["n"]
    )
    print(
        "| minute | RSS | RssAnon | RssFile | traced (tracemalloc) | tracemalloc's own | "
        "glibc in use | "
        "glibc free in heap | glibc mmapped | pymalloc arenas | pymalloc in blocks | "
        "gc objects |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    step = max(1, len(probes) // 15)
    for i, r in enumerate(probes):
        if i % step and i != len(probes) - 1:
            continue
        m, p = r["mallinfo2"], r["pymalloc"]
        print(
            f"| {r['seconds'] / 60:.1f} | {r['rss_kib'] / 1024:.2f} | "
            f"{r['status_kib']['RssAnon'] / 1024:.2f} | {r['status_kib']['RssFile'] / 1024:.2f} | "
            f"{mib(r.get('traced', 0))} | {mib(r.get('tracemalloc_overhead', 0))} | "
            f"{mib(m['uordblks'])} | {mib(m['fordblks'])} | {mib(m['hblkhd'])} | "
            f"{p.get('arenas allocated current', 0)} | "
            f"{mib(p.get('bytes in allocated blocks', 0))} | {r['gc_objects']:,} |"
        )
    after = [r for r in probes if r["seconds"] >= warm_up * 60]
    if len(after) < 2:
        return
    first, last = after[0], after[-1]
    hours = (last["seconds"] - first["seconds"]) / 3600
    print(f"\nFrom minute {first['seconds'] / 60:.1f} to {last['seconds'] / 60:.1f}:")
    for label, key in (
        ("RSS", lambda r: r["rss_kib"] * 1024),
        ("RssAnon", lambda r: r["status_kib"]["RssAnon"] * 1024),
        ("RssFile", lambda r: r["status_kib"]["RssFile"] * 1024),
        ("traced by tracemalloc", lambda r: r.get("traced", 0)),
        ("tracemalloc's own", lambda r: r.get("tracemalloc_overhead", 0)),
        ("glibc in use", lambda r: r["mallinfo2"]["uordblks"]),
        ("glibc free in heap", lambda r: r["mallinfo2"]["fordblks"]),
        ("glibc heap (arena)", lambda r: r["mallinfo2"]["arena"]),
        ("glibc mmapped", lambda r: r["mallinfo2"]["hblkhd"]),
        ("pymalloc in blocks", lambda r: r["pymalloc"].get("bytes in allocated blocks", 0)),
        (
            "pymalloc arenas (1 MiB each)",
            lambda r: r["pymalloc"].get("arenas allocated current", 0) * 2**20,
        ),
    ):
        d = key(last) - key(first)
        print(f"- {label}: {d / 2**20:+.2f} MiB ({d / 2**20 / hours:+.2f} MiB/h)")
    if "bucket_run_bytes" in last:
        print(
            "- native histograms' bucket runs (lists; snapshots of a scrape in progress "
            f"included): {first['bucket_runs']:,} runs, {first['bucket_run_slots']:,} buckets, "
            f"{mib(first['bucket_run_bytes'])} MiB -> {last['bucket_runs']:,} runs, "
            f"{last['bucket_run_slots']:,} buckets, {mib(last['bucket_run_bytes'])} MiB"
        )
    ta, tb = first["top_types"], last["top_types"]
    grew = sorted(((tb.get(k, 0) - ta.get(k, 0), k) for k in tb), reverse=True)[:8]
    print("- object counts that grew most: " + ", ".join(f"{k} {d:+,}" for d, k in grew))
    snaps = sorted(outdir.glob("snap-*.pickle"), key=lambda p: int(p.stem.split("-")[1]))
    if snaps:
        a = tracemalloc.Snapshot.load(str(outdir / f"snap-{first['n']}.pickle"))
        b = tracemalloc.Snapshot.load(str(snaps[-1]))
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        a, b = a.filter_traces(filters), b.filter_traces(filters)
        print(f"\nTop {top} growth by line:")
        for stat in b.compare_to(a, "lineno")[:top]:
            print(f"  {stat}")
        print(f"\nTop {top // 2} growth by traceback:")
        for stat in b.compare_to(a, "traceback")[: top // 2]:
            print(f"  {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+} blocks")
            for line in stat.traceback.format()[-12:]:
                print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--tasks-per-second", type=int, default=500)
    parser.add_argument("--scrape-every", type=float, default=1.0)
    parser.add_argument("--probe-every", type=float, default=30.0)
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames; 0: off")
    parser.add_argument("--warm-up", type=float, default=3.0, help="minutes")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--watch", type=int, help="only sample this PID's mappings")
    parser.add_argument("--watch-out", type=Path, default=Path("watch.jsonl"))
    parser.add_argument("--report", type=Path, help="only report an earlier run's directory")
    parser.add_argument("exporter_args", nargs="*", help="extra exporter flags (after --)")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report, args.warm_up, args.top)
        return 0
    if args.watch:
        watch(args.watch, args.minutes, args.probe_every, args.watch_out)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="cme-drift-"))
    outdir = workdir / "probes"
    ingest.log(f"probes in {outdir}")
    server = ingest.RedisServer(workdir)
    proc: subprocess.Popen[bytes] | None = None
    publisher: Publisher | None = None
    try:
        server.start()
        fmt = ingest.capture_wire_format(server)
        port = ingest.free_port()
        command = [
            sys.executable,
            str(HERE / "drift_probe.py"),
            str(outdir),
            str(args.probe_every),
            *(["--tracemalloc", str(args.tracemalloc)] if args.tracemalloc else []),
            "--",
            "--broker-url",
            server.url,
            "--listen-address",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            *args.exporter_args,
        ]
        log = (workdir / "exporter.log").open("wb")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while server.numpat() != 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((workdir / "exporter.log").read_text()[-2000:])
            time.sleep(0.2)
        ingest.log(f"exporter pid {proc.pid}")
        publisher = Publisher(server.port, fmt, args.tasks_per_second)
        publisher.start()
        t0 = time.monotonic()
        next_scrape = t0
        while time.monotonic() - t0 < args.minutes * 60:
            next_scrape += args.scrape_every
            time.sleep(max(0.0, next_scrape - time.monotonic()))
            scrape_bench.scrape(url, scrape_bench.PROMETHEUS_ACCEPT, True)
        publisher.stop.set()
        publisher.join(10)
        time.sleep(args.probe_every + 1)  # one probe after the traffic
        ingest.log(f"{publisher.published:,} events published")
    finally:
        if publisher is not None:
            publisher.stop.set()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        server.stop()
    report(outdir, args.warm_up, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
