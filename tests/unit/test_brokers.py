"""A broker is one module (exporter/brokers/): every URL scheme maps to one ``Broker``, which
says what the broker can do; no other module decides the broker kind from the URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from celery import Celery

from exporter.brokers import BROKERS, SCHEMES, bounded_connection, for_url
from exporter.brokers.amqp import AMQP
from exporter.brokers.redis import REDIS
from exporter.brokers.sqs import SQS
from exporter.settings import Settings, parse_broker_url
from exporter.sources.base import QueueSample
from exporter.sources.rabbitmq_queues import RabbitMQQueueSource
from exporter.sources.redis_queues import RedisQueueSource
from exporter.transport_options import KNOWN

EXPORTER = Path(__file__).resolve().parents[2] / "exporter"


@pytest.mark.parametrize(
    ("url", "broker"),
    [
        ("redis://127.0.0.1:6379/0", REDIS),
        ("REDIS://h/0", REDIS),
        ("rediss://:secret@h:6380/0", REDIS),
        ("sentinel://h1:26379;sentinel://h2:26379", REDIS),
        ("amqp://guest:guest@h:5672//", AMQP),
        ("amqps://h:5671/vhost", AMQP),
        ("pyamqp://h//", AMQP),
        ("sqs://", SQS),
        ("sqs://AKIA:secret@localhost:4566", SQS),
    ],
)
def test_every_scheme_has_its_broker(url: str, broker: object) -> None:
    assert for_url(url) is broker
    assert Settings(broker_url=url).broker is broker


def test_an_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ValueError) as raised:
        parse_broker_url("kafka://h:9092")
    assert str(raised.value) == (
        "unsupported scheme 'kafka'; use one of redis, rediss, sentinel, amqp, amqps, pyamqp, sqs"
    )
    assert SCHEMES == ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "sqs")


def test_capabilities_and_what_a_queue_sample_holds() -> None:
    fields = set(QueueSample.__dataclass_fields__)
    for broker in BROKERS:
        events = broker is not SQS  # Celery has no broadcast on SQS
        assert (broker.task_events, broker.remote_control, broker.queue_sampling) == (
            events,
            events,
            True,
        )
        assert broker.queue_sample_holds <= fields, broker.name
    assert SQS.queue_sample_holds == {"ready", "reserved"}
    assert REDIS.queue_sample_holds == fields - {"broker_consumers"}
    assert AMQP.queue_sample_holds == {"ready", "broker_consumers"}


def test_each_broker_gives_its_parts() -> None:
    redis_settings = Settings(broker_url="redis://127.0.0.1:1/0", sample_timeout=2.0)
    app = Celery(broker=redis_settings.broker_url)
    assert isinstance(REDIS.queue_source(app, redis_settings, dict), RedisQueueSource)
    amqp_settings = Settings(broker_url="amqp://127.0.0.1:1//")
    amqp_app = Celery(broker=amqp_settings.broker_url)
    assert isinstance(AMQP.queue_source(amqp_app, amqp_settings, dict), RabbitMQQueueSource)
    assert AMQP.event_reader(object(), lambda body, ct: None, lambda reason: None) is None
    # Socket timeouts in the transport's own words; the user's own values win.
    conn = bounded_connection(app, 3.0)
    assert conn.transport_options["socket_timeout"] == 3.0
    conn.release()
    app.conf.broker_transport_options = {"read_timeout": 9.0}
    amqp_app.conf.broker_transport_options = {"read_timeout": 9.0}
    conn = bounded_connection(amqp_app, 3.0)
    assert (conn.transport_options["read_timeout"], conn.transport_options["write_timeout"]) == (
        9.0,
        3.0,
    )
    conn.release()
    # A nested option (SQS's client-config) merges: the user's keys win, the timeouts stay.
    sqs_app = Celery(broker="sqs://AKIA:secret@127.0.0.1:1", set_as_current=False)
    sqs_app.conf.broker_transport_options = {
        "client-config": {"max_pool_connections": 10, "read_timeout": 9.0}
    }
    conn = bounded_connection(sqs_app, 3.0)
    assert conn.transport_options["client-config"] == {
        "max_pool_connections": 10,
        "read_timeout": 9.0,
        "connect_timeout": 3.0,
        "retries": {"total_max_attempts": 1},
    }
    conn.release()
    # Redis names the exporter's connection and never restores unacked messages.
    assert REDIS.app_transport_options({})["client_name"] == "celery-metrics-exporter"
    assert AMQP.app_transport_options({}) == {}


def test_the_transport_options_known_are_the_brokers_own() -> None:
    for broker in BROKERS:
        assert set(broker.option_checks) <= set(KNOWN)
    assert KNOWN["priority_steps"] is REDIS.option_checks["priority_steps"]
    assert KNOWN["read_timeout"] is AMQP.option_checks["read_timeout"]


def test_no_module_outside_brokers_decides_the_kind_from_the_url() -> None:
    offenders = []
    pattern = re.compile(r"\.scheme\b|\bis_redis\b|[\"'](rediss|sentinel|amqps|pyamqp)[\"']")
    for path in sorted(EXPORTER.rglob("*.py")):
        if "brokers" in path.relative_to(EXPORTER).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(EXPORTER)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_how_to_add_a_broker_recipe_matches_the_code() -> None:
    """docs/architecture.md's recipe, with SQS as its worked example, names what exists."""
    text = (EXPORTER.parent / "docs" / "architecture.md").read_text()
    recipe = text.split("## How to add a broker", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([^`\s]+)`", recipe))
    # Every file it names exists (exporter/ paths relative to the package, tests/ to the repo).
    for path in {n for n in named if n.endswith(".py") and "<" not in n}:
        root = EXPORTER.parent if path.startswith("tests/") else EXPORTER
        assert (root / path).is_file() or (EXPORTER.parent / path).is_file(), path
    # The Broker members it lists are the Broker's, and the QueueSource's are the protocol's.
    from exporter.brokers.base import Broker
    from exporter.sources.base import QueueSource

    members = ("name", "schemes", "task_events", "remote_control", "queue_sampling")
    for member in (*members, "queue_sample_holds", "option_checks", "socket_timeouts"):
        assert member in named, member
        assert hasattr(Broker, member) or member in Broker.__annotations__, member
    for method in ("queue_source", "event_reader", "app_transport_options", "connect"):
        assert hasattr(Broker, method)
    assert {"queue_source", "event_reader"} <= named
    for member in ("sample(queues)", "close()"):
        assert member in named and hasattr(QueueSource, member.split("(")[0])
    # Every broker is a module of brokers/ and named in BROKERS; the worked example's values.
    for broker in BROKERS:
        assert type(broker).__module__.startswith("exporter.brokers.")
    assert "brokers/sqs.py" in named and "sources/sqs_queues.py" in named
    assert (SQS.task_events, SQS.remote_control) == (False, False)
    assert 'queue_sample_holds = {"ready", "reserved"}' in " ".join(recipe.split())
    assert SQS.queue_sample_holds == {"ready", "reserved"}
    assert {"region", "queue_name_prefix", "predefined_queues", "client-config"} <= set(
        SQS.option_checks
    )
    assert isinstance(SQS.socket_timeouts(1.0)["client-config"], dict)
