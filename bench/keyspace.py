#!/usr/bin/env python
"""Redis queue sampling on a Redis holding 1,000,000 unrelated keys: the exporter's own
sample time and the Redis CPU it costs, against the same queues in an otherwise empty Redis
(same run), and against one full ``SCAN`` pass per sample (what the sampler did before it
walked the keyspace in bounded steps).

Run ``.venv/bin/python bench/keyspace.py [--keys N] [--samples N]`` (part of ``make bench``).
A private redis-server; 20 queues filled by a real kombu producer configured with
``priority_steps=list(range(10))`` (one message per priority and queue), plus one queue
only kombu's bindings name; then ``--keys`` unrelated string keys. The sampler is the
exporter's ``RedisQueueSource`` given no transport option (the priority layout must be
found). Redis CPU is ``used_cpu_user + used_cpu_sys`` from ``INFO cpu`` over the samples.
Checks: every message counted on every sample, every priority series present, the
binding-only queue found once the walk has gone round. Writes the "## Redis queue sampling
with 1,000,000 keys" section of bench/RESULTS.md; exits 1 if a check fails or the target
(Redis CPU per sample under 20 ms, sample under 100 ms median) is missed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery import Celery
from lib.redis_server import RedisServer
from lib.results import RESULTS_PATH, replace_section, run_facts

from exporter.sources.redis_keyspace import SCAN_CALLS_PER_SAMPLE, SCAN_COUNT
from exporter.sources.redis_queues import RedisQueueSource

HEADER = "## Redis queue sampling with 1,000,000 keys"
QUEUES = [f"q{i:02d}" for i in range(20)]
BINDING_ONLY = "only_in_bindings"
TARGET_REDIS_CPU_MS = 20.0
TARGET_SAMPLE_MS = 100.0


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fill_queues(url: str) -> None:
    app = Celery(broker=url)
    app.conf.broker_transport_options = {"priority_steps": list(range(10))}
    with app.producer_or_acquire() as producer:
        for queue in QUEUES:
            for priority in range(10):
                app.send_task("bench.noop", queue=queue, priority=priority, producer=producer)
        app.send_task("bench.noop", queue=BINDING_ONLY, producer=producer)


def fill_unrelated(client: Any, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"user:session:{i}", "x")
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def measure(url: str, client: Any, samples: int) -> dict[str, Any]:
    """``samples`` samples by a fresh source; per-sample wall times, Redis CPU, checks."""
    source = RedisQueueSource(Celery(broker=url), {}, timeout=10.0)
    walls: list[float] = []
    wrong: list[str] = []
    binding_found_after: int | None = None
    cpu_before = redis_cpu(client)
    try:
        for i in range(samples):
            started = time.perf_counter()
            sample = source.sample(list(QUEUES))
            walls.append(time.perf_counter() - started)
            for queue in QUEUES:
                qs = sample.queues[queue]
                if qs.ready != 10 or set((qs.by_priority or {}).keys()) != {
                    str(p) for p in range(10)
                }:
                    wrong.append(f"sample {i}: {queue} ready={qs.ready} {qs.by_priority}")
            if binding_found_after is None and BINDING_ONLY in sample.queues:
                binding_found_after = i + 1
    finally:
        source.close()
    cpu = redis_cpu(client) - cpu_before
    return {
        "walls": walls,
        "cpu_per_sample": cpu / samples,
        "wrong": wrong,
        "binding_found_after": binding_found_after,
        "passes": source.walk.passes,
    }


def full_scan_pass(client: Any, repeats: int) -> tuple[float, float]:
    """(wall, Redis CPU) of one full SCAN pass for kombu's bindings, as sampled before."""
    walls = []
    cpu_before = redis_cpu(client)
    for _ in range(repeats):
        started = time.perf_counter()
        for _key in client.scan_iter(match="_kombu.binding.*", count=1000):
            pass
        walls.append(time.perf_counter() - started)
    return statistics.median(walls), (redis_cpu(client) - cpu_before) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    # The sampler warns once per queue about the priority layout: expected here.
    logging.getLogger("exporter.sources.redis_priorities").setLevel(logging.ERROR)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-keyspace-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            client = server.client()
            fill_queues(server.url)
            empty = measure(server.url, client, args.samples)
            fill_unrelated(client, args.keys)
            dbsize = int(client.dbsize())
            big = measure(server.url, client, args.samples)
            old_wall, old_cpu = full_scan_pass(client, 3)
        finally:
            server.stop()
    walks_per_pass = -(-dbsize // (SCAN_COUNT * SCAN_CALLS_PER_SAMPLE))
    checks = {
        "every message and priority counted, empty Redis": not empty["wrong"],
        "every message and priority counted, 1,000,000 keys": not big["wrong"],
        "binding-only queue found in the first sample, empty Redis": empty["binding_found_after"]
        == 1,
        "binding-only queue found once the walk went round, 1,000,000 keys": big[
            "binding_found_after"
        ]
        is not None
        and big["binding_found_after"] <= walks_per_pass + 1,
        f"Redis CPU per sample < {TARGET_REDIS_CPU_MS:g} ms": big["cpu_per_sample"] * 1000
        < TARGET_REDIS_CPU_MS,
        f"median sample < {TARGET_SAMPLE_MS:g} ms": statistics.median(big["walls"]) * 1000
        < TARGET_SAMPLE_MS,
    }

    def row(label: str, m: dict[str, Any]) -> str:
        walls = sorted(m["walls"])
        p90 = walls[int(len(walls) * 0.9) - 1]
        return (
            f"| {label} | {statistics.median(walls) * 1000:.1f} ms | {p90 * 1000:.1f} ms | "
            f"{m['cpu_per_sample'] * 1000:.1f} ms | {m['binding_found_after']} |"
        )

    lines = [
        HEADER,
        "",
        *run_facts(f".venv/bin/python bench/keyspace.py --keys {args.keys}"),
        f"- Wall time: {time.time() - started:.0f} s",
        f"- Checks: {sum(checks.values())} of {len(checks)} passed",
        "",
        f"20 queues x 10 priorities (producers on `priority_steps=list(range(10))`, the "
        f"sampler given no option), one queue named only by kombu's bindings; {args.samples} "
        f"samples by a fresh `RedisQueueSource` each time. Database: {dbsize:,} keys.",
        "",
        "| Redis | sample, median | sample, p90 | Redis CPU per sample | samples until the "
        "binding-only queue is found |",
        "|---|---:|---:|---:|---:|",
        row("the queues only", empty),
        row(f"plus {args.keys:,} unrelated keys", big),
        f"| before: one full `SCAN` pass per sample (bindings) | {old_wall * 1000:.1f} ms | | "
        f"{old_cpu * 1000:.1f} ms | 1 |",
        "",
        f"The walk makes at most {SCAN_CALLS_PER_SAMPLE} `SCAN` calls of `COUNT "
        f"{SCAN_COUNT}` per sample, so a pass over {dbsize:,} keys takes {walks_per_pass} "
        "samples; queues named by workers, `task-sent` or `--queues` are counted from the "
        "first sample whatever the database holds (the check above, on every sample). "
        f"Targets: Redis CPU per sample under {TARGET_REDIS_CPU_MS:g} ms, median sample "
        f"under {TARGET_SAMPLE_MS:g} ms.",
        "",
        *(f"- {'ok' if ok else 'FAILED'}: {name}" for name, ok in checks.items()),
    ]
    replace_section(RESULTS_PATH, HEADER, lines)
    print("\n".join(lines))
    for problem in (empty["wrong"] + big["wrong"])[:10]:
        print("wrong:", problem)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
