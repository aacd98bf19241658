"""The HTTP server's mechanics over real sockets: a client that asks for /metrics and never
reads is dropped at the write deadline (and the body it held is freed), and the listen
backlog takes a burst of new connections (issue 20, defect 6)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.web import LISTEN_BACKLOG, ExporterHTTPServer
from tests.support.waiting import wait_for

WRITE_TIMEOUT = 1.0
# A body far larger than what the kernel buffers of both ends hold (4 MiB each at most here).
BIG_VALUES = 100
VALUE_BYTES = 200_000


class BigCollector:
    """A 20 MB exposition, as thousands of task names make."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("big", "A large exposition.", labels=["value"])
        for i in range(BIG_VALUES):
            family.add_metric([f"{i}-" + "x" * VALUE_BYTES], 1.0)
        yield family


@pytest.fixture
def server() -> Iterator[ExporterHTTPServer]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BigCollector())
    http = ExporterHTTPServer(
        ("127.0.0.1", 0),
        registry,
        "redis://127.0.0.1:1/0",
        lambda: (True, "ok"),
        write_timeout=WRITE_TIMEOUT,
    )
    http.start()
    yield http
    http.stop()


def test_a_client_that_does_not_read_is_dropped_at_the_write_deadline(
    server: ExporterHTTPServer,
) -> None:
    port = server.server_address[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    try:
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        asked = time.monotonic()
        # Threads are pooled: the connection's slot tells whether one is still serving it.
        wait_for(lambda: server.connections.open == 1, 10, message="the request was not served")
        wait_for(
            lambda: server.connections.open == 0,
            10 * WRITE_TIMEOUT,
            message="the server is still writing to a client that does not read",
        )
        assert time.monotonic() - asked >= WRITE_TIMEOUT
        # The client gets part of the body, then the end of the connection.
        client.settimeout(10)
        received = 0
        try:
            while chunk := client.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert 0 < received < BIG_VALUES * VALUE_BYTES
    finally:
        client.close()
    # A client that reads gets the whole body.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as reader:
        reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        whole = 0
        while chunk := reader.recv(1 << 20):
            whole += len(chunk)
    assert whole > BIG_VALUES * VALUE_BYTES


def test_the_listen_backlog_takes_bursts(server: ExporterHTTPServer) -> None:
    port = server.server_address[1]
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout.split()
    # ss shows a listening socket's backlog as its Send-Q (the kernel caps it at somaxconn).
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(listing[2]) == min(LISTEN_BACKLOG, somaxconn)
