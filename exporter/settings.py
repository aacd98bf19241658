"""The daemon's configuration, and the parsers that turn flag values into it.

Parsers raise ``ValueError`` with a message fit for the user; the CLI turns that into a
one-line error naming the flag.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.brokers import Broker, for_url
from exporter.prom.native import NativeConfig

# A broker's name: the `broker` label value, and the NAME: prefix of scoped options.
BROKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

# From a 5 ms cache hit to an hour-long report job.
DEFAULT_RUNTIME_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
)
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS

# Idle task names lose their series no sooner than this: longer than any range plus `for:`
# in alerts/ (tests/test_series_limits.py checks), so no alert loses a series it needs.
MIN_TASK_NAME_FORGET_SECONDS = 7200.0
DEFAULT_MAX_TASK_NAMES = 5000
# Caps on the other label values events name (state/label_cap.py), and the window around
# the exporter's clock an event's timestamp must fall in (events/ranges.py).
DEFAULT_MAX_QUEUE_NAMES = 1000
DEFAULT_MAX_WORKER_HOSTNAMES = 2000
DEFAULT_MAX_EXCEPTION_CLASSES = 500
DEFAULT_EVENT_TIME_WINDOW_SECONDS = 86400.0
# Seconds a client has to take a whole response (web.py).
DEFAULT_WEB_WRITE_TIMEOUT_SECONDS = 30.0
# The HTTP server's bounds (web.py, connections.py; docs/reliability.md): connections holding a
# thread; seconds to send a request head; seconds a kept-alive connection may wait for its
# next request (longer than a 1 min scrape interval, so Prometheus keeps its connection);
# bytes of request line and headers (Node.js's default).
DEFAULT_WEB_MAX_CONNECTIONS = 64
DEFAULT_WEB_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_WEB_IDLE_TIMEOUT_SECONDS = 120.0
DEFAULT_WEB_MAX_REQUEST_SIZE = 16384


@dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://localhost:6379/0"
    listen_host: str = "0.0.0.0"
    listen_port: int = 9808
    transport_options: dict[str, Any] = field(default_factory=dict)
    ssl_options: dict[str, Any] = field(default_factory=dict)
    log_level: str = "INFO"
    log_format: str = "text"
    runtime_buckets: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS
    queue_wait_buckets: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS
    # A worker is down after this many of its advertised heartbeat intervals pass in silence.
    worker_timeout_heartbeats: float = 5.0
    # A down worker's series stay (at 0) this long, so alerts with `for:` can fire.
    worker_purge_seconds: float = 3600.0
    task_tracker_max_tasks: int = 200_000
    task_tracker_max_age_seconds: float = 6 * 3600.0
    # Reconnect when a connection that carried events goes silent this long.
    event_watchdog_seconds: float = 30.0
    reconnect_max_backoff_seconds: float = 10.0
    enable_events_interval_seconds: float = 0.0
    inspect_timeout_seconds: float = 1.0
    # Each worker is asked for its queues and stats this often (one reply each).
    inspect_interval_seconds: float = 30.0
    event_exchange: str = "celeryev"
    # The user's Celery app ("module:attribute"), for its beat schedule.
    app: str | None = None
    # Queue sampling (sources/): which queues besides the discovered ones, how often.
    queues: tuple[str, ...] = ()
    sample_interval_seconds: float = 5.0
    sample_timeout_seconds: float = 5.0
    queue_forget_after_seconds: float = 3600.0
    # How long events of a task not yet seen wait for its task-sent (see events/reorder.py).
    reorder_window_seconds: float = 2.0
    # TLS and basic auth for the HTTP endpoints (exporter/webconfig/); reloaded on SIGHUP.
    web_config_file: str | None = None
    # Series limits (state/task_names.py): which names get series, how many, for how long.
    task_include: tuple[str, ...] = ()
    task_exclude: tuple[str, ...] = ()
    max_task_names: int = DEFAULT_MAX_TASK_NAMES
    task_name_forget_after_seconds: float = 0.0  # 0: never
    # False drops `hostname` from the task counters (worker pods churn).
    task_worker_label: bool = True
    # Caps on label values from events, beyond which they count under (other); 0: no cap.
    max_queue_names: int = DEFAULT_MAX_QUEUE_NAMES
    max_worker_hostnames: int = DEFAULT_MAX_WORKER_HOSTNAMES
    max_exception_classes: int = DEFAULT_MAX_EXCEPTION_CLASSES
    # An event whose timestamp is further than this from the exporter's clock loses its
    # timestamp (counted as out_of_range): it is still counted, at the exporter's clock.
    event_time_window_seconds: float = DEFAULT_EVENT_TIME_WINDOW_SECONDS
    web_write_timeout_seconds: float = DEFAULT_WEB_WRITE_TIMEOUT_SECONDS
    web_max_connections: int = DEFAULT_WEB_MAX_CONNECTIONS
    web_header_timeout_seconds: float = DEFAULT_WEB_HEADER_TIMEOUT_SECONDS
    web_idle_timeout_seconds: float = DEFAULT_WEB_IDLE_TIMEOUT_SECONDS
    web_max_request_size: int = DEFAULT_WEB_MAX_REQUEST_SIZE
    # Several named brokers (NAME, URL), each watched on its own and labelled broker=NAME.
    # Empty: only broker_url, without a broker label. Transport and SSL options whose key is
    # NAME:key, and --queues entries NAME:queue, apply to that broker only.
    brokers: tuple[tuple[str, str], ...] = ()
    # Native histograms (prom/native.py) for runtime and queue wait, served in the protobuf
    # format to a Prometheus that asks for it; text and OpenMetrics are unchanged.
    native_histograms: bool = True
    native_histogram_schema: int = 3
    # Whether the protobuf format carries the classic buckets too.
    native_histogram_classic_buckets: bool = True

    def native_config(self) -> NativeConfig | None:
        if not self.native_histograms:
            return None
        return NativeConfig(
            schema=self.native_histogram_schema,
            classic=self.native_histogram_classic_buckets,
        )

    def per_broker(self) -> list[tuple[str | None, Settings]]:
        """(label value, settings) for each broker to watch."""
        if not self.brokers:
            return [(None, self)]
        names = {name for name, _ in self.brokers}
        return [
            (
                name,
                replace(
                    self,
                    broker_url=url,
                    brokers=(),
                    transport_options=_scoped_options(self.transport_options, name),
                    ssl_options=_scoped_options(self.ssl_options, name),
                    queues=_scoped_queues(self.queues, name, names),
                ),
            )
            for name, url in self.brokers
        ]

    @property
    def broker(self) -> Broker:
        """What this broker can do and its parts (exporter/brokers/)."""
        return for_url(self.broker_url)


def _scoped_options(options: dict[str, Any], name: str) -> dict[str, Any]:
    """Options for one broker: unscoped keys, overridden by NAME:key ones."""
    mine = {k: v for k, v in options.items() if ":" not in k}
    prefix = f"{name}:"
    mine.update({k[len(prefix) :]: v for k, v in options.items() if k.startswith(prefix)})
    return mine


def _scoped_queues(queues: tuple[str, ...], name: str, names: set[str]) -> tuple[str, ...]:
    mine = []
    for queue in queues:
        scope, sep, rest = queue.partition(":")
        if sep and scope in names:
            if scope == name:
                mine.append(rest)
        else:
            mine.append(queue)
    return tuple(mine)


def option_scopes(options: dict[str, Any]) -> set[str]:
    """The NAME of every NAME:key option."""
    return {k.partition(":")[0] for k in options if ":" in k}


def parse_broker_spec(value: str) -> tuple[str | None, str]:
    """``URL`` or ``NAME=URL`` (a named broker, labelled broker=NAME)."""
    value = value.strip()
    name, sep, rest = value.partition("=")
    if sep and "://" in rest and "://" not in name:
        if not BROKER_NAME.fullmatch(name):
            raise ValueError(
                f"broker name {name!r} must be letters, digits, '_', '.' or '-' (at most 63)"
            )
        return name, parse_broker_url(rest)
    return None, parse_broker_url(value)


def parse_broker_url(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("broker URL is empty")
    for part in value.split(";"):
        for_url(part)  # ValueError naming the supported schemes
    return value


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[v6]:port``."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host or "0.0.0.0", port


def parse_option_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, lists, objects), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_key_values(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        options[key] = parse_option_value(raw)
    return options


def parse_patterns(value: str) -> tuple[str, ...]:
    """Comma-separated shell-style patterns (``myapp.reports.*``)."""
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    if not patterns:
        raise ValueError("needs at least one pattern, such as myapp.tasks.*")
    return patterns


def parse_forget_after(value: str) -> float:
    """Seconds, 0 (never), or at least ``MIN_TASK_NAME_FORGET_SECONDS``."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if seconds != 0 and not MIN_TASK_NAME_FORGET_SECONDS <= seconds < float("inf"):
        raise ValueError(
            f"must be 0 (never) or at least {MIN_TASK_NAME_FORGET_SECONDS:g} seconds, so "
            f"series outlive every alert's window; got {value}"
        )
    return seconds


def parse_buckets(value: str) -> tuple[float, ...]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        raise ValueError("needs at least one bucket bound")
    try:
        bounds = [float(p) for p in parts if p.lower() not in ("+inf", "inf")]
    except ValueError:
        raise ValueError(f"{value!r} is not a comma-separated list of numbers") from None
    if any(b != b or b in (float("inf"), float("-inf")) for b in bounds):
        raise ValueError("bucket bounds must be finite numbers (+Inf is always added)")
    if sorted(set(bounds)) != bounds:
        raise ValueError("bucket bounds must be strictly increasing")
    if not bounds:
        raise ValueError("needs at least one finite bucket bound")
    return tuple(bounds)
