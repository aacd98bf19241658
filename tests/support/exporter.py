"""The exporter as users run it: the console script in a subprocess, scraped over HTTP."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.support.metrics import Samples, parse_samples
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


class ExporterProcess:
    def __init__(
        self,
        broker_url: str,
        logdir: Path,
        args: Sequence[str] = (),
        broker_url_in_env: bool = False,
        env: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        """``tls``/``auth``: how ``get`` (and so ``start``'s wait) reaches an exporter run with
        ``--web-config-file``: HTTPS with this client context, basic auth with (user, password).
        """
        self.broker_url = broker_url
        self.tls = tls
        self.auth = auth
        self.port = free_port()
        self.log_path = logdir / f"exporter-{self.port}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        if broker_url_in_env:
            # As in a Kubernetes Secret: the URL never appears on the command line.
            env["CELERY_EXPORTER_BROKER_URL"] = broker_url
            url_args: list[str] = []
        else:
            url_args = ["--broker-url", broker_url]
        argv = [
            sys.executable, "-m", "exporter",
            *url_args,
            "--listen-address", f"127.0.0.1:{self.port}",
            "--log-level", "info",
            *args,
        ]  # fmt: skip
        self.process = ManagedProcess(argv, self.log_path, env=env, cwd=REPO_ROOT)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> ExporterProcess:
        self.process.start()
        if wait_ready:
            wait_for(
                lambda: self.status("/readyz") == 200,
                timeout,
                message=lambda: f"exporter not ready; log:\n{self.log()}",
            )
        else:
            wait_for(
                lambda: self.status("/healthz") == 200,
                timeout,
                message=lambda: f"exporter not serving; log:\n{self.log()}",
            )
        return self

    def log(self) -> str:
        return self.process.log_tail(20_000)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path)
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.tls) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self, path: str) -> int | None:
        try:
            return self.get(path, timeout=2.0)[0]
        except OSError:
            return None

    def scrape(self) -> Samples:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_samples(body)

    def wait_worker_queues(self, hostname: str, *queues: str, timeout: float = 30.0) -> None:
        """Wait until the exporter knows which queues ``hostname`` consumes.

        Until then, a task whose task-sent event arrives after the worker's own events (the
        producer publishes it after the task message) is labelled ``queue_name="(unknown)"``;
        tests that assert exact queue labels wait for this first.
        """
        expected = set(queues or ("celery",))

        def known() -> bool:
            samples = self.scrape()
            seen = {
                dict(labels)["queue_name"]
                for (name, labels) in samples
                if name == "celery_worker_queue_info" and dict(labels)["hostname"] == hostname
            }
            return seen == expected

        wait_for(known, timeout, message=f"exporter did not learn the queues of {hostname}")

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; returns the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        exited = self.process.wait(timeout)
        elapsed = time.monotonic() - started
        assert exited, f"exporter ignored SIGTERM for {timeout}s; log:\n{self.log()}"
        return elapsed

    def stop(self) -> None:
        self.process.stop(timeout=5.0)
