#!/usr/bin/env python
"""Clients that ask for /metrics and never read: the exporter's HTTP server with a large
exposition (20 MB, as thousands of task names make) and ``--clients`` such clients.

Run ``.venv/bin/python bench/slow_readers.py [--clients N] [--write-timeout S]``. The server
runs in this process (``ExporterHTTPServer``, the exporter's own renderer); each client sets a
4 KiB receive buffer, sends ``GET /metrics`` and reads nothing. Reports the process's RSS idle,
at its peak while the clients hold their responses, and once the write deadline has dropped
them; writes the "## Clients that do not read" section of bench/RESULTS.md and exits 1 if a
client is still held after the deadline or RSS does not come back within 50 MiB of idle.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.results import RESULTS_PATH, replace_section, run_facts
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.web import ExporterHTTPServer

HEADER = "## Clients that do not read"
VALUES, VALUE_BYTES = 100, 200_000


class BigCollector:
    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("big", "A large exposition.", labels=["value"])
        for i in range(VALUES):
            family.add_metric([f"{i}-" + "x" * VALUE_BYTES], 1.0)
        yield family


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def writers() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--write-timeout", type=float, default=5.0)
    args = parser.parse_args()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BigCollector())
    server = ExporterHTTPServer(
        ("127.0.0.1", 0), registry, "-", lambda: (True, "ok"), write_timeout=args.write_timeout
    )
    server.start()
    port = server.server_address[1]
    idle = rss_mib()
    clients = []
    started = time.monotonic()
    for _ in range(args.clients):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        clients.append(client)
    peak, held = idle, 0
    while time.monotonic() - started < args.write_timeout * 3 + 10:
        peak = max(peak, rss_mib())
        held = writers()
        if held == 0 and time.monotonic() - started > 1:
            break
        time.sleep(0.1)
    dropped_after = time.monotonic() - started
    after = rss_mib()
    for client in clients:
        client.close()
    server.stop()
    lines = [
        HEADER,
        "",
        *run_facts(
            f"bench/slow_readers.py --clients {args.clients} --write-timeout {args.write_timeout:g}"
        ),
        f"- {args.clients} clients send `GET /metrics` (a {VALUES * VALUE_BYTES / 1e6:.0f} MB "
        "body) and never read; the server's write deadline is "
        f"{args.write_timeout:g} s (`--web-write-timeout`, 30 s by default).",
        "",
        "| RSS idle | RSS peak while held | all dropped after | RSS after | still held |",
        "|---|---|---|---|---|",
        f"| {idle:.0f} MiB | {peak:.0f} MiB | {dropped_after:.1f} s | {after:.0f} MiB | {held} |",
        "",
        "Without a deadline (before issue 20) the clients held their threads and bodies for as "
        "long as they stayed connected.",
    ]
    print("\n".join(lines))
    replace_section(RESULTS_PATH, HEADER, lines)
    if held or after > idle + 50:
        sys.exit(1)


if __name__ == "__main__":
    main()
