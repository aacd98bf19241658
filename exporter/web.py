"""HTTP endpoints: ``/metrics``, the status page at ``/`` (exporter/status_page.py),
``/healthz`` and ``/readyz``.

Every response is built from in-memory state: no request ever waits on the broker.

With ``--web-config-file`` (exporter/webconfig/) each accepted connection is wrapped in the
TLS context current at that moment, on the connection's own thread and with a deadline, so a
client that connects and says nothing holds only its own thread, never the accept loop; and each
request is checked against the basic auth users current at that moment.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import logging
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
from exporter.metrics.exposition import render
from exporter.webconfig import REALM, WebConfig, WebConfigReloader

log = logging.getLogger(__name__)

# Seconds a new connection has to complete its TLS handshake.
TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0
# What a client that speaks plain HTTP to the TLS port gets (as Go's net/http answers it).
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
_TLS_HANDSHAKE_RECORD = 0x16


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


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        broker_display: str,
        ready: Callable[[], tuple[bool, str]],
        web_config: WebConfigReloader | None = None,
        page: Callable[[], str] | None = None,
    ) -> None:
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

    @property
    def web(self) -> WebConfig | None:
        return None if self.web_config is None else self.web_config.current

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """On the connection's thread: the TLS handshake (if any), then the requests."""
        web = self.web
        if web is not None and web.ssl_context is not None:
            wrapped = self._handshake(request, web, web.ssl_context, client_address)
            if wrapped is None:
                self.shutdown_request(request)
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _handshake(
        self, sock: socket.socket, web: WebConfig, context: ssl.SSLContext, client_address: Any
    ) -> ssl.SSLSocket | None:
        """The TLS socket once the handshake is done within the deadline, else None."""
        deadline = time.monotonic() + TLS_HANDSHAKE_TIMEOUT_SECONDS
        tls: ssl.SSLSocket | None = None
        try:
            sock.settimeout(TLS_HANDSHAKE_TIMEOUT_SECONDS)
            first = sock.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if first[0] != _TLS_HANDSHAKE_RECORD:
                _refuse(sock, plain_http=first.isalpha())  # "GET ...": plain HTTP
                log.debug("%s: not a TLS client hello; closed", client_address[0])
                return None
            tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
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
            tls.setblocking(True)  # as plain HTTP connections: no deadline once established
            if not web.client_allowed(tls.getpeercert()):
                raise ssl.SSLError("client certificate names none of client_allowed_sans")
            return tls
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
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


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"

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
        return web.auth.check_header(self.headers.get("Authorization"))

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
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

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
