"""SIGHUP: ``WebConfigReloader`` loads the file again and swaps it in if it loads; it also
collects the reload metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.prom.families import by_label
from exporter.webconfig.auth import AUTH_FAILURE_REASONS
from exporter.webconfig.fields import WebConfigError
from exporter.webconfig.load import load_web_config

# The name this logger had when the web config was one module: log filters may match it.
log = logging.getLogger("exporter.webconfig")


class WebConfigReloader:
    """Holds the current web config; ``request_reload`` (SIGHUP) swaps it if the new one loads.

    The swap is one attribute assignment: connections accepted afterwards use the new TLS
    context, requests handled afterwards the new users. The listener and open connections are
    left alone. A file that fails to load is logged, counted, and the previous config stays.
    Also a collector for the reload metrics.
    """

    def __init__(self, path: str, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self.current = load_web_config(path)
        self._lock = threading.Lock()
        self._results = {"success": 0, "failure": 0}
        # Requests refused by basic auth, by reason (kept across reloads).
        self._auth_failures = dict.fromkeys(AUTH_FAILURE_REASONS, 0)
        self._auth_lock = threading.Lock()  # not the reload's: a reload never delays a request
        self._last_success = clock()
        log.info("web config %s: %s", path, self.current.summary)

    def request_reload(self, signum: int | None = None, frame: object = None) -> None:
        """Signal-handler safe: the reload runs on a thread of its own."""
        threading.Thread(target=self.reload, name="web-config-reload", daemon=True).start()

    def reload(self) -> bool:
        with self._lock:
            try:
                new = load_web_config(self.path)
                if (new.ssl_context is None) != (self.current.ssl_context is None):
                    raise WebConfigError(
                        f"{self.path}: tls_server_config cannot be added or removed by a "
                        "reload; restart the exporter"
                    )
            except WebConfigError as exc:
                self._results["failure"] += 1
                log.error("reloading the web config failed, keeping the previous one: %s", exc)
                return False
            self.current = new
            self._results["success"] += 1
            self._last_success = self._clock()
            log.info("reloaded web config %s: %s", self.path, new.summary)
            return True

    def count_auth_failure(self, reason: str) -> None:
        with self._auth_lock:
            self._auth_failures[reason] = self._auth_failures.get(reason, 0) + 1

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            results = dict(self._results)
            last_success = self._last_success
        with self._auth_lock:
            auth_failures = dict(self._auth_failures)
        if self.current.auth is not None:
            yield by_label(
                CounterMetricFamily,
                "celery_exporter_http_auth_failures_total",
                "Requests refused by basic auth (--web-config-file), by reason.",
                "reason",
                auth_failures.items(),
            )
        yield by_label(
            CounterMetricFamily,
            "celery_exporter_web_config_reloads_total",
            "Reloads of --web-config-file (SIGHUP), by result.",
            "result",
            results.items(),
        )
        yield GaugeMetricFamily(
            "celery_exporter_web_config_last_reload_success_timestamp_seconds",
            "When --web-config-file was last loaded successfully (at start or on SIGHUP).",
            value=last_success,
        )
