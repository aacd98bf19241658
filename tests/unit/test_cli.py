"""Flag parsing: every bad value is one line naming the flag, exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from exporter.cli import build_settings, command
from exporter.settings import (
    DEFAULT_RUNTIME_BUCKETS,
    Settings,
    parse_broker_url,
    parse_buckets,
    parse_key_values,
    parse_listen_address,
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--listen-address", "nonsense"], "--listen-address"),
        (["--listen-address", "0.0.0.0:99999"], "--listen-address"),
        (["--broker-url", "http://user:hunter2@host/"], "--broker-url"),
        (["--runtime-buckets", "1,0.5"], "--runtime-buckets"),
        (["--queue-wait-buckets", "a,b"], "--queue-wait-buckets"),
        (["--broker-transport-option", "novalue"], "--broker-transport-option"),
        (["--worker-timeout-heartbeats", "0"], "--worker-timeout-heartbeats"),
        (["--worker-purge-after", "-1"], "--worker-purge-after"),
        (["--max-tracked-tasks", "zero"], "--max-tracked-tasks"),
        (["--log-format", "xml"], "--log-format"),
        (["--app", "no_such_module_anywhere:app"], "--app"),
        (["--sample-interval", "0"], "--sample-interval"),
        (["--task-include", " , "], "--task-include"),
        (["--broker-url", "redis://a/0", "--broker-url", "redis://b/0"], "--broker-url"),
        (["--broker-url", "x=redis://a/0", "--broker-url", "x=redis://b/0"], "--broker-url"),
        (["--broker-url", "bad name=redis://a/0"], "--broker-url"),
        (
            ["--broker-url", "a=redis://:hunter2@a/0", "--broker-transport-option", "b:x=1"],
            "--broker-transport-option",
        ),
        (["--max-task-names", "-5"], "--max-task-names"),
        (["--broker-transport-option", "priority_steps=notalist"], "--broker-transport-option"),
        (["--broker-transport-option", "sep=5"], "--broker-transport-option"),
        (["--broker-transport-option", "visibility_timeout=-1"], "--broker-transport-option"),
        (["--broker-transport-option", 'sentinel_kwargs="hunter2"'], "--broker-transport-option"),
        (["--broker-transport-option", "fanout_patterns=hunter2"], "--broker-transport-option"),
        (["diagnose", "--broker-transport-option", "sep=5"], "--broker-transport-option"),
        (["--task-name-forget-after", "600"], "--task-name-forget-after"),
        (["--task-name-forget-after", "soon"], "--task-name-forget-after"),
        (["--max-queue-names", "-1"], "--max-queue-names"),
        (["--max-worker-hostnames", "many"], "--max-worker-hostnames"),
        (["--max-exception-classes", "-1"], "--max-exception-classes"),
        (["--event-time-window", "0"], "--event-time-window"),
        (["--web-write-timeout", "0"], "--web-write-timeout"),
        (["--web-max-connections", "0"], "--web-max-connections"),
        (["--web-header-timeout", "-1"], "--web-header-timeout"),
        (["--web-idle-timeout", "0"], "--web-idle-timeout"),
        (["--web-max-request-size", "big"], "--web-max-request-size"),
    ],
)
def test_bad_flag_is_one_line_naming_the_flag_exit_2(args: list[str], flag: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert flag in lines[0]
    assert lines[0].startswith("celery-metrics-exporter: error:")
    assert "hunter2" not in result.stderr


def test_listen_port_in_use_is_one_line_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The default broker URL: nothing is connected before the listener is bound.
        result = run_cli("--listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr == (
        "celery-metrics-exporter: error: Invalid value for '--listen-address': "
        f"cannot listen on 127.0.0.1:{port}: address already in use\n"
    )


def test_version_and_help() -> None:
    from exporter import __version__

    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"celery-metrics-exporter, version {__version__}"
    help_text = run_cli("--help").stdout
    for flag in (
        "--broker-url",
        "--listen-address",
        "--broker-transport-option",
        "--broker-ssl-option",
        "--log-level",
        "--log-format",
        "--runtime-buckets",
        "--queue-wait-buckets",
        "--worker-timeout-heartbeats",
        "--worker-purge-after",
        "--enable-events-interval",
    ):
        assert flag in help_text
    assert "CELERY_EXPORTER_" in help_text


def _settings(args: list[str]) -> Settings:
    ctx = command.make_context("celery-metrics-exporter", list(args))
    return build_settings(ctx.params)


def test_defaults() -> None:
    settings = _settings([])
    assert settings.broker_url == "redis://localhost:6379/0"
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9808)
    assert settings.runtime_buckets == DEFAULT_RUNTIME_BUCKETS
    assert settings.runtime_buckets[-1] == 3600.0
    assert settings.transport_options == {}
    # Caps and ranges on what events can do (docs/reliability.md lists them).
    assert (
        settings.max_queue_names,
        settings.max_worker_hostnames,
        settings.max_exception_classes,
        settings.event_time_window,
        settings.web_write_timeout,
    ) == (1000, 2000, 500, 86400.0, 30.0)
    # The HTTP server's bounds (docs/reliability.md, "Timeouts").
    assert (
        settings.web_max_connections,
        settings.web_header_timeout,
        settings.web_idle_timeout,
        settings.web_max_request_size,
    ) == (64, 10.0, 120.0, 16384)


def test_every_option_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_EXPORTER_BROKER_URL", "amqp://guest:guest@rabbit:5672//")
    monkeypatch.setenv("CELERY_EXPORTER_LISTEN_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv(
        "CELERY_EXPORTER_BROKER_TRANSPORT_OPTION",
        "global_keyprefix=prod:;priority_steps=[0, 5];visibility_timeout=3600",
    )
    monkeypatch.setenv("CELERY_EXPORTER_RUNTIME_BUCKETS", "0.1,1,10")
    monkeypatch.setenv("CELERY_EXPORTER_WORKER_PURGE_AFTER", "120")
    ctx = command.make_context("celery-metrics-exporter", [])
    settings = build_settings(ctx.params)
    assert settings.broker_url == "amqp://guest:guest@rabbit:5672//"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9999)
    assert settings.transport_options == {
        "global_keyprefix": "prod:",
        "priority_steps": [0, 5],
        "visibility_timeout": 3600,
    }
    assert settings.runtime_buckets == (0.1, 1.0, 10.0)
    assert settings.worker_purge_after == 120.0


def test_bad_environment_value_names_the_flag() -> None:
    import os

    env = dict(os.environ, CELERY_EXPORTER_LISTEN_ADDRESS="no-port-here")
    result = run_cli(env=env)
    assert result.returncode == 2
    assert "--listen-address" in result.stderr


def test_parsers() -> None:
    assert parse_listen_address(":9808") == ("0.0.0.0", 9808)
    assert parse_listen_address("[::1]:9808") == ("::1", 9808)
    assert parse_key_values(["a=1", "b=x", 'c={"k": true}', "d="]) == {
        "a": 1,
        "b": "x",
        "c": {"k": True},
        "d": "",
    }
    assert parse_buckets("0.5, 1, +Inf") == (0.5, 1.0)
    assert parse_broker_url("sentinel://h1:26379;sentinel://h2:26379").startswith("sentinel")
    assert parse_broker_url("sqs://") == "sqs://"
    with pytest.raises(ValueError, match="unsupported scheme"):
        parse_broker_url("kafka://h:9092")


def test_several_named_brokers_with_scoped_options() -> None:
    settings = _settings(
        [
            "--broker-url", "red=redis://r:6379/0",
            "--broker-url", "jobs=amqp://u:p@rabbit:5672/jobs",
            "--broker-transport-option", "visibility_timeout=60",
            "--broker-transport-option", "red:global_keyprefix=prod:",
            "--broker-transport-option", "jobs:visibility_timeout=10",
            "--queues", "red:reports,celery,jobs:emails,a:b",
        ]
    )  # fmt: skip
    assert settings.brokers == (
        ("red", "redis://r:6379/0"),
        ("jobs", "amqp://u:p@rabbit:5672/jobs"),
    )
    (red_name, red), (jobs_name, jobs) = settings.per_broker()
    assert (red_name, red.broker_url) == ("red", "redis://r:6379/0")
    assert red.transport_options == {"visibility_timeout": 60, "global_keyprefix": "prod:"}
    assert red.queues == ("reports", "celery", "a:b")  # a:b is a queue name: no broker "a"
    assert (jobs_name, jobs.broker_url) == ("jobs", "amqp://u:p@rabbit:5672/jobs")
    assert jobs.transport_options == {"visibility_timeout": 10}
    assert jobs.queues == ("celery", "emails", "a:b")
    # One unnamed URL: no broker label; one named URL: labelled.
    assert _settings(["--broker-url", "redis://r/0"]).per_broker()[0][0] is None
    assert _settings(["--broker-url", "only=redis://r/0"]).per_broker()[0][0] == "only"


def test_transport_options_are_type_checked_and_unknown_keys_reported() -> None:
    from exporter.transport_options import check_transport_options

    assert check_transport_options(
        {"priority_steps": [0, 3, 6, 9], "sep": "\x06\x16", "visibility_timeout": 3600,
         "sentinel_kwargs": {"password": "x"}, "red:global_keyprefix": "p:",
         "global_key_prefix": "typo", "fanout_prefix": True}
    ) == ["global_key_prefix"]  # fmt: skip
    with pytest.raises(ValueError, match="priority_steps"):
        check_transport_options({"priority_steps": [3, 0]})
    with pytest.raises(ValueError, match="red:max_connections"):
        check_transport_options({"red:max_connections": 1.5})
