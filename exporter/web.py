"""HTTP endpoints: ``/metrics``, a landing page at ``/``, ``/healthz`` and ``/readyz``.

Every response is built from in-memory state: no request ever waits on the broker.
"""

from __future__ import annotations

import gzip
import html
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.metrics.exposition import render

log = logging.getLogger(__name__)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        broker_display: str,
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        # An IPv6 literal needs an IPv6 socket.
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.broker_display = broker_display
        self.ready = ready
        self._thread: threading.Thread | None = None

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
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", self._landing().encode())
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/readyz":
            ready, why = self.server.ready()
            self._send(200 if ready else 503, "text/plain; charset=utf-8", f"{why}\n".encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

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

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
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
