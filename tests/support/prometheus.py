"""A real Prometheus server (Debian's ``prometheus``) for tests, private to the test run.

It listens on 127.0.0.1:<free port>, keeps its TSDB, config and log under ``workdir``, and keeps
its port across ``stop()``/``start()``/``restart()``. Uses: checking that PromQL parses
(dashboards, alert rules), and evaluating rules end to end against a scraped exporter::

    server = PrometheusServer(tmp_path, PrometheusServer.scrape_config([exporter_addr]),
                              rule_files=[Path("alerts/celery.yml")])
    with server:
        server.wait_targets_up(timeout=30)
        server.wait_for_alert("CeleryWorkerDown", timeout=60)

``reload()`` rewrites the config file and asks Prometheus to reload it over HTTP
(``--web.enable-lifecycle``): the same reload as SIGHUP, but synchronous, and a bad config or
rule file comes back as an error instead of a log line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.servers import ServerBinaryMissing, _ProcessServer
from tests.support.waiting import wait_for


class PrometheusAPIError(Exception):
    """Prometheus answered with ``"status": "error"`` (or a non-JSON error page)."""

    def __init__(self, http_status: int, error_type: str, error: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {http_status} {error_type}: {error}")
        self.http_status = http_status
        self.error_type = error_type
        self.error = error


def _require_prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise ServerBinaryMissing(
            "`prometheus` is not installed: install the Debian package "
            "(`apt-get install prometheus`); the tests start their own server"
        )
    return path


def assert_promtool_clean(exposition: str) -> None:
    """`promtool check metrics` on a scrape: Prometheus' own lint of names, types, help."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise ServerBinaryMissing("`promtool` is not installed: install Debian's prometheus")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


class PrometheusServer(_ProcessServer):
    """One ``prometheus`` process on 127.0.0.1, its files under ``workdir``.

    ``config_yaml`` is the whole configuration file except ``rule_files``, which this class
    writes from ``rule_files`` (absolute paths, so the files can live anywhere).
    """

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        config_yaml: str,
        rule_files: Sequence[Path] = (),
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = _require_prometheus()
        self.workdir = Path(workdir)
        self._port_given = port is not None
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "prometheus.log"
        self.config_yaml = config_yaml
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self._proc: ManagedProcess | None = None
        self._started_once = False
        self._write_config()

    # -- configuration -------------------------------------------------------------------------

    @staticmethod
    def scrape_config(
        targets: Sequence[str],
        job: str = "celery-exporter",
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> str:
        """A config scraping ``targets`` (``host:port``) often enough for tests of rules."""
        return (
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  scrape_timeout: {scrape_interval}\n"
            f"  evaluation_interval: {evaluation_interval}\n"
            "scrape_configs:\n"
            f"  - job_name: {json.dumps(job)}\n"
            "    static_configs:\n"
            f"      - targets: {json.dumps(list(targets))}\n"
        )

    def _write_config(self) -> None:
        if self.rule_files and re.search(r"^rule_files\s*:", self.config_yaml, re.MULTILINE):
            raise ValueError("pass rule files either in config_yaml or as rule_files, not both")
        text = self.config_yaml.rstrip("\n") + "\n"
        if self.rule_files:
            # JSON strings are valid YAML scalars: any path is quoted correctly.
            text += "rule_files:\n" + "".join(
                f"  - {json.dumps(str(p))}\n" for p in self.rule_files
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)

    # -- state ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, max_chars: int = 6000) -> str:
        return self._proc.log_tail(max_chars) if self._proc is not None else ""

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start and return once ``/-/ready`` answers 200 (config and rules loaded)."""
        if self.running:
            raise RuntimeError(f"prometheus on port {self.port} is already running")
        timeout = 30.0 if timeout is None else timeout
        # A port picked by free_port() can be taken by someone else before we bind it: then
        # pick another (only on a first start: a restart must keep its port).
        for attempt in range(3):
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._start_once(timeout)
            except AssertionError:
                this_start = self.log_path.read_bytes()[log_offset:].decode(errors="replace")
                taken = "address already in use" in this_start
                if not taken or self._port_given or self._started_once or attempt == 2:
                    raise
                self.port = free_port()
            else:
                self._started_once = True
                return

    def _start_once(self, timeout: float) -> None:
        argv = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
            *self.extra_args,
        ]
        proc = ManagedProcess(argv, self.log_path, cwd=self.workdir)
        proc.start()
        self._proc = proc

        def ready() -> bool:
            if not proc.running:
                raise AssertionError(
                    f"prometheus exited with code {proc.returncode}:\n{proc.log_tail()}"
                )
            return self._status("/-/ready") == 200

        try:
            wait_for(
                ready,
                timeout,
                message=lambda: f"prometheus on port {self.port} not ready:\n{proc.log_tail()}",
            )
        except BaseException:
            proc.kill()
            raise

    def reload(
        self, config_yaml: str | None = None, rule_files: Sequence[Path] | None = None
    ) -> None:
        """Rewrite the config (optionally new config or rule files) and reload it now.

        Raises PrometheusAPIError when Prometheus rejects the config or a rule file; it then
        keeps running with the previous one.
        """
        if config_yaml is not None:
            self.config_yaml = config_yaml
        if rule_files is not None:
            self.rule_files = [Path(p).resolve() for p in rule_files]
        self._write_config()
        status, body = self._request("/-/reload", data=b"")
        if status != 200:
            raise PrometheusAPIError(status, "reload", body.strip(), "reload failed")

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    # -- HTTP API ------------------------------------------------------------------------------

    def _request(
        self, path: str, data: bytes | None = None, timeout: float = 10.0
    ) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path, data=data, method="POST" if data is not None else "GET"
        )
        if data:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def _status(self, path: str) -> int | None:
        # A short timeout: Prometheus answers at once, and a port held by something that never
        # answers must not stall the readiness poll.
        try:
            return self._request(path, timeout=0.5)[0]
        except OSError:
            return None

    def api_response(
        self, path: str, params: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, decoded JSON body)`` of an API call; form-POSTed when ``params``."""
        data = urllib.parse.urlencode(params).encode() if params is not None else None
        status, body = self._request(path, data=data)
        try:
            decoded: dict[str, Any] = json.loads(body)
        except ValueError:
            decoded = {"status": "error", "errorType": "not_json", "error": body[:500]}
        return status, decoded

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The ``data`` of a successful API call; PrometheusAPIError otherwise."""
        status, body = self.api_response(path, params)
        if status != 200 or body.get("status") != "success":
            raise PrometheusAPIError(
                status, str(body.get("errorType")), str(body.get("error")), path
            )
        return body["data"]

    def query_response(self, expr: str, at: float | None = None) -> tuple[int, dict[str, Any]]:
        """The raw answer to an instant query: a PromQL syntax error is ``400`` ``bad_data``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api_response("/api/v1/query", params)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's samples as ``[{"metric": {...}, "value": [t, "v"]}]``.

        A scalar or string result comes back as one sample with no labels.
        """
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_value(self, expr: str, at: float | None = None) -> float | None:
        """The value of a query returning at most one sample (None when it returns none)."""
        samples = self.query(expr, at)
        if len(samples) > 1:
            raise AssertionError(f"{expr!r} returned {len(samples)} samples: {samples}")
        return float(samples[0]["value"][1]) if samples else None

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("/api/v1/targets")["activeTargets"]
        return targets

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as loaded (``/api/v1/rules``), each with its rules and their health."""
        groups: list[dict[str, Any]] = self.api("/api/v1/rules")["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (``/api/v1/alerts``)."""
        alerts: list[dict[str, Any]] = self.api("/api/v1/alerts")["alerts"]
        return alerts

    def wait_targets_up(self, timeout: float) -> list[dict[str, Any]]:
        """Wait until every configured target has been scraped successfully.

        Count on about 5 s after a start: Prometheus hands discovered targets to the scrape
        manager at most every 5 s, the first time included.
        """

        def all_up() -> list[dict[str, Any]] | None:
            targets = self.targets()
            return targets if targets and all(t["health"] == "up" for t in targets) else None

        return wait_for(
            all_up, timeout, interval=0.2, message=lambda: f"targets not up: {self.targets()}"
        )

    def wait_for_alert(
        self, name: str, timeout: float, state: str = "firing", **labels: str
    ) -> dict[str, Any]:
        """Wait for an alert ``name`` in ``state`` whose labels include ``labels``."""

        def found() -> dict[str, Any] | None:
            for alert in self.alerts():
                alert_labels = alert["labels"]
                if (
                    alert_labels.get("alertname") == name
                    and alert["state"] == state
                    and all(alert_labels.get(k) == v for k, v in labels.items())
                ):
                    return alert
            return None

        began = time.monotonic()
        return wait_for(
            found,
            timeout,
            interval=0.2,
            message=lambda: (
                f"alert {name} {labels} not {state} after {time.monotonic() - began:.1f}s; "
                f"alerts now: {self.alerts()}"
            ),
        )
