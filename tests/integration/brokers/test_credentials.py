"""Credentials never leak: not in logs (debug level included), error messages, pages,
metrics or diagnose reports, whatever fails.

The secrets are distinctive (a random token inside), contain the characters URLs make hard
(``@ : / %``), and are searched for raw and in every URL encoding, and by their token alone
(so a partial or differently escaped leak is caught too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.ports import free_port
from tests.support.servers import RabbitMQServer, RedisServer
from tests.support.waiting import wait_for


@dataclass
class Secret:
    token: str = field(default_factory=lambda: f"S3CRET{uuid.uuid4().hex[:12]}")

    @property
    def raw(self) -> str:
        return f"p@ss:w/rd%41-{self.token}"

    @property
    def in_url(self) -> str:
        return quote(self.raw, safe="")

    def forms(self) -> set[str]:
        return {
            self.token,
            self.raw,
            self.in_url,
            quote(self.raw),
            quote_plus(self.raw),
            json.dumps(self.raw),
        }


@dataclass
class Captured:
    """Everything one run showed to the outside, by where it showed it."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str) -> None:
        self.texts[where] = text

    def leaks(self, secrets: list[Secret]) -> list[str]:
        found = []
        for where, text in self.texts.items():
            for secret in secrets:
                for form in secret.forms():
                    if form in text:
                        found.append(f"{where}: {form!r}")
        return found


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Secret]]:
    server = RedisServer(tmp_path / "secured-redis")
    server.start()
    secret = Secret()
    with server.client() as client:
        client.config_set("requirepass", secret.raw)
    try:
        yield server, secret
    finally:
        server.stop()


def redis_url(port: int, secret: Secret) -> str:
    return f"redis://:{secret.in_url}@127.0.0.1:{port}/0"


def run_diagnose(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "exporter", "diagnose", "--broker-url", url,
        "--listen", "1", *args,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)


def exporter_output(exporter: ExporterProcess) -> str:
    """What the exporter wrote (stdout and stderr), without the harness' own "===== start
    <argv>" lines: the command line holds the URL, the exporter's output must not."""
    return "\n".join(
        line
        for line in exporter.process.log_path.read_text(errors="replace").splitlines()
        if not line.startswith("===== start ")
    )


def capture_daemon(exporter: ExporterProcess, captured: Captured, name: str) -> None:
    for path in ("/", "/metrics", "/readyz", "/healthz"):
        status, body = exporter.get(path)
        captured.add(f"{name} GET {path} ({status})", body)


def capture_diagnose(url: str, captured: Captured, name: str, *args: str) -> None:
    for fmt in ("text", "json"):
        result = run_diagnose(url, "--format", fmt, *args)
        captured.add(f"diagnose {name} {fmt} stdout (exit {result.returncode})", result.stdout)
        captured.add(f"diagnose {name} {fmt} stderr", result.stderr)


def transport_secret_args(secret: Secret) -> list[str]:
    # Secrets in transport options: Sentinel's own password, and a key named password.
    return [
        "--broker-transport-option",
        "sentinel_kwargs=" + json.dumps({"password": secret.raw}),
        "--broker-transport-option",
        f"password={secret.raw}",
    ]


def test_secrets_never_shown_through_every_failure(
    secured_redis: tuple[RedisServer, Secret],
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    server, password = secured_redis
    option_secret = Secret()
    wrong = Secret()
    secrets = [password, option_secret, wrong]
    captured = Captured()
    good_url = redis_url(server.port, password)
    debug = ("--log-level", "debug", "--reconnect-max-backoff", "1", "--sample-interval", "1")

    # 1. Right password, secrets in transport options, debug logs; then a broker outage
    #    during the run, and the broker back.
    exporter = exporter_factory(good_url, *debug, *transport_secret_args(option_secret))
    assert "redis://:***@127.0.0.1" in exporter.get("/")[1]
    capture_daemon(exporter, captured, "connected")
    server.stop()
    wait_for(lambda: exporter.status("/readyz") == 503, 30)
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    capture_daemon(exporter, captured, "outage")
    server.start()
    with server.client() as client:
        client.config_set("requirepass", password.raw)  # the restart forgot it
    wait_for(lambda: exporter.status("/readyz") == 200, 30, message=exporter.log)
    exporter.terminate()
    captured.add("daemon connected+outage log", exporter_output(exporter))

    # 2. Wrong password.
    exporter = exporter_factory(redis_url(server.port, wrong), *debug, wait_ready=False)
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    capture_daemon(exporter, captured, "wrong password")
    exporter.terminate()
    captured.add("daemon wrong password log", exporter_output(exporter))

    # 3. Unreachable host, URL from the environment as in a Kubernetes Secret.
    unreachable = redis_url(free_port(), password)
    exporter = exporter_factory(unreachable, *debug, wait_ready=False, broker_url_in_env=True)
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    capture_daemon(exporter, captured, "unreachable")
    exporter.terminate()
    captured.add("daemon unreachable log", exporter_output(exporter))

    # 4. A bad transport option next to the secret ones: refused at startup, one line.
    bad_option = ["--broker-transport-option", "socket_timeout=not-a-number"]
    refused = subprocess.run(
        [sys.executable, "-m", "exporter", "--broker-url", good_url, *debug,
         *transport_secret_args(option_secret), *bad_option,
         "--listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "socket_timeout" in refused.stderr
    captured.add("daemon bad option output", refused.stdout + refused.stderr)

    # 5. Sentinel (two sentinels, neither reachable), where sentinel_kwargs is really used.
    sentinels = ";".join(f"sentinel://:{password.in_url}@127.0.0.1:{free_port()}" for _ in range(2))
    sentinel_args = [
        "--broker-transport-option", "master_name=mymaster",
        *transport_secret_args(option_secret),
    ]  # fmt: skip
    exporter = exporter_factory(sentinels, *debug, *sentinel_args, wait_ready=False)
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    capture_daemon(exporter, captured, "sentinel")
    exporter.terminate()
    captured.add("daemon sentinel log", exporter_output(exporter))
    capture_diagnose(sentinels, captured, "sentinel", *sentinel_args)

    # 6. diagnose, text and JSON, through the same cases.
    capture_diagnose(good_url, captured, "connected", *transport_secret_args(option_secret))
    capture_diagnose(redis_url(server.port, wrong), captured, "wrong password")
    capture_diagnose(unreachable, captured, "unreachable")
    capture_diagnose(good_url, captured, "bad option", *transport_secret_args(option_secret),
                     *bad_option)  # fmt: skip

    # The runs did fail the ways they should (else the search proves little).
    logs = "\n".join(captured.texts.values())
    assert "cannot reach the broker" in captured.texts["daemon wrong password log"]
    assert any(k.startswith("diagnose wrong password text stdout (exit 2)") for k in captured.texts)
    assert len(logs) > 5000
    assert not captured.leaks(secrets), "\n".join(captured.leaks(secrets))


@pytest.mark.rabbitmq
def test_amqp_secrets_never_shown(
    rabbitmq_server: RabbitMQServer,
    rabbitmq_url: str,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    vhost = rabbitmq_url.rsplit("/", 1)[1]
    wrong = Secret()
    captured = Captured()
    url = f"amqp://guest:{wrong.in_url}@127.0.0.1:{rabbitmq_server.port}/{vhost}"
    exporter = exporter_factory(
        url, "--log-level", "debug", "--reconnect-max-backoff", "1", wait_ready=False
    )
    wait_for(lambda: "cannot reach the broker" in exporter.log(), 30)
    capture_daemon(exporter, captured, "amqp wrong password")
    exporter.terminate()
    captured.add("amqp daemon log", exporter_output(exporter))
    capture_diagnose(url, captured, "amqp wrong password")
    assert "ACCESS_REFUSED" in "\n".join(captured.texts.values()) or "credentials" in "\n".join(
        captured.texts.values()
    )
    assert not captured.leaks([wrong]), "\n".join(captured.leaks([wrong]))
