"""HTTP endpoints: ``/metrics``, the status page at ``/`` (exporter/status_page.py),
``/healthz`` and ``/readyz``.

Every response is built from in-memory state: no request ever waits on the broker.

With ``--web-config-file`` (exporter/webconfig/) each accepted connection is wrapped in the
TLS context current at that moment, on the connection's own thread and with a deadline, so a
client that connects and says nothing holds only its own thread, never the accept loop; and each
request is checked against the basic auth users current at that moment.

Bounded (exporter/connections.py): at most ``--web-max-connections`` connections hold a thread
(idle and slow ones are closed to make room for new ones); each must send its request head
(and finish its TLS handshake) within ``--web-header-timeout`` of being accepted or of its
first byte on a kept-alive connection, may wait ``--web-idle-timeout`` for its next request,
and may send a head of ``--web-max-request-size`` bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import io
import logging
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.connections import BUSY, HEAD, IDLE, SEND, Connection, ConnectionTable
from exporter.handler_pool import HandlerPool
from exporter.prom.exposition import render
from exporter.webconfig import REALM, WebConfig, WebConfigReloader

log = logging.getLogger(__name__)

# An admitted connection: (socket, client address, its slot).
_Job = tuple[socket.socket, Any, Connection]

# Seconds a new connection has to complete its TLS handshake.
TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0
# Connections the kernel queues while the accept loop is busy (capped by net.core.somaxconn).
# Python's default of 5 overflows when many clients connect at once (a connection per
# request): each dropped SYN costs the client a 1 s retransmit (bench/backlog.py).
LISTEN_BACKLOG = 1024
# Bytes written per send under the write deadline.
WRITE_CHUNK_BYTES = 256 * 1024
# What a client that speaks plain HTTP to the TLS port gets (as Go's net/http answers it).
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
_TLS_HANDSHAKE_RECORD = 0x16
# Seconds a new connection may wait on the accept loop for a slot while every slot is answering
# a request (idle and slow connections are closed to make room at once).
ACCEPT_WAIT_SECONDS = 1.0
# What a plain HTTP client gets when it is refused for want of a slot.
_FULL_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n"
)
# The end of a request head: an empty line (the stdlib's parser also takes a bare LF).
_HEAD_END = re.compile(rb"\n\r?\n")
# Bytes read per receive while reading a request head.
READ_CHUNK_BYTES = 16384


def _refuse(sock: socket.socket, plain_http: bool) -> None:
    """Read what the client sent (so closing does not reset the connection), answer a plain
    HTTP client in plain HTTP, and half-close; the caller closes."""
    deadline = time.monotonic() + 1.0
    with contextlib.suppress(OSError):
        received = b""
        while len(received) < 16384 and (not plain_http or b"\r\n\r\n" not in received):
            # Garbage: take only what has arrived. HTTP: up to the end of its headers, 1 s.
            sock.settimeout(max(0.0, deadline - time.monotonic()) if plain_http else 0.0)
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    with contextlib.suppress(OSError):
        sock.setblocking(True)
        sock.settimeout(1.0)
        if plain_http:
            sock.sendall(_PLAIN_HTTP_ANSWER)
        sock.shutdown(socket.SHUT_WR)


def _wait(sock: socket.socket, events: int, deadline: float) -> bool:
    """Whether ``sock`` gets ready for ``events`` before ``deadline`` (poll: any fd number)."""
    poller = select.poll()
    poller.register(sock, events)
    milliseconds = max(0, int((deadline - time.monotonic()) * 1000))
    return bool(poller.poll(milliseconds))


def _has_input(sock: socket.socket, deadline: float) -> bool:
    """Whether the client sends something (or closes) before ``deadline``."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # already decrypted, in the TLS socket's buffer
    try:
        return _wait(sock, select.POLLIN, deadline)
    except (OSError, ValueError):
        return True  # the read that follows says what is wrong


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        broker_display: str,
        ready: Callable[[], tuple[bool, str]],
        web_config: WebConfigReloader | None = None,
        page: Callable[[], str] | None = None,
        write_timeout: float = 30.0,
        max_connections: int = 64,
        header_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        max_request_bytes: int = 16384,
    ) -> None:
        # Seconds a client has to take a whole response (--web-write-timeout).
        self.write_timeout = write_timeout
        # Seconds to send a request head (and the TLS handshake before the first one).
        self.header_timeout = header_timeout
        # Seconds a kept-alive connection may wait for its next request.
        self.idle_timeout = idle_timeout
        # Bytes of request line and headers, at most.
        self.max_request_bytes = max_request_bytes
        self.connections = ConnectionTable(max_connections, ACCEPT_WAIT_SECONDS)
        self._pool = HandlerPool(
            self._serve, lambda job: self.connections.release(job[2]), max_connections
        )
        self._local = threading.local()  # the Connection of the handler's thread
        # An IPv6 literal needs an IPv6 socket.
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.broker_display = broker_display
        self.ready = ready
        self.web_config = web_config
        self.page = page  # the status page; None: a plain landing page
        self._thread: threading.Thread | None = None
        registry.register(self.connections)

    @property
    def web(self) -> WebConfig | None:
        return None if self.web_config is None else self.web_config.current

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept loop: a slot for the connection (see exporter/connections.py), then a
        thread of the pool; no slot within ACCEPT_WAIT_SECONDS: refused."""
        connection = self.connections.admit(request)
        if connection is None:
            self._refuse_full(request)
            self.shutdown_request(request)
            return
        self._pool.submit((request, client_address, connection))

    def _refuse_full(self, sock: socket.socket) -> None:
        """Without blocking the accept loop: take what the client sent (so the close does not
        reset the answer away) and, to a plain HTTP client, say 503."""
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.recv(READ_CHUNK_BYTES)
            if self.web is None or self.web.ssl_context is None:
                sock.send(_FULL_ANSWER)
        log.debug("connection refused: all %d connections busy", self.connections.limit)

    def _serve(self, job: _Job) -> None:
        """On a thread of the pool: the TLS handshake (if any), then the requests."""
        request, client_address, connection = job
        self._local.connection = connection
        web = self.web
        if web is not None and web.ssl_context is not None:
            wrapped = self._handshake(request, web, web.ssl_context, client_address)
            if wrapped is None:
                self.shutdown_request(request)
                return
            request = wrapped
        # Handles the requests, logs what breaks (handle_error), closes the connection.
        self.process_request_thread(request, client_address)

    def connection(self) -> Connection:
        """The connection of the calling handler thread."""
        connection: Connection = self._local.connection
        return connection

    def _handshake(
        self, sock: socket.socket, web: WebConfig, context: ssl.SSLContext, client_address: Any
    ) -> ssl.SSLSocket | None:
        """The TLS socket once the handshake is done within the deadline, else None."""
        connection = self.connection()
        timeout = min(TLS_HANDSHAKE_TIMEOUT_SECONDS, self.header_timeout)
        deadline = connection.admitted + timeout
        tls: ssl.SSLSocket | None = None
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            first = sock.recv(1, socket.MSG_PEEK)
            if not first or not self.connections.enter(connection, HEAD):
                return None
            if first[0] != _TLS_HANDSHAKE_RECORD:
                _refuse(sock, plain_http=first.isalpha())  # "GET ...": plain HTTP
                log.debug("%s: not a TLS client hello; closed", client_address[0])
                return None
            tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            # The plain socket object is now detached: closing to make room must shut this one.
            self.connections.rebind(connection, tls)
            # Non-blocking, so the deadline bounds the whole handshake, not each read: a client
            # trickling a byte at a time gets no more than TLS_HANDSHAKE_TIMEOUT_SECONDS.
            tls.setblocking(False)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    ready = _wait(tls, select.POLLIN, deadline)
                except ssl.SSLWantWriteError:
                    ready = _wait(tls, select.POLLOUT, deadline)
                if not ready:
                    raise TimeoutError("TLS handshake deadline passed")
            tls.setblocking(True)  # the request head has its own deadline
            if not web.client_allowed(tls.getpeercert()):
                raise ssl.SSLError("client certificate names none of client_allowed_sans")
            if not self.connections.enter(connection, IDLE):  # waits for its request
                raise ConnectionAbortedError("closed to make room")
            return tls
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            if isinstance(exc, TimeoutError) and not connection.evicted:
                self.connections.count("header_timeout")
            log.debug("%s: TLS handshake failed: %s", client_address[0], exc)
            if tls is not None:
                tls.close()
            return None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that breaks (reset, TLS alert) is the client's business: one debug line."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("%s: connection error: %s", client_address[0], exc)
        else:
            log.exception("error while serving %s", client_address[0])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._pool.close()


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Each request head is read whole, under its deadline, by _read_head; the stdlib's
        # parser then reads it from memory (the socket's file would wait per byte, unbounded).
        self.rfile.close()
        self.rfile = io.BytesIO()
        self._slot = self.server.connection()
        self._pending = b""  # bytes received after the last head (a pipelined request)
        self._first = True

    def handle_one_request(self) -> None:
        head = self._read_head()
        self._first = False
        if head is None:
            self.close_connection = True
            return
        self.connection.settimeout(self.server.write_timeout)  # error answers of the parser
        self.rfile = io.BytesIO(head)
        table = self.server.connections
        if not table.enter(self._slot, BUSY):
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        finally:
            table.enter(self._slot, IDLE)

    def _read_head(self) -> bytes | None:
        """The next request head (request line and headers), or None: the connection is to be
        closed (the client left, was too slow, was closed to make room, or sent too much)."""
        server, sock = self.server, self.connection
        limit = server.max_request_bytes
        buffer, self._pending = self._pending, b""
        now = time.monotonic()
        if self._first:  # from the accept: connected and silent is as slow as trickling
            wait_until = head_until = self._slot.admitted + server.header_timeout
        else:
            wait_until, head_until = now + server.idle_timeout, now + server.header_timeout
        started = bool(buffer)
        if started and not server.connections.enter(self._slot, HEAD):
            return None
        while True:
            end = _HEAD_END.search(buffer)
            if end is not None and end.end() <= limit:
                self._pending = buffer[end.end() :]
                return buffer[: end.end()]
            if end is not None or len(buffer) > limit:
                self._too_large(buffer[:limit])
                return None
            now = time.monotonic()
            until = head_until if started else wait_until
            if now >= until:
                if started or self._first:
                    server.connections.count("header_timeout")
                return None
            if not started:
                # Wait for the first byte without taking it: while it sits unread the cap sees
                # this connection as a request under way, never as idle (connections.py).
                if not _has_input(sock, until):
                    continue
                started = True
                if not self._first:
                    head_until = time.monotonic() + server.header_timeout
                if not server.connections.enter(self._slot, HEAD):
                    return None
                continue
            sock.settimeout(until - now)
            try:
                chunk = sock.recv(READ_CHUNK_BYTES)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buffer += chunk

    def _too_large(self, start: bytes) -> None:
        """Answer 414 (the request line alone is too long) or 431, then close."""
        self.server.connections.count("request_too_large")
        if b"\n" in start:
            status, body = "431 Request Header Fields Too Large", b"request headers too large\n"
        else:
            status, body = "414 URI Too Long", b"request line too long\n"
        answer = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        with contextlib.suppress(OSError):
            self.connection.settimeout(1.0)
            self.connection.sendall(answer)
            # Tell the client we are done (the plain socket's shutdown: no TLS close to send),
            # and take what it is still sending, for a while, so that closing with it unread
            # does not reset the connection before the client reads the answer.
            socket.socket.shutdown(self.connection, socket.SHUT_WR)
            deadline, taken = time.monotonic() + 1.0, 0
            while taken < 1 << 20 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                taken += len(chunk)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        web = self.server.web
        if web is not None and web.rate_limiter is not None and not web.rate_limiter.allow():
            self._send(429, "text/plain; charset=utf-8", b"too many requests\n")
            return
        if web is not None and not self._authorized(web, path):
            self._send(
                401,
                "text/plain; charset=utf-8",
                b"unauthorized\n",
                {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
            return
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            self._page()
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/readyz":
            ready, why = self.server.ready()
            self._send(200 if ready else 503, "text/plain; charset=utf-8", f"{why}\n".encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _authorized(self, web: WebConfig, path: str) -> bool:
        if web.auth is None or not web.needs_auth(path):
            return True
        reason = web.auth.failure(self.headers.get("Authorization"))
        if reason is None:
            return True
        config = self.server.web_config
        if config is not None:
            config.count_auth_failure(reason)
        return False

    def _metrics(self) -> None:
        try:
            body, content_type = render(self.server.registry, self.headers.get("Accept", ""))
        except Exception:
            log.exception("rendering /metrics failed")
            self._send(500, "text/plain; charset=utf-8", b"rendering metrics failed\n")
            return
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self._send(200, content_type, body, headers)

    def _page(self) -> None:
        try:
            body = (self._landing() if self.server.page is None else self.server.page()).encode()
        except Exception:
            log.exception("rendering the status page failed")
            self._send(500, "text/plain; charset=utf-8", b"rendering the status page failed\n")
            return
        self._send(200, "text/html; charset=utf-8", body)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        web = self.server.web
        if web is not None:
            for key, value in web.headers.items():
                self.send_header(key, value)
        # The whole response within the deadline: a client that asks and never reads must
        # not hold its thread and the body (tens of MB at thousands of task names) for ever.
        deadline = time.monotonic() + self.server.write_timeout
        previous = self.connection.gettimeout()
        # From here the answer waits on the client alone: one that does not read can be closed
        # to make room (exporter/connections.py), which ends these writes with an error.
        if not self.server.connections.enter(self._slot, SEND):
            raise ConnectionAbortedError("closed to make room")
        self._until(deadline)
        self.end_headers()
        if self.command != "HEAD":
            view = memoryview(body)
            for start in range(0, len(body), WRITE_CHUNK_BYTES):
                self._until(deadline)
                self.wfile.write(view[start : start + WRITE_CHUNK_BYTES])
        self.connection.settimeout(previous)

    def _until(self, deadline: float) -> None:
        """The next blocking write gives up at ``deadline`` (the connection is then closed)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client did not read the response in time")
        self.connection.settimeout(remaining)

    def _landing(self) -> str:
        ready, why = self.server.ready()
        broker = html.escape(self.server.broker_display)
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>celery-metrics-exporter</title></head>
<body>
<h1>celery-metrics-exporter {html.escape(__version__)}</h1>
<p>Prometheus exporter for Celery.</p>
<p>Broker: <code>{broker}</code> &mdash; {"ready" if ready else "not ready"}: {html.escape(why)}</p>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; the metrics</li>
<li><a href="/healthz">/healthz</a> &mdash; the process is alive</li>
<li><a href="/readyz">/readyz</a> &mdash; connected to the broker and consuming events</li>
</ul>
</body></html>
"""
