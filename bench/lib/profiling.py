"""``--profile``: cProfile of the exporter's consumer loop in this process, tracemalloc of the
dispatcher's heap, and what-if variants of the hot path."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from dataclasses import dataclass

from lib.procs import ROOT
from lib.publisher import Publisher
from lib.redis_server import RedisServer
from lib.workload import IN_FLIGHT_ROUNDS, SHAPES

PROFILE_EVENTS = 60_000  # about this many events per shape under the profiler


# The dispatcher alone is fed: its exporter never connects.
UNREACHABLE = "redis://127.0.0.1:1/0"


@dataclass
class Profile:
    shape: str
    events: int
    cpu_seconds: float
    top: list[tuple[str, int, float, float]]  # function, calls, self %, cumulative %
    groups: list[tuple[str, float]]  # package, self %


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return filename


def _group(filename: str) -> str:
    short = _short(filename)
    if short.startswith("~") or short.startswith("<"):
        return "builtins (C: json, base64, dict...)"
    top = short.split("/", 1)[0]
    if top in ("exporter", "kombu", "redis", "celery", "prometheus_client"):
        return top
    return "stdlib (Python)" if filename != short else top


def profile_messages(publisher: Publisher, shape: str) -> int:
    """How many of a flood's first messages carry about PROFILE_EVENTS events."""
    flood = publisher.flood(shape)
    return max(1, round(PROFILE_EVENTS * int(flood["messages"]) / int(flood["events"])))


def profile_exporter(server: RedisServer, publisher: Publisher, shape: str) -> Profile:
    """Run the exporter's own consumer loop in this thread under cProfile (CPU time)."""
    import cProfile
    import pstats

    from exporter.cli import settings_from_args
    from exporter.daemon import Exporter

    exporter = Exporter(settings_from_args(["--broker-url", server.url]))
    consumer = exporter.primary.consumer
    counts = exporter.primary.health.events.values
    limit = profile_messages(publisher, shape)

    def trigger() -> None:
        """Publish once subscribed; stop the loop when the events stop coming."""
        try:
            deadline = time.monotonic() + 30
            while server.numpat() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            publisher.start_publish(shape, limit)
            publisher.result()
            seen = -1.0
            while (now := sum(list(counts.values()))) != seen:
                seen = now
                time.sleep(0.3)
        finally:
            consumer.stopping.set()

    threading.Thread(target=trigger, daemon=True).start()
    profiler = cProfile.Profile(time.process_time)
    conn = exporter.primary.app.connection_for_read()
    cpu0 = time.process_time()
    profiler.enable()
    try:
        consumer._consume(conn)
    finally:
        profiler.disable()
        cpu = time.process_time() - cpu0
        conn.release()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top = [
        (f"{_short(f)}:{line} {name}", int(v[1]), 100 * v[2] / total, 100 * v[3] / total)
        for (f, line, name), v in rows
    ]
    groups: dict[str, float] = {}
    for (f, _, _), v in entries.items():
        groups[_group(f)] = groups.get(_group(f), 0.0) + 100 * v[2] / total
    ranked = sorted(groups.items(), key=lambda kv: kv[1], reverse=True)
    return Profile(shape, int(sum(counts.values())), cpu, top, ranked)


def what_if(publisher: Publisher) -> list[tuple[str, dict[str, float]]]:
    """CPU per event of ``EventDispatcher.on_message`` alone, as is and with two changes.

    The changes are applied by patching modules in this process only (nothing under
    exporter/ is edited), and undone afterwards: a memo in front of ``label_value`` (20
    hostnames and 100 task names recur millions of times), and ``orjson.loads`` for the body.
    """
    import functools

    import exporter.events.decode as decode_module
    from exporter.cli import settings_from_args
    from exporter.daemon import Exporter
    from exporter.labels import label_value

    bodies: dict[str, list[bytes]] = {}
    for shape in SHAPES:
        messages = publisher.messages(shape, profile_messages(publisher, shape))
        bodies[shape] = [base64.b64decode(json.loads(p)["body"]) for _, p in messages]

    def measure() -> dict[str, float]:
        out: dict[str, float] = {}
        for shape, items in bodies.items():
            best = float("inf")
            for _ in range(3):
                exporter = Exporter(settings_from_args(["--broker-url", UNREACHABLE]))
                on_message = exporter.primary.dispatcher.on_message
                t0 = time.process_time()
                for body in items:
                    on_message(body, "application/json")
                cpu = time.process_time() - t0
                events = sum(exporter.primary.health.events.values.values())
                best = min(best, cpu / events * 1e6)
            out[shape] = best
        return out

    memo = functools.lru_cache(maxsize=8192)(label_value)

    def memo_label_value(value: object, max_length: int = 200) -> str:
        return memo(value, max_length) if type(value) is str else label_value(value, max_length)

    results = [("as is", measure())]
    saved_json = getattr(decode_module, "json")  # noqa: B009 - not an exported name
    users = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("exporter.") and getattr(module, "label_value", None) is label_value
    ]
    try:
        for module in users:
            module.label_value = memo_label_value  # type: ignore[attr-defined]
        results.append(("label_value memoised", measure()))
        try:
            import orjson
        except ImportError:
            return results

        class _OrJSON:
            loads = staticmethod(orjson.loads)

        setattr(decode_module, "json", _OrJSON)  # noqa: B010
        results.append(("+ orjson.loads for the body", measure()))
    finally:
        for module in users:
            module.label_value = label_value  # type: ignore[attr-defined]
        setattr(decode_module, "json", saved_json)  # noqa: B010
    return results


def heap_check(publisher: Publisher) -> list[tuple[str, float]]:
    """tracemalloc: the Python heap of a fresh dispatcher fed the in-flight rounds."""
    import tracemalloc

    from exporter.cli import settings_from_args
    from exporter.daemon import Exporter

    steps: list[tuple[str, list[bytes]]] = []
    for round_no in range(1, IN_FLIGHT_ROUNDS + 1):
        for phase in ("received", "succeeded"):
            messages = publisher.messages(f"inflight{round_no}-{phase}")
            # Decoding the envelopes is kombu's part: done before tracing starts.
            bodies = [base64.b64decode(json.loads(p)["body"]) for _, p in messages]
            steps.append((f"round {round_no}: {phase}", bodies))
            del messages
    exporter = Exporter(settings_from_args(["--broker-url", UNREACHABLE]))
    on_message = exporter.primary.dispatcher.on_message
    out: list[tuple[str, float]] = []
    tracemalloc.start()
    try:
        for step, bodies in steps:
            for body in bodies:
                on_message(body, "application/json")
            out.append((step, float(tracemalloc.get_traced_memory()[0])))
    finally:
        tracemalloc.stop()
    return out
