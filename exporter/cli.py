"""Command line: every option also reads ``CELERY_EXPORTER_<OPTION>`` from the environment.

The options are declared once, as ``Settings`` fields (exporter/options.py); this module turns
the declarations into click options and click's values back into ``Settings``.

A bad value ends with one line naming the flag, and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from exporter import __version__
from exporter.options import ENV_PREFIX, Option, declared_options
from exporter.redact import redact_text
from exporter.settings import Settings, option_scopes, parse_key_values, queue_list
from exporter.transport_options import check_transport_options
from exporter.webconfig import WebConfigError

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


def _positive(allow_zero: bool) -> Callable[[click.Context, Any, Any], Any]:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        if value < 0 or (value == 0 and not allow_zero):
            raise click.BadParameter(
                f"must be {'zero or more' if allow_zero else 'more than zero'}, got {value}"
            )
        return value

    return check


def _is_empty(default: Any) -> bool:
    return default is None or (not isinstance(default, (bool, int, float)) and not default)


def _click_type(option: Option, default: Any) -> Any:
    if option.key_values:
        return _KeyValue()
    if option.parse is not None:
        return _Parsed(option.metavar or "TEXT", option.parse)
    if option.choices:
        return click.Choice(option.choices, case_sensitive=not option.ignore_case)
    if option.int_range is not None:
        return click.IntRange(*option.int_range)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return type(default)
    return None


def click_option(
    option: Option, default: Any, prefix: str = ENV_PREFIX
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option for one record: its flag, environment variables, type and bounds."""
    kwargs: dict[str, Any] = {
        "envvar": option.envvars(prefix),
        "type": _click_type(option, default),
        "multiple": option.multiple or option.key_values,
        "help": option.help,
    }
    if option.minimum is not None:
        kwargs["callback"] = _positive(allow_zero=option.minimum == "zero_or_more")
    if not _is_empty(default):
        shown = default if option.show is None else option.show(default)
        kwargs["default"] = [shown] if kwargs["multiple"] else shown
        kwargs["show_default"] = True
    return click.option(option.flag, option.name, **kwargs)


def declared(names: tuple[str, ...] | None = None) -> Callable[..., Any]:
    """Decorate a command with the options of these Settings fields (all: None), in order."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        chosen = [
            click_option(option, default)
            for field, option, default in declared_options(Settings)
            if names is None or field in names
        ]
        for make in reversed(chosen):
            f = make(f)
        return f

    return decorate


# The broker options, shared by the daemon and `diagnose` (same environment variables).
connection_options = declared(("broker_url", "transport_options", "ssl_options"))

# `diagnose`'s own options (not Settings): record and default.
DIAGNOSE_PREFIX = f"{ENV_PREFIX}_DIAGNOSE"
DIAGNOSE_OPTIONS: tuple[tuple[Option, Any], ...] = (
    (
        Option(
            "--queues",
            "Comma-separated queues to check besides the discovered ones.",
            legacy_envvars=(f"{ENV_PREFIX}_QUEUES",),  # the daemon's
        ),
        "",
    ),
    (
        Option(
            "--listen",
            "Seconds to listen to events (workers heartbeat every 2 s).",
            minimum="above_zero",
        ),
        6.0,
    ),
    (Option("--timeout", "Seconds to wait for the broker to answer.", minimum="above_zero"), 5.0),
    (
        Option(
            "--backlog-threshold",
            "Ready messages from which a consumed queue counts as backed up.",
            minimum="above_zero",
        ),
        100,
    ),
    (
        Option(
            "--format",
            "A report for people, or JSON for scripts.",
            choices=("text", "json"),
            legacy_envvars=(f"{DIAGNOSE_PREFIX}_OUTPUT_FORMAT",),
        ),
        "text",
    ),
)


def diagnose_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option, default in reversed(DIAGNOSE_OPTIONS):
        f = click_option(option, default, DIAGNOSE_PREFIX)(f)
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
@declared()
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
@diagnose_options
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
    transport_options = parse_key_values(options["broker_transport_option"])
    try:
        check_transport_options(transport_options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--broker-transport-option'") from None
    settings = Settings(
        broker_url=options["broker_url"][0][1],
        transport_options=transport_options,
        ssl_options=parse_key_values(options["broker_ssl_option"]),
        queues=queue_list(options["queues"] or ""),
        reconnect_max_backoff=1.0,
        sample_timeout=options["timeout"],
    )
    observation = observe(settings, options["listen"], options["timeout"])
    found = findings(observation, options["backlog_threshold"])
    render = json_report if options["format"] == "json" else text_report
    click.echo(render(observation, found, redact_url(settings.broker_url)))
    return exit_code(found)


def _check_scopes(scopes: set[str], brokers: tuple[tuple[str, str], ...], flag: str) -> None:
    unknown = scopes - {name for name, _ in brokers}
    if unknown:
        raise click.BadParameter(
            f"{sorted(unknown)[0]!r}: scoped options (NAME:key=value) need a broker of that "
            "name (--broker-url NAME=URL)",
            param_hint=flag,
        )


def build_settings(params: Mapping[str, Any]) -> Settings:
    """Settings from what click parsed (flags, environment, defaults), by the declarations."""
    values: dict[str, Any] = {}
    for field, option, _ in declared_options(Settings):
        value = params.get(option.name)
        if value is None:  # not given and no default: the field's own
            continue
        try:
            values.update(option.settings_values(field, value))
        except ValueError as exc:
            hint = f"'{option.flag.split('/')[0]}'"
            raise click.BadParameter(str(exc), param_hint=hint) from None
    settings = Settings(**values)
    _check_scopes(option_scopes(settings.transport_options), settings.brokers,
                  "'--broker-transport-option'")  # fmt: skip
    _check_scopes(option_scopes(settings.ssl_options), settings.brokers, "'--broker-ssl-option'")
    return settings


def settings_from_args(args: Sequence[str]) -> Settings:
    """Settings as the command line builds them: flags, then CELERY_EXPORTER_*, then defaults
    (bench/ uses it, so it measures the daemon as configured)."""
    ctx = command.make_context("celery-metrics-exporter", list(args))
    return build_settings(ctx.params)


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
