"""Pin the Celery/kombu behaviour the exporter relies on (see shared CELERY-FACTS.md).

Every test runs real brokers and real workers, and reads the event stream raw: its own queue
bound to the ``celeryev`` exchange with routing key ``#``, bodies decoded with ``json``. If one
of these fails after a Celery or kombu upgrade, the exporter's assumptions need revisiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.events import Event, RawEventConsumer
from tests.support.workers import CeleryWorker, Producer

WorkerFactory = Callable[..., CeleryWorker]
ProducerFactory = Callable[..., Producer]

#: Heartbeat interval for the workers that must heartbeat quickly (Celery's default is 2 s).
HEARTBEAT = 1.0
EVENT_TIMEOUT = 20.0


@pytest.fixture
def events(broker_url: str) -> Iterator[RawEventConsumer]:
    with RawEventConsumer(broker_url) as consumer:
        yield consumer


@pytest.fixture
def redis_events(redis_url: str) -> Iterator[RawEventConsumer]:
    with RawEventConsumer(redis_url) as consumer:
        yield consumer


def _is(event_type: str, **fields: object) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return event.get("type") == event_type and all(
            event.get(key) == value for key, value in fields.items()
        )

    return match


def test_prefork_worker_batches_task_events_in_task_multi_lists(
    broker_url: str,
    events: RawEventConsumer,
    worker_factory: WorkerFactory,
    producer_factory: ProducerFactory,
) -> None:
    worker = worker_factory(broker_url, "batch@test", pool="prefork", concurrency=1, events=True)
    worker.wait_ready()
    producer = producer_factory(broker_url, send_sent_event=False)
    ids = [producer.send("tests.add", (i, i)) for i in range(3)]
    for task_id in ids:
        events.wait_for_event(_is("task-succeeded", uuid=task_id), EVENT_TIMEOUT)

    batches = [m for m in events.messages if m.routing_key == "task.multi"]
    routing_keys = [m.routing_key for m in events.messages]
    assert batches, f"no task.multi message; routing keys: {routing_keys}"
    for batch in batches:
        assert isinstance(batch.body, list), batch
        assert batch.body, "empty batch"
        assert all(isinstance(e, dict) and e["type"].startswith("task-") for e in batch.body)
    # Every task event of the worker came inside a list: a consumer must unpack them.
    single = [
        m
        for m in events.messages
        if isinstance(m.body, dict) and str(m.body.get("type", "")).startswith("task-")
    ]
    assert single == [], single
    batched_types = {e["type"] for b in batches for e in b.body if e.get("uuid") in ids}
    assert {"task-received", "task-started", "task-succeeded"} <= batched_types


def test_which_task_events_carry_name_and_queue(
    broker_url: str,
    events: RawEventConsumer,
    worker_factory: WorkerFactory,
    producer_factory: ProducerFactory,
) -> None:
    # Default heartbeat interval on purpose: worker-online reports freq 2.0.
    worker = worker_factory(broker_url, "fields@test", pool="solo", events=True)
    worker.wait_ready()
    producer = producer_factory(broker_url, send_sent_event=True)
    task_id = producer.send("tests.add", (2, 3))

    sent = events.wait_for_event(_is("task-sent", uuid=task_id), EVENT_TIMEOUT)
    received = events.wait_for_event(_is("task-received", uuid=task_id), EVENT_TIMEOUT)
    started = events.wait_for_event(_is("task-started", uuid=task_id), EVENT_TIMEOUT)
    succeeded = events.wait_for_event(_is("task-succeeded", uuid=task_id), EVENT_TIMEOUT)
    online = events.wait_for_event(_is("worker-online", hostname=worker.hostname), EVENT_TIMEOUT)

    # task-sent: from the producer, one event per message, with name and routing.
    assert sent["name"] == "tests.add"
    assert sent["queue"] == "celery"
    assert sent["routing_key"] == "celery"
    assert "exchange" in sent
    assert sent["hostname"].startswith("gen"), sent["hostname"]
    assert sent["hostname"] != worker.hostname
    sent_messages = [
        m for m in events.messages if isinstance(m.body, dict) and m.body.get("uuid") == task_id
    ]
    assert [m.routing_key for m in sent_messages] == ["task.sent"]

    # task-received: name, but no queue/routing.
    assert received["name"] == "tests.add"
    assert received["hostname"] == worker.hostname
    for key in ("queue", "routing_key", "exchange"):
        assert key not in received, (key, received)

    # task-started / task-succeeded: uuid only, no name.
    for event in (started, succeeded):
        assert event["uuid"] == task_id
        assert event["hostname"] == worker.hostname
        assert "name" not in event, event
        assert "queue" not in event, event
    assert succeeded["result"] == "5"
    assert isinstance(succeeded["runtime"], float)

    assert online["freq"] == 2.0


def test_raw_event_timestamps_are_epoch_seconds(
    broker_url: str,
    events: RawEventConsumer,
    worker_factory: WorkerFactory,
    producer_factory: ProducerFactory,
) -> None:
    worker = worker_factory(broker_url, "clock@test", pool="solo", events=True)
    worker.wait_ready()
    producer = producer_factory(broker_url, send_sent_event=True)
    task_id = producer.send("tests.add", (1, 1))
    events.wait_for_event(_is("task-succeeded", uuid=task_id), EVENT_TIMEOUT)
    events.wait_for_event(_is("worker-online", hostname=worker.hostname), EVENT_TIMEOUT)

    now = time.time()
    checked = [e for e in events.events if e.get("type") != "test-probe"]
    assert len(checked) >= 5  # online, sent, received, started, succeeded
    for event in checked:
        # Raw, the timestamp is the sender's time.time(): no timezone shift (EventReceiver
        # would rewrite it by the utcoffset fields; see CELERY-FACTS.md).
        assert abs(event["timestamp"] - now) < 60, event
        assert "utcoffset" in event
        assert "local_received" not in event


def test_worker_without_events_flag_heartbeats_but_sends_no_task_events(
    redis_url: str,
    redis_events: RawEventConsumer,
    worker_factory: WorkerFactory,
    producer_factory: ProducerFactory,
) -> None:
    worker = worker_factory(
        redis_url,
        "quiet@test",
        pool="prefork",
        concurrency=1,
        events=False,
        heartbeat_interval=HEARTBEAT,
    )
    worker.wait_ready()
    producer = producer_factory(redis_url, send_sent_event=False)
    producer.send("tests.sleep", (3 * HEARTBEAT,))
    host = worker.hostname

    busy = redis_events.wait_for_event(
        lambda e: _is("worker-heartbeat", hostname=host)(e) and e.get("active", 0) >= 1,
        EVENT_TIMEOUT,
        message="no heartbeat showing the running task",
    )
    assert busy["freq"] == HEARTBEAT
    assert isinstance(busy["processed"], int)
    idle = redis_events.wait_for_event(
        lambda e: (
            _is("worker-heartbeat", hostname=host)(e)
            and e.get("active") == 0
            and e.get("processed", 0) >= 1
        ),
        EVENT_TIMEOUT,
        message="no heartbeat after the task finished",
    )
    # One more heartbeat after the task finished: anything the worker had queued by then
    # would have been flushed.
    seen = len(redis_events.of_type("worker-heartbeat", hostname=host))
    redis_events.drain_until(
        lambda: len(redis_events.of_type("worker-heartbeat", hostname=host)) > seen,
        EVENT_TIMEOUT,
        message="no further heartbeat",
    )
    assert idle["processed"] == 1
    task_events = [e for e in redis_events.events if str(e.get("type", "")).startswith("task-")]
    assert task_events == []
    assert redis_events.of_type("worker-online", hostname=host)


def test_worker_offline_on_warm_shutdown_but_not_on_sigkill(
    redis_url: str,
    redis_events: RawEventConsumer,
    worker_factory: WorkerFactory,
) -> None:
    killed = worker_factory(redis_url, "killed@test", events=False, heartbeat_interval=HEARTBEAT)
    termed = worker_factory(redis_url, "termed@test", events=False, heartbeat_interval=HEARTBEAT)
    killed.wait_ready()
    termed.wait_ready()
    for worker in (killed, termed):
        redis_events.wait_for_event(
            _is("worker-heartbeat", hostname=worker.hostname), EVENT_TIMEOUT
        )

    killed.kill()
    assert not killed.running
    # Proving an absence needs a bounded observation window. It is measured in heartbeats of
    # the surviving worker rather than in seconds: three of its heartbeats after the kill show
    # the stream kept flowing for three intervals, enough for any offline event of the killed
    # worker to have arrived.
    after_kill = len(redis_events.events)

    def termed_beats_since_kill() -> int:
        return sum(
            1
            for e in redis_events.events[after_kill:]
            if _is("worker-heartbeat", hostname=termed.hostname)(e)
        )

    redis_events.drain_until(
        lambda: termed_beats_since_kill() >= 3,
        EVENT_TIMEOUT,
        message="the surviving worker stopped heartbeating",
    )
    assert redis_events.of_type("worker-offline", hostname=killed.hostname) == []
    # A heartbeat already in flight at the kill may still arrive; later ones may not.
    second_beat = [
        i
        for i, e in enumerate(redis_events.events)
        if i >= after_kill and _is("worker-heartbeat", hostname=termed.hostname)(e)
    ][1]
    assert [
        e for e in redis_events.events[second_beat:] if e.get("hostname") == killed.hostname
    ] == []

    termed.stop()
    assert termed.returncode == 0, termed.log_text()[-3000:]
    offline = redis_events.wait_for_event(
        _is("worker-offline", hostname=termed.hostname), EVENT_TIMEOUT
    )
    assert offline["freq"] == HEARTBEAT


def test_redis_priority_lists_follow_the_producers_steps(
    redis_url: str, producer_factory: ProducerFactory
) -> None:
    """kombu puts priority p (clamped to 0..9) in the list of the largest step not above p
    (the last step when none is: steps [5, 9] put priority 0 in list 9); step 0 is the bare
    queue name. So every list kombu can create is one of steps 0..9
    (exporter/sources/redis_priorities.py probes exactly those)."""
    import redis

    sep = "\x06\x16"
    cases = {
        "ten": ([*range(10)], [0, 4, 9, 12], {"ten": 1, f"ten{sep}4": 1, f"ten{sep}9": 2}),
        "two": ([0, 5], [0, 4, 5, 9], {"two": 2, f"two{sep}5": 2}),
        "high": ([5, 9], [0, 5, 7], {f"high{sep}9": 1, f"high{sep}5": 2}),
    }
    client = redis.Redis.from_url(redis_url)
    try:
        for queue, (steps, priorities, expected) in cases.items():
            producer = producer_factory(
                redis_url,
                send_sent_event=False,
                broker_transport_options={"priority_steps": steps},
            )
            for priority in priorities:
                producer.send("tests.add", args=(1, 1), queue=queue, priority=priority)
            keys = {
                k.decode(): client.llen(k)
                for k in client.scan_iter(match=f"{queue}*")
                if client.type(k) == b"list"
            }
            assert keys == expected, queue
    finally:
        client.close()
