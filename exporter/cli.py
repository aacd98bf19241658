"""Command line: every option also reads ``CELERY_EXPORTER_<OPTION>`` from the environment.

A bad value ends with one line naming the flag, and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from exporter import __version__
from exporter.prom.native import MAX_SCHEMA, MIN_SCHEMA
from exporter.redact import redact_text
from exporter.settings import (
    DEFAULT_EVENT_TIME_WINDOW_SECONDS,
    DEFAULT_MAX_EXCEPTION_CLASSES,
    DEFAULT_MAX_QUEUE_NAMES,
    DEFAULT_MAX_TASK_NAMES,
    DEFAULT_MAX_WORKER_HOSTNAMES,
    DEFAULT_QUEUE_WAIT_BUCKETS,
    DEFAULT_RUNTIME_BUCKETS,
    DEFAULT_WEB_HEADER_TIMEOUT_SECONDS,
    DEFAULT_WEB_IDLE_TIMEOUT_SECONDS,
    DEFAULT_WEB_MAX_CONNECTIONS,
    DEFAULT_WEB_MAX_REQUEST_SIZE,
    DEFAULT_WEB_WRITE_TIMEOUT_SECONDS,
    Settings,
    option_scopes,
    parse_broker_spec,
    parse_buckets,
    parse_forget_after,
    parse_key_values,
    parse_listen_address,
    parse_patterns,
)
from exporter.transport_options import check_transport_options
from exporter.webconfig import WebConfigError, validate_web_config_file

ENV_PREFIX = "CELERY_EXPORTER"
log = logging.getLogger(__name__)


class _Parsed(click.ParamType):  # type: ignore[type-arg]
    """A click type backed by one of the settings parsers."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(redact_text(str(exc)), param, ctx)


class _KeyValue(click.ParamType):  # type: ignore[type-arg]
    """KEY=VALUE, repeatable; from the environment, pairs are separated by newlines or ';'."""

    name = "KEY=VALUE"

    def split_envvar_value(self, rv: str) -> list[str]:
        separator = "\n" if "\n" in rv else ";"
        return [part.strip() for part in rv.split(separator) if part.strip()]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            parse_key_values([value])
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


def _format_buckets(buckets: tuple[float, ...]) -> str:
    return ",".join(f"{b:g}" for b in buckets)


def _positive(name: str, allow_zero: bool = False) -> Callable[[click.Context, Any, Any], Any]:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        if value < 0 or (value == 0 and not allow_zero):
            raise click.BadParameter(
                f"must be {'zero or more' if allow_zero else 'more than zero'}, got {value}"
            )
        return value

    return check


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The broker options, shared by the daemon and `diagnose` (same environment variables)."""
    options = [
        click.option(
            "--broker-url",
            envvar=f"{ENV_PREFIX}_BROKER_URL",
            type=_Parsed("URL", parse_broker_spec),
            multiple=True,
            default=["redis://localhost:6379/0"],
            show_default=True,
            help="Celery broker: redis://, rediss://, sentinel:// (several joined with ';'), "
            "amqp:// or amqps://. Repeat as NAME=URL to watch several brokers or virtual "
            "hosts from one process, each labelled broker=NAME.",
        ),
        click.option(
            "--broker-transport-option",
            "transport_options",
            envvar=f"{ENV_PREFIX}_BROKER_TRANSPORT_OPTION",
            type=_KeyValue(),
            multiple=True,
            help="A kombu transport option, as the workers use it (repeatable): e.g. "
            "global_keyprefix=prod: or priority_steps=[0,3,6,9]. Values are JSON when they "
            "parse.",
        ),
        click.option(
            "--broker-ssl-option",
            "ssl_options",
            envvar=f"{ENV_PREFIX}_BROKER_SSL_OPTION",
            type=_KeyValue(),
            multiple=True,
            help="A TLS option (repeatable). rediss://: ssl_cert_reqs=required, "
            "ssl_ca_certs=/etc/ssl/ca.pem; amqps://: cert_reqs=2, ca_certs=/etc/ssl/ca.pem, "
            "server_hostname=broker.example.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(
    invoke_without_command=True,
    context_settings={"auto_envvar_prefix": ENV_PREFIX, "max_content_width": 100},
    help="Export Celery task, worker and broker metrics to Prometheus (run without a command), "
    "or diagnose a Celery cluster once (`diagnose`).\n\n"
    "Every option can also be set with the environment variable CELERY_EXPORTER_<OPTION> "
    "(for example CELERY_EXPORTER_BROKER_URL).",
)
@click.version_option(__version__, "--version", prog_name="celery-metrics-exporter")
@connection_options
@click.option(
    "--listen-address",
    type=_Parsed("HOST:PORT", parse_listen_address),
    default="0.0.0.0:9808",
    show_default=True,
    help="Where to serve /metrics, /healthz, /readyz and the landing page.",
)
@click.option(
    "--web-config-file",
    type=_Parsed("PATH", validate_web_config_file),
    default=None,
    help="TLS and basic auth for the endpoints, in the Prometheus exporter-toolkit "
    "web-config format (see README, Securing /metrics). Reloaded on SIGHUP.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log verbosity.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or as JSON objects.",
)
@click.option(
    "--runtime-buckets",
    type=_Parsed("BOUNDS", parse_buckets),
    default=_format_buckets(DEFAULT_RUNTIME_BUCKETS),
    show_default=True,
    help="Bucket bounds in seconds for celery_task_runtime_seconds (comma-separated).",
)
@click.option(
    "--queue-wait-buckets",
    type=_Parsed("BOUNDS", parse_buckets),
    default=_format_buckets(DEFAULT_QUEUE_WAIT_BUCKETS),
    show_default=True,
    help="Bucket bounds in seconds for celery_task_queue_wait_seconds (comma-separated).",
)
@click.option(
    "--worker-timeout-heartbeats",
    type=float,
    default=5.0,
    show_default=True,
    callback=_positive("worker-timeout-heartbeats"),
    help="A worker is down after this many of its own heartbeat intervals pass without a "
    "heartbeat (Celery's default interval is 2 s, so 10 s).",
)
@click.option(
    "--worker-purge-after",
    type=float,
    default=3600.0,
    show_default=True,
    callback=_positive("worker-purge-after", allow_zero=True),
    help="Seconds a down worker's series stay (at 0) before they are removed; keep it "
    "longer than your alerts' `for:`.",
)
@click.option(
    "--max-tracked-tasks",
    type=int,
    default=200_000,
    show_default=True,
    callback=_positive("max-tracked-tasks"),
    help="Tasks in flight to remember (name, queue, timestamps); beyond it the oldest are "
    "forgotten and counted in celery_exporter_tracked_task_evictions_total.",
)
@click.option(
    "--tracked-task-max-age",
    type=float,
    default=21600.0,
    show_default=True,
    callback=_positive("tracked-task-max-age"),
    help="Seconds after which a task with no new event is forgotten.",
)
@click.option(
    "--event-watchdog",
    type=float,
    default=30.0,
    show_default=True,
    callback=_positive("event-watchdog", allow_zero=True),
    help="Reconnect when a connection that carried events is silent this many seconds "
    "(catches half-open connections); 0 disables.",
)
@click.option(
    "--reconnect-max-backoff",
    type=float,
    default=10.0,
    show_default=True,
    callback=_positive("reconnect-max-backoff"),
    help="Upper bound in seconds of the exponential backoff between reconnect attempts.",
)
@click.option(
    "--enable-events-interval",
    type=float,
    default=0.0,
    show_default=True,
    callback=_positive("enable-events-interval", allow_zero=True),
    help="Broadcast Celery's enable_events control command this often (seconds), so "
    "workers started without -E (or restarted) send task events; 0 disables.",
)
@click.option(
    "--app",
    "app_spec",
    default=None,
    help="Your Celery app as module:attribute (importable by the exporter), to read its "
    "beat_schedule and export each entry's interval. Optional.",
)
@click.option(
    "--queues",
    "queues",
    default="",
    help="Comma-separated queues to always watch, even when no worker consumes them and "
    "they are empty (queues are also discovered from workers, task-sent events and, on "
    "Redis, kombu's bindings). With several brokers, NAME:queue watches it on one only.",
)
@click.option(
    "--sample-interval",
    type=float,
    default=5.0,
    show_default=True,
    callback=_positive("sample-interval"),
    help="Seconds between two samples of the broker's queues (never done inside /metrics).",
)
@click.option(
    "--sample-timeout",
    type=float,
    default=5.0,
    show_default=True,
    callback=_positive("sample-timeout"),
    help="Socket timeout, in seconds, for one queue sample.",
)
@click.option(
    "--queue-forget-after",
    type=float,
    default=3600.0,
    show_default=True,
    callback=_positive("queue-forget-after"),
    help="Seconds after which a discovered queue that no source names any more and that "
    "stays empty is no longer watched (queues from --queues always are).",
)
@click.option(
    "--reorder-window",
    type=float,
    default=2.0,
    show_default=True,
    callback=_positive("reorder-window", allow_zero=True),
    help="Seconds a new task's worker events may wait for its task-sent event (published "
    "after the task, it can arrive late), so they get the right name and queue; 0 disables.",
)
@click.option(
    "--inspect-interval",
    type=float,
    default=30.0,
    show_default=True,
    callback=_positive("inspect-interval"),
    help="Seconds between two inspect requests (active_queues, stats) to each worker; each "
    "request is answered by that worker alone.",
)
@click.option(
    "--inspect-timeout",
    type=float,
    default=1.0,
    show_default=True,
    callback=_positive("inspect-timeout"),
    help="Seconds to wait for a worker's reply to an inspect request (at least 1).",
)
@click.option(
    "--task-include",
    type=_Parsed("PATTERNS", parse_patterns),
    default=None,
    help="Only task names matching one of these comma-separated shell patterns (e.g. "
    "'myapp.*,billing.charge') get series of their own; others count under "
    'name="(other)".',
)
@click.option(
    "--task-exclude",
    type=_Parsed("PATTERNS", parse_patterns),
    default=None,
    help="Task names matching these comma-separated shell patterns count under "
    'name="(other)" (applied after --task-include).',
)
@click.option(
    "--max-task-names",
    type=int,
    default=DEFAULT_MAX_TASK_NAMES,
    show_default=True,
    callback=_positive("max-task-names", allow_zero=True),
    help="Distinct task names with series of their own; later names count under "
    'name="(other)" (see celery_exporter_dropped_label_values_total). 0: no cap.',
)
@click.option(
    "--task-name-forget-after",
    type=_Parsed("SECONDS", parse_forget_after),
    default="0",
    show_default=True,
    help="Remove the series of a task name with no event for this many seconds (at least "
    "7200, longer than every shipped alert's window; periodic tasks' arrival series stay). "
    "0: never.",
)
@click.option(
    "--max-queue-names",
    type=int,
    default=DEFAULT_MAX_QUEUE_NAMES,
    show_default=True,
    callback=_positive("max-queue-names", allow_zero=True),
    help="Distinct queue names from task-sent events with series of their own (and sampled "
    'as discovered queues); later ones count under queue_name="(other)". 0: no cap.',
)
@click.option(
    "--max-worker-hostnames",
    type=int,
    default=DEFAULT_MAX_WORKER_HOSTNAMES,
    show_default=True,
    callback=_positive("max-worker-hostnames", allow_zero=True),
    help="Distinct worker hostnames tracked (down workers give their place up when purged); "
    "events of later ones are counted but the workers are not tracked, and their task "
    'events count under hostname="(other)". 0: no cap.',
)
@click.option(
    "--max-exception-classes",
    type=int,
    default=DEFAULT_MAX_EXCEPTION_CLASSES,
    show_default=True,
    callback=_positive("max-exception-classes", allow_zero=True),
    help="Distinct exception class names on celery_task_failed_total; later ones count "
    'under exception="(other)". 0: no cap.',
)
@click.option(
    "--event-time-window",
    type=float,
    default=DEFAULT_EVENT_TIME_WINDOW_SECONDS,
    show_default=True,
    callback=_positive("event-time-window"),
    help="Seconds an event's timestamp may be away from the exporter's clock (either way); "
    'events beyond it are skipped and counted as reason="out_of_range".',
)
@click.option(
    "--web-write-timeout",
    type=float,
    default=DEFAULT_WEB_WRITE_TIMEOUT_SECONDS,
    show_default=True,
    callback=_positive("web-write-timeout"),
    help="Seconds a client has to read a whole response; a client that does not read is dropped.",
)
@click.option(
    "--web-max-connections",
    type=int,
    default=DEFAULT_WEB_MAX_CONNECTIONS,
    show_default=True,
    callback=_positive("web-max-connections"),
    help="HTTP connections open at once (each holds a thread). When full, the connection idle "
    "or slow (to send its request, or to read its answer) the longest is closed to make room; "
    "while all are rendering answers, a new one waits up to 1 s, then is refused (503).",
)
@click.option(
    "--web-header-timeout",
    type=float,
    default=DEFAULT_WEB_HEADER_TIMEOUT_SECONDS,
    show_default=True,
    callback=_positive("web-header-timeout"),
    help="Seconds a client has to send a whole request head (and complete its TLS handshake), "
    "from connecting or from the first byte of a later request; then it is closed.",
)
@click.option(
    "--web-idle-timeout",
    type=float,
    default=DEFAULT_WEB_IDLE_TIMEOUT_SECONDS,
    show_default=True,
    callback=_positive("web-idle-timeout"),
    help="Seconds a kept-alive connection may wait for its next request.",
)
@click.option(
    "--web-max-request-size",
    type=int,
    default=DEFAULT_WEB_MAX_REQUEST_SIZE,
    show_default=True,
    callback=_positive("web-max-request-size"),
    help="Bytes of request line and headers; a larger request head gets 414 or 431.",
)
@click.option(
    "--task-worker-label/--no-task-worker-label",
    default=True,
    show_default=True,
    help="Label task counters with the worker's hostname. Turn off when worker pods churn "
    "(per-worker figures stay in celery_worker_* metrics).",
)
@click.option(
    "--native-histograms/--no-native-histograms",
    default=True,
    show_default=True,
    help="Keep native histograms for task runtime and queue wait, served in the protobuf "
    "format to a Prometheus that asks for it (--enable-feature=native-histograms); text and "
    "OpenMetrics scrapes are unchanged.",
)
@click.option(
    "--native-histogram-schema",
    type=click.IntRange(MIN_SCHEMA, MAX_SCHEMA),
    default=3,
    show_default=True,
    help="Resolution of the native histograms: bucket bounds grow by 2^(2^-schema) "
    "(3: each bucket 9% wider than the one before; -4 coarsest, 8 finest).",
)
@click.option(
    "--native-histogram-classic-buckets/--no-native-histogram-classic-buckets",
    default=True,
    show_default=True,
    help="Send the classic buckets alongside the native ones in the protobuf format.",
)
@click.pass_context
def command(ctx: click.Context, /, **options: Any) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from exporter.daemon import ListenError, run
    from exporter.logs import configure_logging

    settings = build_settings(options)
    if settings.app is not None:
        from exporter.beat_schedule import AppNotFound, load_app

        try:
            load_app(settings.app)
        except AppNotFound as exc:
            raise click.BadParameter(str(exc), param_hint="'--app'") from None
    configure_logging(settings.log_level, settings.log_format)
    for key in check_transport_options(settings.transport_options):
        log.warning(
            "transport option %r is not one kombu reads (misspelt?); it is passed on as given",
            key,
        )
    try:
        run(settings)
    except WebConfigError as exc:  # changed between the check above and the daemon's load
        raise click.BadParameter(str(exc), param_hint="'--web-config-file'") from None
    except ListenError as exc:
        raise click.BadParameter(str(exc), param_hint="'--listen-address'") from None


@command.command(
    "diagnose",
    help="Connect, listen to events for a short window, sample the queues and ask the "
    "workers, then print what is wrong and how to fix it. Exit code 0: healthy, 1: warnings, "
    "2: critical findings. Reads only: never consumes, acknowledges or changes anything.",
)
@connection_options
@click.option(
    "--queues",
    envvar=f"{ENV_PREFIX}_QUEUES",
    default="",
    help="Comma-separated queues to check besides the discovered ones.",
)
@click.option(
    "--listen",
    type=float,
    default=6.0,
    show_default=True,
    callback=_positive("listen"),
    help="Seconds to listen to events (workers heartbeat every 2 s).",
)
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    callback=_positive("timeout"),
    help="Seconds to wait for the broker to answer.",
)
@click.option(
    "--backlog-threshold",
    type=int,
    default=100,
    show_default=True,
    callback=_positive("backlog-threshold"),
    help="Ready messages from which a consumed queue counts as backed up.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A report for people, or JSON for scripts.",
)
def diagnose(**options: Any) -> int:
    from exporter.diagnose.collect import observe
    from exporter.diagnose.findings import exit_code, findings
    from exporter.diagnose.report import json_report, text_report
    from exporter.logs import configure_logging
    from exporter.redact import redact_url

    configure_logging("ERROR", "text")
    if len(options["broker_url"]) != 1:
        raise click.BadParameter(
            "diagnose checks one broker at a time", param_hint="'--broker-url'"
        )
    transport_options = parse_key_values(options["transport_options"])
    try:
        check_transport_options(transport_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--broker-transport-option'") from None
    settings = Settings(
        broker_url=options["broker_url"][0][1],
        transport_options=transport_options,
        ssl_options=parse_key_values(options["ssl_options"]),
        queues=tuple(q.strip() for q in options["queues"].split(",") if q.strip()),
        reconnect_max_backoff_seconds=1.0,
        sample_timeout_seconds=options["timeout"],
    )
    observation = observe(settings, options["listen"], options["timeout"])
    found = findings(observation, options["backlog_threshold"])
    render = json_report if options["output_format"] == "json" else text_report
    click.echo(render(observation, found, redact_url(settings.broker_url)))
    return exit_code(found)


def _brokers(
    specs: tuple[tuple[str | None, str], ...],
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(the first URL, the named brokers); one unnamed URL means no broker label."""
    hint = "'--broker-url'"
    if len(specs) == 1 and specs[0][0] is None:
        return specs[0][1], ()
    named = [(name, url) for name, url in specs if name is not None]
    if len(named) != len(specs):
        raise click.BadParameter("name each broker as NAME=URL to watch several", param_hint=hint)
    names = [name for name, _ in named]
    for name in names:
        if names.count(name) > 1:
            raise click.BadParameter(f"broker name {name!r} is given twice", param_hint=hint)
    return named[0][1], tuple(named)


def _check_scopes(scopes: set[str], brokers: tuple[tuple[str, str], ...], flag: str) -> None:
    unknown = scopes - {name for name, _ in brokers}
    if unknown:
        raise click.BadParameter(
            f"{sorted(unknown)[0]!r}: scoped options (NAME:key=value) need a broker of that "
            "name (--broker-url NAME=URL)",
            param_hint=flag,
        )


def build_settings(options: dict[str, Any]) -> Settings:
    host, port = options["listen_address"]
    try:
        transport_options = parse_key_values(options["transport_options"])
    except ValueError as exc:  # already validated per item by click
        raise click.BadParameter(str(exc), param_hint="'--broker-transport-option'") from None
    try:
        check_transport_options(transport_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--broker-transport-option'") from None
    ssl_options = parse_key_values(options["ssl_options"])
    broker_url, brokers = _brokers(options["broker_url"])
    _check_scopes(option_scopes(transport_options), brokers, "'--broker-transport-option'")
    _check_scopes(option_scopes(ssl_options), brokers, "'--broker-ssl-option'")
    return Settings(
        broker_url=broker_url,
        brokers=brokers,
        listen_host=host,
        listen_port=port,
        transport_options=transport_options,
        ssl_options=ssl_options,
        log_level=options["log_level"].upper(),
        log_format=options["log_format"],
        runtime_buckets=options["runtime_buckets"],
        queue_wait_buckets=options["queue_wait_buckets"],
        worker_timeout_heartbeats=options["worker_timeout_heartbeats"],
        worker_purge_seconds=options["worker_purge_after"],
        task_tracker_max_tasks=options["max_tracked_tasks"],
        task_tracker_max_age_seconds=options["tracked_task_max_age"],
        event_watchdog_seconds=options["event_watchdog"],
        reconnect_max_backoff_seconds=options["reconnect_max_backoff"],
        enable_events_interval_seconds=options["enable_events_interval"],
        inspect_timeout_seconds=options["inspect_timeout"],
        inspect_interval_seconds=options["inspect_interval"],
        reorder_window_seconds=options["reorder_window"],
        app=options["app_spec"] or None,
        queues=tuple(q.strip() for q in options["queues"].split(",") if q.strip()),
        sample_interval_seconds=options["sample_interval"],
        sample_timeout_seconds=options["sample_timeout"],
        queue_forget_after_seconds=options["queue_forget_after"],
        web_config_file=options["web_config_file"],
        task_include=options["task_include"] or (),
        task_exclude=options["task_exclude"] or (),
        max_task_names=options["max_task_names"],
        task_name_forget_after_seconds=options["task_name_forget_after"],
        task_worker_label=options["task_worker_label"],
        max_queue_names=options["max_queue_names"],
        max_worker_hostnames=options["max_worker_hostnames"],
        max_exception_classes=options["max_exception_classes"],
        event_time_window_seconds=options["event_time_window"],
        web_write_timeout_seconds=options["web_write_timeout"],
        web_max_connections=options["web_max_connections"],
        web_header_timeout_seconds=options["web_header_timeout"],
        web_idle_timeout_seconds=options["web_idle_timeout"],
        web_max_request_size=options["web_max_request_size"],
        native_histograms=options["native_histograms"],
        native_histogram_schema=options["native_histogram_schema"],
        native_histogram_classic_buckets=options["native_histogram_classic_buckets"],
    )


def main(argv: list[str] | None = None) -> None:
    try:
        code = command.main(args=argv, prog_name="celery-metrics-exporter", standalone_mode=False)
    except click.UsageError as exc:
        # One line that names the flag (click's default is a multi-line usage block).
        click.echo(f"celery-metrics-exporter: error: {redact_text(exc.format_message())}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"celery-metrics-exporter: error: {redact_text(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
