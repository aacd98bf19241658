"""The bounded HTTP server (issue 17, part 3): a cap on connections (so on threads), a deadline on
the whole request head, an idle keep-alive timeout and a maximum request head size, over plain
HTTP and TLS.

The floods run against the exporter as users run it, with default flags; the finer mechanics
(414/431, the idle timeout, refusal when every slot is busy) against the server in process,
with small limits so they take a second.
"""

from __future__ import annotations

import resource
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.connections import ConnectionTable
from exporter.settings import (
    DEFAULT_WEB_HEADER_TIMEOUT_SECONDS,
    DEFAULT_WEB_MAX_CONNECTIONS,
)
from exporter.web import ACCEPT_WAIT_SECONDS, ExporterHTTPServer
from exporter.webconfig import WebConfigReloader
from tests.support.exporter import ExporterProcess
from tests.support.metrics import parse_samples, value
from tests.support.tls import make_certificates
from tests.support.waiting import wait_for

IDLE_CONNECTIONS = 2000
IDLE_TLS_SESSIONS = 20  # idle after a completed handshake, among the silent ones
SLOW_BYTE_INTERVAL = 2.0  # seconds between two bytes of the slowloris client's header
RSS_BOUND_KIB = 6 * 1024
# A scrape during the flood: the bound is what matters to a scraper (Prometheus's default
# scrape timeout is 10 s), not the speed of a shared 2-core machine; a scrape queued behind
# the flood would instead wait for a slot to time out (seconds more) or be refused (`full`).
SCRAPE_DURING_FLOOD_BOUND_SECONDS = 5.0


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def proc_status(pid: int) -> dict[str, int]:
    """Threads and VmRSS (KiB) of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Threads", "VmRSS"):
            fields[key] = int(rest.split()[0])
    return fields


class Sampler:
    """The highest thread count and RSS of a process, read every 10 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_threads = 0
        self.max_rss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            status = proc_status(self.pid)
            self.max_threads = max(self.max_threads, status["Threads"])
            self.max_rss_kib = max(self.max_rss_kib, status["VmRSS"])

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Slowloris:
    """Sends a request line, then a header a byte every SLOW_BYTE_INTERVAL; notes when the
    server closes the connection (all on one thread: a TLS socket is not shared)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connected = time.monotonic()
        self.closed_after: float | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
            for byte in b"X-Slow: " + b"a" * 1000:
                readable, _, _ = select.select([self.sock], [], [], SLOW_BYTE_INTERVAL)
                if self._stop.is_set():
                    return
                if readable and self._eof():
                    break
                self.sock.send(bytes([byte]))
                self.sent += 1
        except OSError:  # reset, or a TLS alert on the closed connection: closed all the same
            pass
        self.closed_after = time.monotonic() - self.connected

    def _eof(self) -> bool:
        """Whether the server closed (readable can also mean a TLS session ticket)."""
        self.sock.settimeout(0)
        try:
            return self.sock.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        finally:
            self.sock.settimeout(10)

    def wait_closed(self, timeout: float) -> float:
        wait_for(lambda: self.closed_after is not None, timeout, message="slowloris not cut")
        assert self.closed_after is not None
        return self.closed_after

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def accept_queue(port: int) -> int:
    """Connections the kernel holds for the listening socket, not yet accepted."""
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(listing[1])


@pytest.mark.parametrize("transport", ["http", "https"])
def test_idle_flood_and_slowloris_leave_threads_bounded_and_metrics_answered(
    transport: str, redis_url: str, tmp_path: Path
) -> None:
    raise_fd_limit(IDLE_CONNECTIONS + 1000)
    args: list[str] = []
    client_tls: ssl.SSLContext | None = None
    if transport == "https":
        files = make_certificates(tmp_path / "pki")
        config = tmp_path / "web.yml"
        config.write_text(
            f"tls_server_config:\n  cert_file: {files.cert}\n  key_file: {files.key}\n"
        )
        args = ["--web-config-file", str(config)]
        client_tls = ssl.create_default_context(cafile=str(files.cacert))
    exporter = ExporterProcess(redis_url, tmp_path / "logs", args, tls=client_tls)
    exporter.start(wait_ready=False)
    held: list[socket.socket] = []
    slowloris: Slowloris | None = None
    try:
        pid = exporter.process.pid
        # Warm up (the first render builds its caches), then measure at rest: only the scrape's
        # own connection open.
        for _ in range(3):
            exporter.scrape()
        wait_for(
            lambda: value(exporter.scrape(), "celery_exporter_http_connections") == 1,
            10,
            message="connections of the warm-up still open",
        )
        at_rest = proc_status(pid)

        def connect() -> socket.socket:
            return socket.create_connection(("127.0.0.1", exporter.port), timeout=10)

        def tls_session() -> socket.socket:
            assert client_tls is not None
            return client_tls.wrap_socket(connect(), server_hostname="127.0.0.1")

        with Sampler(pid) as sampler:
            slowloris = Slowloris(tls_session() if client_tls else connect())
            if client_tls is not None:
                held.extend(tls_session() for _ in range(IDLE_TLS_SESSIONS))
            for _ in range(IDLE_CONNECTIONS - len(held)):
                held.append(connect())
            # The server has taken every connection off its listen queue...
            wait_for(lambda: accept_queue(exporter.port) == 0, 30, message="backlog not drained")
            # ... and a well-behaved scraper is answered at once, again and again.
            for _ in range(3):
                asked = time.monotonic()
                status, body = exporter.get("/metrics", timeout=10)
                answered_in = time.monotonic() - asked
                assert status == 200
                assert answered_in < SCRAPE_DURING_FLOOD_BOUND_SECONDS, (
                    f"/metrics took {answered_in:.2f} s"
                )
            print(f"{transport}: /metrics answered in {answered_in * 1000:.0f} ms")
            closed_after = slowloris.wait_closed(DEFAULT_WEB_HEADER_TIMEOUT_SECONDS + 20)
        samples = parse_samples(body)
        print(
            f"{transport}: threads {at_rest['Threads']} at rest, at most {sampler.max_threads}; "
            f"RSS {at_rest['VmRSS']} KiB at rest, at most {sampler.max_rss_kib} KiB; "
            f"slowloris cut after {closed_after:.1f} s, {slowloris.sent} bytes"
        )
        # Threads: those at rest (the pool's first ones among them) plus at most the cap.
        assert sampler.max_threads <= at_rest["Threads"] + DEFAULT_WEB_MAX_CONNECTIONS
        assert sampler.max_rss_kib - at_rest["VmRSS"] < RSS_BOUND_KIB
        # The slowloris client, which reset any per-read timeout every 2 s, was cut at the
        # deadline on its whole head, counted from its connection.
        assert closed_after >= DEFAULT_WEB_HEADER_TIMEOUT_SECONDS - 0.5
        assert closed_after <= DEFAULT_WEB_HEADER_TIMEOUT_SECONDS + 2 * SLOW_BYTE_INTERVAL + 5
        assert slowloris.sent >= 3
        # Idle connections made room, so none was refused; the gauge stays within the cap.
        rejected = "celery_exporter_http_connections_rejected_total"
        evicted = value(samples, rejected, reason="evicted")
        assert evicted is not None
        assert evicted >= IDLE_CONNECTIONS - DEFAULT_WEB_MAX_CONNECTIONS
        assert value(samples, rejected, reason="full") == 0
        open_now = value(samples, "celery_exporter_http_connections")
        assert open_now is not None
        assert 1 <= open_now <= DEFAULT_WEB_MAX_CONNECTIONS
        assert value(samples, "celery_exporter_http_connections_max") == 64
        wait_for(
            lambda: value(exporter.scrape(), rejected, reason="header_timeout") == 1,
            10,
            message="the slowloris timeout was not counted",
        )
    finally:
        if slowloris is not None:
            slowloris.stop()
        for sock in held:
            sock.close()
        exporter.stop()
    assert " ERROR " not in exporter.log()


# -- the mechanics, in process, with small limits ------------------------------------------------


class Gate:
    """A collector whose collect() waits until the gate opens: requests that stay busy."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.waiting = 0

    def collect(self) -> Iterable[Metric]:
        self.waiting += 1
        self.open.wait(30)
        yield GaugeMetricFamily("gate", "A gate.", value=1)


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def server(gate: Gate) -> Iterator[ExporterHTTPServer]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(gate)
    http = ExporterHTTPServer(
        ("127.0.0.1", 0),
        registry,
        "redis://127.0.0.1:1/0",
        lambda: (True, "ok"),
        max_connections=2,
        header_timeout=2.0,
        idle_timeout=0.5,
        max_request_bytes=1024,
    )
    http.start()
    yield http
    gate.open.set()
    http.stop()


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_request_heads_over_the_size_limit_get_414_or_431(server: ExporterHTTPServer) -> None:
    port = server.server_address[1]
    assert exchange(port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.1 414 "
    )
    big_header = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n"
    assert exchange(port, big_header).startswith(b"HTTP/1.1 431 ")
    # Just within the limit: answered.
    request = b"GET /healthz HTTP/1.1\r\nConnection: close\r\nX-Pad: "
    request += b"c" * (1024 - len(request) - 4) + b"\r\n\r\n"
    assert len(request) == 1024
    assert exchange(port, request).startswith(b"HTTP/1.1 200 ")
    counted = rejections(server.connections)
    assert counted["request_too_large"] == 2


def test_kept_alive_connection_serves_pipelined_requests_then_closes_when_idle(
    server: ExporterHTTPServer,
) -> None:
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n")
        received = b""
        answered = 0.0
        while chunk := sock.recv(65536):
            if not answered and received.count(b"HTTP/1.1 200 ") + chunk.count(b"HTTP/1.1 200 "):
                answered = time.monotonic()
            received += chunk
        closed_after = time.monotonic() - answered
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.endswith(b"ok\n")
    assert 0.4 <= closed_after <= 5  # the idle timeout is 0.5 s


def test_a_new_connection_is_refused_with_503_only_while_every_slot_is_busy(
    server: ExporterHTTPServer, gate: Gate
) -> None:
    port = server.server_address[1]
    busy = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        wait_for(lambda: gate.waiting == 2, 10, message="requests not busy")
        asked = time.monotonic()
        refused = exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert time.monotonic() - asked >= ACCEPT_WAIT_SECONDS - 0.05
        assert refused.startswith(b"HTTP/1.1 503 ")
        gate.open.set()
        for sock in busy:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in busy:
            sock.close()
    # With the slots free again (the two wait for their next request), a new client is served:
    # an idle connection gives its slot up.
    assert exchange(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 200 "
    )
    samples = rejections(server.connections)
    assert samples["full"] == 1


def test_when_full_the_slowest_head_makes_room_before_any_busy_request(
    server: ExporterHTTPServer, gate: Gate
) -> None:
    """Both slots taken, one by a request being answered, one by a client sending its head a
    byte at a time: a new client gets the slow one's slot, at once."""
    port = server.server_address[1]
    busy = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        busy.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        wait_for(lambda: gate.waiting == 1, 10, message="request not busy")
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        wait_for(lambda: server.connections.open == 2, 10, message="slow client not admitted")
        answer = exchange(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")  # not 503 after the accept wait
        assert slow.recv(1) == b""  # closed to make room, without an answer
        gate.open.set()
        assert busy.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        busy.close()
        slow.close()
    samples = rejections(server.connections)
    assert (samples["evicted"], samples["full"]) == (1, 0)


def rejections(table: ConnectionTable) -> dict[str, float]:
    """celery_exporter_http_connections_rejected_total by reason, from the table's collector."""
    return {
        s.labels["reason"]: s.value
        for family in table.collect()
        for s in family.samples
        if s.name == "celery_exporter_http_connections_rejected_total"
    }


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


def test_tls_handshakes_trickled_are_closed_to_make_room(tmp_path: Path) -> None:
    """Over TLS, both slots taken by clients trickling their handshake: a new client's
    handshake and request get one of their slots at once."""
    files = make_certificates(tmp_path / "pki")
    config = tmp_path / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {files.cert}\n  key_file: {files.key}\n")
    http = ExporterHTTPServer(
        ("127.0.0.1", 0),
        CollectorRegistry(auto_describe=False),
        "redis://127.0.0.1:1/0",
        lambda: (True, "ok"),
        web_config=WebConfigReloader(str(config)),
        max_connections=2,
    )
    http.start()
    port = http.server_address[1]
    tricklers = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for sock in tricklers:
            sock.sendall(b"\x16\x03\x01\x02\x00")  # a 512-byte handshake record begins
        wait_for(
            lambda: http.connections.phases() == ["head", "head"],
            10,
            message="handshakes not under way",
        )
        context = ssl.create_default_context(cafile=str(files.cacert))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
        # One of them was closed to make room, well before its handshake deadline (10 s).
        wait_for(lambda: any(map(closed, tricklers)), 5, message="no trickler closed")
        # The size limit holds over TLS too (16 KiB by default); a slot is free for it.
        wait_for(lambda: http.connections.open == 1, 5, message="slots not released")
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 431 ")
    finally:
        for sock in tricklers:
            sock.close()
        http.stop()
    samples = rejections(http.connections)
    assert (samples["evicted"], samples["full"], samples["request_too_large"]) == (1, 0, 1)


def test_clients_that_do_not_read_are_closed_to_make_room(tmp_path: Path) -> None:
    """Both slots taken by clients that asked for a large /metrics and do not read: a scraper
    gets the slot of the one that has been taking its answer longest, at once, not after the
    write deadline."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LargeCollector())
    http = ExporterHTTPServer(
        ("127.0.0.1", 0), registry, "redis://127.0.0.1:1/0", lambda: (True, "ok"), max_connections=2
    )
    http.start()
    port = http.server_address[1]
    stalled = []
    try:
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            stalled.append(sock)
        wait_for(
            lambda: http.connections.phases() == ["send", "send"],
            30,
            message="answers not being sent",
        )
        answer = exchange(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")  # not 503 after the accept wait
    finally:
        for sock in stalled:
            sock.close()
        http.stop()
    samples = rejections(http.connections)
    assert (samples["evicted"], samples["full"]) == (1, 0)


class LargeCollector:
    """A 10 MB exposition: more than the kernel buffers of both ends hold (4 MiB each here)."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("large", "A large exposition.", labels=["value"])
        for i in range(50):
            family.add_metric([f"{i}-" + "x" * 200_000], 1.0)
        yield family
