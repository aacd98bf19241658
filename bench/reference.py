#!/usr/bin/env python
"""A harder baseline: a hiredis + orjson reference subscriber, against ingest.py's redis-py
one and the exporter, with and without hiredis.

Run ``.venv/bin/python bench/reference.py [--events N] [--repeat N]`` after
``.venv/bin/pip install hiredis`` (not a dependency of the exporter; see below). It reuses
bench/lib/ (a private redis-server, kombu's exact wire format, the publisher process,
the drain-mode measurement: each consumer is paused while the whole flood is published,
then resumed and timed alone) and measures, per shape (batched ``task.multi`` and one event
per message), each in a fresh process:

- ``redis-py``: ingest.py's baseline, redis-py ``psubscribe`` + ``json`` + base64, with
  redis-py's pure-Python parser (hiredis hidden from it);
- ``hiredis+orjson``: the fastest a Python subscriber can be: a raw socket, ``hiredis.Reader``
  for the replies, ``orjson`` for the envelope and the body, ``binascii`` for base64;
  nothing else (no redis-py, no kombu);
- the exporter as shipped (pure-Python parser: hiredis hidden), and the exporter with
  hiredis importable, which redis-py then uses by itself.

hiredis is hidden from a process by a ``PYTHONPATH`` entry whose ``hiredis`` module raises
ImportError, as on an install without it; each exporter's ``/proc/<pid>/maps`` is checked
for the hiredis library, so the figures say what they measured. Writes the "## Reference
subscribers" section of bench/RESULTS.md; exits 1 if a check fails (an event lost, or
hiredis loaded where hidden or absent where wanted).
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.baseline import Baseline
from lib.exporter_process import Exporters
from lib.procs import log
from lib.publisher import Publisher
from lib.redis_server import RedisServer
from lib.results import RESULTS_PATH, replace_section, run_facts
from lib.runs import Run, run_baseline, run_exporter_flood
from lib.wire import WireFormat, capture_wire_format
from lib.workload import QUICK_EVENTS, SHAPES

HEADER = "## Reference subscribers"
CONSUMERS = ("redis-py", "hiredis+orjson", "exporter", "exporter + hiredis")


# --------------------------------------------------------------------------------------------
# the hiredis + orjson subscriber (runs as `reference.py --role baseline`)
# --------------------------------------------------------------------------------------------


def _command(*parts: str) -> bytes:
    encoded = [p.encode() for p in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)


def fast_main(port: int, pattern: str, expect: int, idle_seconds: float) -> None:
    """PSUBSCRIBE on a raw socket; hiredis parses the replies, orjson decodes the envelope
    and its base64 body; count events. The same report protocol as baseline_main."""
    import hiredis
    import orjson

    loads = orjson.loads
    a2b = binascii.a2b_base64
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_command("PSUBSCRIBE", pattern))
    reader = hiredis.Reader()
    while True:  # the psubscribe confirmation: from here on nothing published is missed
        reader.feed(sock.recv(4096))
        reply = reader.gets()
        if reply is not False and reply[0] == b"psubscribe":
            break
    print("READY", flush=True)
    events = messages = 0
    first = last = 0.0
    waiting_since = time.time()
    sock.settimeout(0.5)
    recv, feed, gets = sock.recv, reader.feed, reader.gets
    while events < expect:
        try:
            data = recv(1 << 20)
        except TimeoutError:
            if time.time() - (last or waiting_since) > (idle_seconds if last else 120.0):
                break
            continue
        if not data:
            break
        feed(data)
        while (reply := gets()) is not False:
            envelope = loads(reply[3])
            body = loads(a2b(envelope["body"]))
            events += len(body) if type(body) is list else 1
            messages += 1
        last = time.time()
        if not first:
            first = last
    print(json.dumps({"events": events, "messages": messages, "first": first, "last": last}))
    sys.stdout.flush()
    sys.stdin.read()  # let the parent read our CPU time before we exit


# --------------------------------------------------------------------------------------------
# hiding hiredis, checking what a process loaded
# --------------------------------------------------------------------------------------------


class Hider:
    """A directory whose ``hiredis`` module raises ImportError, for ``PYTHONPATH``."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "no-hiredis"
        self.path.mkdir()
        (self.path / "hiredis.py").write_text(
            'raise ModuleNotFoundError("hiredis hidden by bench/reference.py", name="hiredis")\n'
        )

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return dict(
            os.environ, PYTHONPATH=f"{self.path}{os.pathsep}{path}" if path else str(self.path)
        )

    @contextmanager
    def hidden(self) -> Iterator[None]:
        """While starting a process that inherits the environment (ingest's exporters)."""
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = self.env()["PYTHONPATH"]
        try:
            yield
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved


def loaded_hiredis(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "hiredis" in f.read()


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def measure(
    consumer: str,
    server: RedisServer,
    fmt: WireFormat,
    publisher: Publisher,
    exporters: Exporters,
    hider: Hider,
    shape: str,
) -> tuple[Run, list[tuple[str, bool, str]]]:
    checks: list[tuple[str, bool, str]] = []
    if consumer in ("redis-py", "hiredis+orjson"):
        script = None if consumer == "redis-py" else Path(__file__).resolve()
        env = hider.env() if consumer == "redis-py" else None

        def factory(port: int, pattern: str, expect: int) -> Baseline:
            return Baseline(port, pattern, expect, script=script, env=env)

        run = run_baseline(server, fmt, publisher, shape, "drain", factory, consumer)
    else:
        wanted = consumer == "exporter + hiredis"
        if wanted:
            exporter = exporters.start()
        else:
            with hider.hidden():
                exporter = exporters.start()
        try:
            loaded = loaded_hiredis(exporter.pid)
            checks.append(
                (f"{consumer} {shape}: hiredis {'loaded' if wanted else 'not loaded'}",
                 loaded == wanted, f"hiredis in /proc/{exporter.pid}/maps: {loaded}")
            )  # fmt: skip
            run = run_exporter_flood(exporter, publisher, shape, "drain")
            run.consumer = consumer
        finally:
            exporter.stop()
    return run, checks + [(f"{consumer} {shape}: {n}", ok, d) for n, ok, d in run.checks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=QUICK_EVENTS)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pattern", default="", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "baseline":
        fast_main(args.port, args.pattern, args.expect, idle_seconds=5.0)
        return 0
    try:
        import hiredis  # noqa: F401
    except ImportError:
        sys.exit("bench/reference.py needs hiredis: .venv/bin/pip install hiredis")

    workdir = Path(tempfile.mkdtemp(prefix="cme-reference-"))
    hider = Hider(workdir)
    server = RedisServer(workdir)
    exporters = Exporters(server, workdir)
    publisher: Publisher | None = None
    runs: dict[tuple[str, str], list[Run]] = {}
    checks: list[tuple[str, bool, str]] = []
    try:
        server.start()
        fmt = capture_wire_format(server)
        log(f"building ~{args.events:,} events per shape in the publisher process...")
        publisher = Publisher(server.port, fmt, args.events, args.seed, in_flight_rounds=0)
        for shape in SHAPES:
            for rep in range(args.repeat):
                for consumer in CONSUMERS:
                    run, run_checks = measure(
                        consumer, server, fmt, publisher, exporters, hider, shape
                    )
                    checks += run_checks
                    runs.setdefault((shape, consumer), []).append(run)
                    log(
                        f"{shape} #{rep + 1} {consumer}: {run.rate:,.0f} events/s, "
                        f"{run.cpu_us_per_event:.2f} µs CPU/event, lost {run.lost}"
                    )
    finally:
        if publisher is not None:
            publisher.close()
        for exporter in exporters.started:
            exporter.stop()
        server.stop()

    def cpu(shape: str, consumer: str) -> float:
        return statistics.median(r.cpu_us_per_event for r in runs[(shape, consumer)])

    def rate(shape: str, consumer: str) -> float:
        return statistics.median(r.rate for r in runs[(shape, consumer)])

    lines = [
        HEADER,
        "",
        *run_facts(f"python bench/reference.py --events {args.events} --repeat {args.repeat}"),
        "",
        f"Drain mode (each consumer paused while the flood is published, then timed alone), "
        f"{args.events:,} events per shape, 100 task names, 100 workers; median of "
        f"{args.repeat} runs, each in a fresh process. CPU per event from /proc.",
        "",
        "| shape | consumer | events/s | CPU µs/event | CPU vs redis-py | CPU vs hiredis+orjson |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for shape in SHAPES:
        for consumer in CONSUMERS:
            c = cpu(shape, consumer)
            lines.append(
                f"| {shape} | {consumer} | {rate(shape, consumer):,.0f} | {c:.2f} | "
                f"{c / cpu(shape, 'redis-py'):.2f}x | {c / cpu(shape, 'hiredis+orjson'):.2f}x |"
            )
    gains = {
        shape: 1 - cpu(shape, "exporter + hiredis") / cpu(shape, "exporter") for shape in SHAPES
    }
    lines += [
        "",
        "hiredis in the exporter (redis-py uses it by itself when it is installed): "
        + ", ".join(f"{shape}: {gain:.0%} less CPU per event" for shape, gain in gains.items())
        + ".",
        "",
        "Checks: "
        + (
            "all passed."
            if all(ok for _, ok, _ in checks)
            else "; ".join(f"{n}: FAILED ({d})" for n, ok, d in checks if not ok)
        ),
    ]
    if not args.no_results:
        replace_section(RESULTS_PATH, HEADER, lines)
    print("\n".join(lines))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
