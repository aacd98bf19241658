"""A real Alertmanager (Debian's ``prometheus-alertmanager``) and a webhook receiver, for tests.

``AlertmanagerServer`` listens on 127.0.0.1:<free port>, clustering off, its config and data
under ``workdir``. ``WebhookReceiver`` is an HTTP server in a thread of the test that records
every notification Alertmanager POSTs to it (the webhook JSON: ``status``, ``alerts``...).
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.servers import ServerBinaryMissing, _ProcessServer
from tests.support.waiting import wait_for

BINARY = "prometheus-alertmanager"


class AlertmanagerServer(_ProcessServer):
    name = "alertmanager"

    def __init__(self, workdir: Path, config_yaml: str) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            raise ServerBinaryMissing(
                f"`{BINARY}` is not installed: run `make system-packages` "
                "(Debian's prometheus-alertmanager)"
            )
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "alertmanager.yml"
        self.config_path.write_text(config_yaml)
        self.port = free_port()
        self.log_path = self.workdir / "alertmanager.log"
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float | None = None) -> None:
        proc = ManagedProcess(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # a single instance: no gossip port
                "--log.level=info",
            ],
            self.log_path,
            cwd=self.workdir,
        )
        proc.start()
        self._proc = proc

        def ready() -> bool:
            if not proc.running:
                raise AssertionError(f"alertmanager exited:\n{proc.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=0.5) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        try:
            wait_for(ready, 30.0 if timeout is None else timeout, interval=0.1,
                     message=lambda: f"alertmanager not ready:\n{proc.log_tail()}")  # fmt: skip
        except BaseException:
            proc.kill()
            raise

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts as Prometheus does (``POST /api/v2/alerts``)."""
        request = urllib.request.Request(
            self.url + "/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200, resp.read()

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: every alert with its ``status`` (``inhibitedBy``...)."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as resp:
            alerts: list[dict[str, Any]] = json.loads(resp.read())
        return alerts

    def log_tail(self) -> str:
        return self._proc.log_tail() if self._proc is not None else ""


class WebhookReceiver:
    """Records the JSON body of every POST; ``url`` is where Alertmanager should send them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver._notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    @property
    def notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._notifications)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
