"""The exporter daemon under test, as users run it: one subprocess per run, each with its log."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lib.procs import free_port, http_get, proc_status_kib
from lib.redis_server import RedisServer
from lib.scraped import Metrics


class ExporterProcess:
    def __init__(self, broker_url: str, workdir: Path) -> None:
        binary = Path(sys.executable).parent / "celery-metrics-exporter"
        if not binary.exists():
            found = shutil.which("celery-metrics-exporter")
            if found is None:
                sys.exit("celery-metrics-exporter is not installed in this environment")
            binary = Path(found)
        self.port = free_port()
        self.log_path = workdir / "exporter.log"
        self.command = [
            str(binary),
            "--broker-url",
            broker_url,
            "--listen-address",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 30.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the exporter exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = http_get(self.url("/readyz"), timeout=2)
                if status == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"the exporter was not ready after {timeout} s: {self.log_tail()}")

    def scrape(self) -> Metrics:
        status, body = http_get(self.url("/metrics"), timeout=60)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return Metrics(body.decode("utf-8"))

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Exporters:
    """Every exporter daemon this run starts (each with a log of its own); stops them all."""

    def __init__(self, server: RedisServer, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.started: list[ExporterProcess] = []
        self.ready_seconds = 0.0

    def start(self) -> ExporterProcess:
        log_dir = self.workdir / f"exporter-{len(self.started) + 1}"
        log_dir.mkdir()
        exporter = ExporterProcess(self.server.url, log_dir)
        self.started.append(exporter)
        self.ready_seconds = exporter.wait_ready()
        # /readyz turns 200 after the first drain turn; make sure the pattern is in place.
        deadline = time.monotonic() + 10
        while self.server.numpat() != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter is not subscribed to the event pattern")
            time.sleep(0.05)
        time.sleep(0.3)
        return exporter

    def problems(self) -> str:
        out = []
        for exporter in self.started:
            text = exporter.log_tail(2000)
            if "Traceback" in text or "ERROR" in text:
                out.append(f"{exporter.log_path}:\n{text}")
        return "\n".join(out)

    def stop_all(self) -> None:
        for exporter in self.started:
            exporter.stop()
