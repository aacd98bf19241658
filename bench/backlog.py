#!/usr/bin/env python
"""The HTTP listen backlog under a burst of new connections: Python's default (5) against
the exporter's (``exporter.web.LISTEN_BACKLOG``), same run, same machine.

Run ``.venv/bin/python bench/backlog.py [--clients N] [--seconds S]``. For each backlog it
starts the exporter's HTTP server (``ExporterHTTPServer``, a registry with the build info
only) in a subprocess, then ``--clients`` clients (processes x threads) each open a new
connection per request to ``/healthz`` for ``--seconds``. It reports requests, latency
percentiles, and the kernel's ``TcpExtListenOverflows`` and ``ListenDrops`` deltas (system
wide: other load on the machine adds to them). Writes the "## HTTP listen backlog" section
of bench/RESULTS.md; exits 1 if the exporter's backlog overflowed or a request failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.results import RESULTS_PATH, replace_section, run_facts

ROOT = Path(__file__).resolve().parents[1]
HEADER = "## HTTP listen backlog"
PROCESSES = 5

SERVER = """
import sys, time
from prometheus_client import CollectorRegistry
from exporter.web import ExporterHTTPServer
ExporterHTTPServer.request_queue_size = int(sys.argv[1])
server = ExporterHTTPServer(("127.0.0.1", 0), CollectorRegistry(), "-", lambda: (True, "ok"))
server.start()
print(server.server_address[1], flush=True)
sys.stdin.read()
"""


def netstat() -> dict[str, int]:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    return {}


def client_process(
    port: int, threads: int, seconds: float, out: multiprocessing.Queue[Any]
) -> None:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"

    def loop() -> None:
        mine: list[float] = []
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(request)
                    while sock.recv(4096):
                        pass
                mine.append(time.monotonic() - started)
            except OSError:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((latencies, errors[0]))


def run(backlog: int, clients: int, seconds: float) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(backlog)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        before = netstat()
        out: multiprocessing.Queue[Any] = multiprocessing.Queue()
        per = max(1, clients // PROCESSES)
        procs = [
            multiprocessing.Process(target=client_process, args=(port, per, seconds, out))
            for _ in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        latencies: list[float] = []
        errors = 0
        for _ in procs:
            got, failed = out.get()
            latencies += got
            errors += failed
        for proc in procs:
            proc.join()
        after = netstat()
    finally:
        server.kill()
        server.wait()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {
        "backlog": backlog,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": latencies[-1] * 1000,
        "overflows": after.get("ListenOverflows", 0) - before.get("ListenOverflows", 0),
        "drops": after.get("ListenDrops", 0) - before.get("ListenDrops", 0),
    }


def main() -> None:
    from exporter.web import LISTEN_BACKLOG

    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    rows = [run(backlog, args.clients, args.seconds) for backlog in (5, LISTEN_BACKLOG)]
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    lines = [
        HEADER,
        "",
        *run_facts(f"bench/backlog.py --clients {args.clients} --seconds {args.seconds:g}"),
        f"- {args.clients} clients ({PROCESSES} processes), a new connection per `/healthz` "
        f"request, {args.seconds:g} s per backlog; net.core.somaxconn {somaxconn}.",
        "",
        "| backlog | requests | errors | p50 ms | p99 ms | max ms | ListenOverflows | "
        "ListenDrops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backlog']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['overflows']} | {r['drops']} |"
        )
        print(r)
    replace_section(RESULTS_PATH, HEADER, lines)
    if rows[-1]["overflows"] or rows[-1]["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
