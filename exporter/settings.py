"""The daemon's configuration, and the parsers that turn flag values into it.

Parsers raise ``ValueError`` with a message fit for the user; the CLI turns that into a
one-line error naming the flag.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from exporter.brokers import Broker, for_url
from exporter.options import Fields, option
from exporter.prom.native import MAX_SCHEMA, MIN_SCHEMA, NativeConfig

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
# in alerts/ (tests/unit/state/test_task_names.py checks), so no alert loses a series it needs.
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
DEFAULT_LISTEN_HOST = "0.0.0.0"
DEFAULT_LISTEN_PORT = 9808


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


def broker_fields(specs: tuple[tuple[str | None, str], ...]) -> Fields:
    """``broker_url`` (the first URL) and ``brokers``; one unnamed URL means no broker label."""
    if len(specs) == 1 and specs[0][0] is None:
        return Fields(broker_url=specs[0][1], brokers=())
    named = [(name, url) for name, url in specs if name is not None]
    if len(named) != len(specs):
        raise ValueError("name each broker as NAME=URL to watch several")
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"broker name {name!r} is given twice")
    return Fields(broker_url=named[0][1], brokers=tuple(named))


def _format_buckets(buckets: tuple[float, ...]) -> str:
    return ",".join(f"{b:g}" for b in buckets)


def queue_list(value: str) -> tuple[str, ...]:
    return tuple(q.strip() for q in value.split(",") if q.strip())


def _web_config_file(path: str) -> str:
    # Imported here: loading the TLS and auth code is the CLI's business, not every importer's.
    from exporter.webconfig import validate_web_config_file

    return validate_web_config_file(path)


def _checked_transport_options(items: tuple[str, ...]) -> dict[str, Any]:
    from exporter.transport_options import check_transport_options

    options = parse_key_values(items)
    check_transport_options(options)
    return options


def _listen_fields(address: tuple[str, int]) -> Fields:
    return Fields(listen_host=address[0], listen_port=address[1])


# Each option is declared once, here: its field, type, default, flag and help (exporter/options.py;
# cli.py builds the click options and CELERY_EXPORTER_<FLAG> variables from them, in this order).
# A new option's field is named as its flag (--foo-bar: foo_bar); tests/unit/test_options.py checks.
@dataclass(frozen=True)
class Settings:
    broker_url: str = option(
        "redis://localhost:6379/0",
        "--broker-url",
        "Celery broker: redis://, rediss://, sentinel:// (several joined with ';'), "
        "amqp://, amqps:// or sqs:// (queue depth only). Repeat as NAME=URL to watch "
        "several brokers or virtual hosts from one process, each labelled broker=NAME.",
        parse=parse_broker_spec,
        metavar="URL",
        multiple=True,
        into=broker_fields,
        example="amqp://guest:guest@rabbit:5672//",
    )
    # Several named brokers (NAME, URL), each watched on its own and labelled broker=NAME.
    # Empty: only broker_url, without a broker label. Transport and SSL options whose key is
    # NAME:key, and --queues entries NAME:queue, apply to that broker only.
    brokers: tuple[tuple[str, str], ...] = ()
    transport_options: dict[str, Any] = option(  # noqa: RUF009 - a default_factory copy
        {},
        "--broker-transport-option",
        "A kombu transport option, as the workers use it (repeatable): e.g. "
        "global_keyprefix=prod: or priority_steps=[0,3,6,9]. Values are JSON when they "
        "parse.",
        key_values=True,
        into=_checked_transport_options,
        example="global_keyprefix=prod:",
    )
    ssl_options: dict[str, Any] = option(  # noqa: RUF009 - a default_factory copy
        {},
        "--broker-ssl-option",
        "A TLS option (repeatable). rediss://: ssl_cert_reqs=required, "
        "ssl_ca_certs=/etc/ssl/ca.pem; amqps://: cert_reqs=2, ca_certs=/etc/ssl/ca.pem, "
        "server_hostname=broker.example.",
        key_values=True,
        into=parse_key_values,
        example="ssl_cert_reqs=required",
    )
    listen_host: str = option(
        DEFAULT_LISTEN_HOST,
        "--listen-address",
        "Where to serve /metrics, /healthz, /readyz and the landing page.",
        parse=parse_listen_address,
        metavar="HOST:PORT",
        show=lambda host: f"{host}:{DEFAULT_LISTEN_PORT}",
        into=_listen_fields,
        example="127.0.0.1:9999",
    )
    listen_port: int = DEFAULT_LISTEN_PORT  # set by --listen-address
    # TLS and basic auth for the HTTP endpoints (exporter/webconfig/); reloaded on SIGHUP.
    web_config_file: str | None = option(
        None,
        "--web-config-file",
        "TLS and basic auth for the endpoints, in the Prometheus exporter-toolkit "
        "web-config format (see README, Securing /metrics). Reloaded on SIGHUP.",
        parse=_web_config_file,
        metavar="PATH",
    )
    log_level: str = option(
        "INFO",
        "--log-level",
        "Log verbosity.",
        choices=("debug", "info", "warning", "error"),
        ignore_case=True,
        show=str.lower,
        into=str.upper,
    )
    log_format: str = option(
        "text", "--log-format", "Log lines as text or as JSON objects.", choices=("text", "json")
    )
    runtime_buckets: tuple[float, ...] = option(
        DEFAULT_RUNTIME_BUCKETS,
        "--runtime-buckets",
        "Bucket bounds in seconds for celery_task_runtime_seconds (comma-separated).",
        parse=parse_buckets,
        metavar="BOUNDS",
        show=_format_buckets,
        example="0.1,1,10",
    )
    queue_wait_buckets: tuple[float, ...] = option(
        DEFAULT_QUEUE_WAIT_BUCKETS,
        "--queue-wait-buckets",
        "Bucket bounds in seconds for celery_task_queue_wait_seconds (comma-separated).",
        parse=parse_buckets,
        metavar="BOUNDS",
        show=_format_buckets,
        example="1,60",
    )
    # A worker is down after this many of its advertised heartbeat intervals pass in silence.
    worker_timeout_heartbeats: float = option(
        5.0,
        "--worker-timeout-heartbeats",
        "A worker is down after this many of its own heartbeat intervals pass without a "
        "heartbeat (Celery's default interval is 2 s, so 10 s).",
        minimum="above_zero",
    )
    # A down worker's series stay (at 0) this long, so alerts with `for:` can fire.
    worker_purge_after: float = option(
        3600.0,
        "--worker-purge-after",
        "Seconds a down worker's series stay (at 0) before they are removed; keep it "
        "longer than your alerts' `for:`.",
        minimum="zero_or_more",
    )
    max_tracked_tasks: int = option(
        200_000,
        "--max-tracked-tasks",
        "Tasks in flight to remember (name, queue, timestamps); beyond it the oldest are "
        "forgotten and counted in celery_exporter_tracked_task_evictions_total.",
        minimum="above_zero",
    )
    tracked_task_max_age: float = option(
        6 * 3600.0,
        "--tracked-task-max-age",
        "Seconds after which a task with no new event is forgotten.",
        minimum="above_zero",
    )
    # Reconnect when a connection that carried events goes silent this long.
    event_watchdog: float = option(
        30.0,
        "--event-watchdog",
        "Reconnect when a connection that carried events is silent this many seconds "
        "(catches half-open connections); 0 disables.",
        minimum="zero_or_more",
    )
    reconnect_max_backoff: float = option(
        10.0,
        "--reconnect-max-backoff",
        "Upper bound in seconds of the exponential backoff between reconnect attempts.",
        minimum="above_zero",
    )
    enable_events_interval: float = option(
        0.0,
        "--enable-events-interval",
        "Broadcast Celery's enable_events control command this often (seconds), so "
        "workers started without -E (or restarted) send task events; 0 disables.",
        minimum="zero_or_more",
    )
    # The user's Celery app ("module:attribute"), for its beat schedule.
    app: str | None = option(
        None,
        "--app",
        "Your Celery app as module:attribute (importable by the exporter), to read its "
        "beat_schedule and export each entry's interval. Optional.",
        into=lambda spec: spec or None,
        legacy_envvars=("CELERY_EXPORTER_APP_SPEC",),
    )
    # Queue sampling (sources/): which queues besides the discovered ones, how often.
    queues: tuple[str, ...] = option(
        (),
        "--queues",
        "Comma-separated queues to always watch, even when no worker consumes them and "
        "they are empty (queues are also discovered from workers, task-sent events and, on "
        "Redis, kombu's bindings). With several brokers, NAME:queue watches it on one only.",
        into=queue_list,
        example="emails,reports",
    )
    sample_interval: float = option(
        5.0,
        "--sample-interval",
        "Seconds between two samples of the broker's queues (never done inside /metrics).",
        minimum="above_zero",
    )
    sample_timeout: float = option(
        5.0,
        "--sample-timeout",
        "Socket timeout, in seconds, for one queue sample.",
        minimum="above_zero",
    )
    queue_forget_after: float = option(
        3600.0,
        "--queue-forget-after",
        "Seconds after which a discovered queue that no source names any more and that "
        "stays empty is no longer watched (queues from --queues always are).",
        minimum="above_zero",
    )
    # How long events of a task not yet seen wait for its task-sent (see events/reorder.py).
    reorder_window: float = option(
        2.0,
        "--reorder-window",
        "Seconds a new task's worker events may wait for its task-sent event (published "
        "after the task, it can arrive late), so they get the right name and queue; 0 disables.",
        minimum="zero_or_more",
    )
    # Each worker is asked for its queues and stats this often (one reply each).
    inspect_interval: float = option(
        30.0,
        "--inspect-interval",
        "Seconds between two inspect requests (active_queues, stats) to each worker; each "
        "request is answered by that worker alone.",
        minimum="above_zero",
    )
    inspect_timeout: float = option(
        1.0,
        "--inspect-timeout",
        "Seconds to wait for a worker's reply to an inspect request (at least 1).",
        minimum="above_zero",
    )
    # Series limits (state/task_names.py): which names get series, how many, for how long.
    task_include: tuple[str, ...] = option(
        (),
        "--task-include",
        "Only task names matching one of these comma-separated shell patterns (e.g. "
        "'myapp.*,billing.charge') get series of their own; others count under "
        'name="(other)".',
        parse=parse_patterns,
        metavar="PATTERNS",
        example="myapp.*,billing.charge",
    )
    task_exclude: tuple[str, ...] = option(
        (),
        "--task-exclude",
        "Task names matching these comma-separated shell patterns count under "
        'name="(other)" (applied after --task-include).',
        parse=parse_patterns,
        metavar="PATTERNS",
        example="debug.*",
    )
    max_task_names: int = option(
        DEFAULT_MAX_TASK_NAMES,
        "--max-task-names",
        "Distinct task names with series of their own; later names count under "
        'name="(other)" (see celery_exporter_dropped_label_values_total). 0: no cap.',
        minimum="zero_or_more",
    )
    task_name_forget_after: float = option(
        0.0,  # never
        "--task-name-forget-after",
        "Remove the series of a task name with no event for this many seconds (at least "
        "7200, longer than every shipped alert's window; periodic tasks' arrival series stay). "
        "0: never.",
        parse=parse_forget_after,
        metavar="SECONDS",
        show=lambda seconds: f"{seconds:g}",
        example="604800",
    )
    # Caps on label values from events, beyond which they count under (other); 0: no cap.
    max_queue_names: int = option(
        DEFAULT_MAX_QUEUE_NAMES,
        "--max-queue-names",
        "Distinct queue names from task-sent events with series of their own (and sampled "
        'as discovered queues); later ones count under queue_name="(other)". 0: no cap.',
        minimum="zero_or_more",
    )
    max_worker_hostnames: int = option(
        DEFAULT_MAX_WORKER_HOSTNAMES,
        "--max-worker-hostnames",
        "Distinct worker hostnames tracked (down workers give their place up when purged); "
        "events of later ones are counted but the workers are not tracked, and their task "
        'events count under hostname="(other)". 0: no cap.',
        minimum="zero_or_more",
    )
    max_exception_classes: int = option(
        DEFAULT_MAX_EXCEPTION_CLASSES,
        "--max-exception-classes",
        "Distinct exception class names on celery_task_failed_total; later ones count "
        'under exception="(other)". 0: no cap.',
        minimum="zero_or_more",
    )
    # An event whose timestamp is further than this from the exporter's clock loses its
    # timestamp (counted as out_of_range): it is still counted, at the exporter's clock.
    event_time_window: float = option(
        DEFAULT_EVENT_TIME_WINDOW_SECONDS,
        "--event-time-window",
        "Seconds an event's timestamp may be away from the exporter's clock (either way); "
        'events beyond it are skipped and counted as reason="out_of_range".',
        minimum="above_zero",
    )
    web_write_timeout: float = option(
        DEFAULT_WEB_WRITE_TIMEOUT_SECONDS,
        "--web-write-timeout",
        "Seconds a client has to read a whole response; a client that does not read is dropped.",
        minimum="above_zero",
    )
    web_max_connections: int = option(
        DEFAULT_WEB_MAX_CONNECTIONS,
        "--web-max-connections",
        "HTTP connections open at once (each holds a thread). When full, the connection idle "
        "or slow (to send its request, or to read its answer) the longest is closed to make room; "
        "while all are rendering answers, a new one waits up to 1 s, then is refused (503).",
        minimum="above_zero",
    )
    web_header_timeout: float = option(
        DEFAULT_WEB_HEADER_TIMEOUT_SECONDS,
        "--web-header-timeout",
        "Seconds a client has to send a whole request head (and complete its TLS handshake), "
        "from connecting or from the first byte of a later request; then it is closed.",
        minimum="above_zero",
    )
    web_idle_timeout: float = option(
        DEFAULT_WEB_IDLE_TIMEOUT_SECONDS,
        "--web-idle-timeout",
        "Seconds a kept-alive connection may wait for its next request.",
        minimum="above_zero",
    )
    web_max_request_size: int = option(
        DEFAULT_WEB_MAX_REQUEST_SIZE,
        "--web-max-request-size",
        "Bytes of request line and headers; a larger request head gets 414 or 431.",
        minimum="above_zero",
    )
    # False drops `hostname` from the task counters (worker pods churn).
    task_worker_label: bool = option(
        True,
        "--task-worker-label/--no-task-worker-label",
        "Label task counters with the worker's hostname. Turn off when worker pods churn "
        "(per-worker figures stay in celery_worker_* metrics).",
    )
    # Native histograms (metrics/native.py) for runtime and queue wait, served in the protobuf
    # format to a Prometheus that asks for it; text and OpenMetrics are unchanged.
    native_histograms: bool = option(
        True,
        "--native-histograms/--no-native-histograms",
        "Keep native histograms for task runtime and queue wait, served in the protobuf "
        "format to a Prometheus that asks for it (--enable-feature=native-histograms); text and "
        "OpenMetrics scrapes are unchanged.",
    )
    native_histogram_schema: int = option(
        3,
        "--native-histogram-schema",
        "Resolution of the native histograms: bucket bounds grow by 2^(2^-schema) "
        "(3: each bucket 9% wider than the one before; -4 coarsest, 8 finest).",
        int_range=(MIN_SCHEMA, MAX_SCHEMA),
    )
    # Whether the protobuf format carries the classic buckets too.
    native_histogram_classic_buckets: bool = option(
        True,
        "--native-histogram-classic-buckets/--no-native-histogram-classic-buckets",
        "Send the classic buckets alongside the native ones in the protobuf format.",
    )
    event_exchange: str = "celeryev"

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
