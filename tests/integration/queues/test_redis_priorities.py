"""Redis priority lists counted as they are in Redis, with the exporter told nothing about
the producers' priority_steps, separator or layout: real Redis, real kombu producers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import redis
from celery import Celery

from exporter.sources.redis_keyspace import KeyspaceWalk
from exporter.sources.redis_queues import RedisQueueSource
from tests.integration.diagnose.test_diagnose import diagnose
from tests.integration.queues.test_queues import FAST, SEP, sampled
from tests.support.exporter import ExporterProcess
from tests.support.metrics import Samples, value
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer


def priorities(s: Samples, queue: str) -> set[str]:
    """The priority labels of one queue's celery_queue_messages_by_priority series."""
    return {
        dict(ls)["priority"]
        for (n, ls) in s
        if n == "celery_queue_messages_by_priority" and dict(ls)["queue_name"] == queue
    }


def last_sample(s: Samples) -> float:
    return value(s, "celery_exporter_source_last_success_timestamp_seconds", source="redis") or 0


def _send_priorities(producer: Producer, queue: str, priorities: range, each: int) -> None:
    for priority in priorities:
        for i in range(each):
            producer.send("tests.add", args=(i, i), queue=queue, priority=priority)


def test_ten_priority_steps_counted_with_no_option(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    """The priority-queue incident: producers use steps 0..9, the exporter has kombu's
    default [0, 3, 6, 9]. Every one of the 30 messages counts, each priority has its
    series, and the mismatch shows in a metric and in one log line."""
    options = {"priority_steps": list(range(10)), "queue_order_strategy": "priority"}
    producer = producer_factory(redis_url, send_sent_event=False, broker_transport_options=options)
    _send_priorities(producer, "prio10", range(10), 3)
    client = redis.Redis.from_url(redis_url)
    independent = {str(p): client.llen(f"prio10{SEP}{p}" if p else "prio10") for p in range(10)}
    client.close()
    assert independent == {str(p): 3 for p in range(10)}

    exporter = exporter_factory(redis_url, *FAST)
    s = sampled(exporter, lambda s: value(s, "celery_queue_messages", queue_name="prio10") == 30)
    for priority, n in independent.items():
        got = value(s, "celery_queue_messages_by_priority", queue_name="prio10", priority=priority)
        assert got == n, priority
    assert priorities(s, "prio10") == set(independent)
    assert value(s, "celery_queue_priority_layout_mismatch", queue_name="prio10") == 1
    log = exporter.log()
    assert log.count("Redis queue 'prio10' has priority lists") == 1, log
    assert "priority_steps=[0,1,2,3,4,5,6,7,8,9]" in log
    # The next message to be consumed is priority 0's: its age is there.
    assert value(s, "celery_queue_oldest_message_age_seconds", queue_name="prio10") is not None


def test_steps_0_5_and_a_matching_configuration_is_not_a_mismatch(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    """Steps [0, 5]: priority 7 lands in list 5, which the default steps do not name.
    A queue filled with the default steps (the same as the exporter's) is no mismatch."""
    producer = producer_factory(
        redis_url, send_sent_event=False, broker_transport_options={"priority_steps": [0, 5]}
    )
    for priority in (0, 0, 7, 7, 7):
        producer.send("tests.add", args=(1, 1), queue="five", priority=priority)
    default = producer_factory(redis_url, send_sent_event=False)
    for priority in (0, 3, 9, 9):
        default.send("tests.add", args=(1, 1), queue="usual", priority=priority)
    exporter = exporter_factory(redis_url, *FAST)
    s = sampled(
        exporter,
        lambda s: (
            value(s, "celery_queue_messages", queue_name="five") == 5
            and value(s, "celery_queue_messages", queue_name="usual") == 4
        ),
    )
    assert value(s, "celery_queue_messages_by_priority", queue_name="five", priority="0") == 2
    assert value(s, "celery_queue_messages_by_priority", queue_name="five", priority="5") == 3
    assert value(s, "celery_queue_priority_layout_mismatch", queue_name="five") == 1
    assert value(s, "celery_queue_priority_layout_mismatch", queue_name="usual") == 0
    assert priorities(s, "usual") == {"0", "3", "6", "9"}
    assert "priority_steps=[0,5]" in exporter.log()
    assert "Redis queue 'usual'" not in exporter.log()


def test_custom_separator_found_with_no_option(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    """sep=":": the queue is found through kombu's binding (whose members use the same
    separator), its lists ``jobs:3``, ``jobs:9`` by probing."""
    producer = producer_factory(
        redis_url, send_sent_event=False, broker_transport_options={"sep": ":"}
    )
    for priority in (0, 4, 4, 9):
        producer.send("tests.add", args=(1, 1), queue="jobs", priority=priority)
    client = redis.Redis.from_url(redis_url)
    assert (client.llen("jobs"), client.llen("jobs:3"), client.llen("jobs:9")) == (1, 2, 1)
    client.close()
    exporter = exporter_factory(redis_url, *FAST)
    s = sampled(exporter, lambda s: value(s, "celery_queue_messages", queue_name="jobs") == 4)
    assert value(s, "celery_queue_messages_by_priority", queue_name="jobs", priority="3") == 2
    assert value(s, "celery_queue_messages_by_priority", queue_name="jobs", priority="9") == 1
    assert value(s, "celery_queue_priority_layout_mismatch", queue_name="jobs") == 1
    assert "--broker-transport-option 'sep=':''" in exporter.log()


def test_global_keyprefix_with_unknown_steps_and_separator(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
) -> None:
    """The exporter needs the prefix (Celery's events and control are prefixed too); the
    steps and separator it is not told are learned under that prefix."""
    options = {"global_keyprefix": "prod:", "priority_steps": [0, 2, 8], "sep": "."}
    producer = producer_factory(redis_url, send_sent_event=False, broker_transport_options=options)
    for priority in (1, 2, 2, 9):
        producer.send("tests.add", args=(1, 1), queue="billing", priority=priority)
    client = redis.Redis.from_url(redis_url)
    assert (client.llen("prod:billing"), client.llen("prod:billing.2")) == (1, 2)
    assert client.llen("prod:billing.8") == 1
    # An unprefixed look-alike is not the queue's.
    client.lpush("billing.5", "not a task")
    client.close()
    exporter = exporter_factory(
        redis_url, *FAST, "--broker-transport-option", "global_keyprefix=prod:"
    )
    s = sampled(exporter, lambda s: value(s, "celery_queue_messages", queue_name="billing") == 4)
    assert priorities(s, "billing") == {"0", "2", "3", "6", "8", "9"}
    assert value(s, "celery_queue_messages_by_priority", queue_name="billing", priority="2") == 2
    assert value(s, "celery_queue_messages_by_priority", queue_name="billing", priority="8") == 1
    assert value(s, "celery_queue_priority_layout_mismatch", queue_name="billing") == 1


def test_diagnose_names_the_mismatch_and_the_fix(
    redis_url: str,
    producer_factory: Callable[..., Producer],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    """Producers and a worker on steps 0..9, diagnose told nothing: the queue's lists and
    the worker's own options are both reported, with the flag to give."""
    options = {"priority_steps": list(range(10))}
    producer = producer_factory(redis_url, send_sent_event=False, broker_transport_options=options)
    _send_priorities(producer, "ten", range(10), 1)
    worker = worker_factory(
        redis_url,
        "tensteps@test",
        queues=("other",),
        heartbeat_interval=1,
        extra_env={"TEST_BROKER_TRANSPORT_OPTIONS": json.dumps(options)},
    )
    worker.wait_ready()
    result = diagnose(redis_url, "--listen", "2")
    by_priority = ", ".join(f"{p}: 1" for p in range(10))
    assert f"by priority: {by_priority}\n" in result.stdout, result.stdout
    assert (
        "WARNING   queue `ten` has priority lists for steps [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] "
        "(separator '\\x06\\x16') while the exporter's priority_steps are [0, 3, 6, 9] "
        "(kombu's default)"
    ) in result.stdout, result.stdout
    fix = (
        "fix:   give producers, workers and the exporter the same broker_transport_options "
        "(exporter: --broker-transport-option 'priority_steps=[0,1,2,3,4,5,6,7,8,9]')"
    )
    assert result.stdout.count(fix) == 2, result.stdout
    assert (
        "WARNING   worker `tensteps@test` uses priority_steps [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "
        "separator '\\x06\\x16'; the exporter [0, 3, 6, 9], '\\x06\\x16'"
    ) in result.stdout, result.stdout
    assert "CRITICAL  queue `ten` holds 10 messages and no worker consumes it" in result.stdout


def test_keyspace_walk_is_bounded_and_resumes_across_samples(redis_url: str) -> None:
    """The million-key case in small (bench/keyspace.py measures the real one): 5,000
    unrelated keys, a walk of at most 5 SCAN calls of 100 keys per sample. A named queue is
    counted in full from the first sample; a queue only kombu's bindings name is found by
    the time the walk has gone round, never by a call beyond the budget."""
    options = {"priority_steps": list(range(10))}
    app = Celery(broker=redis_url)
    app.conf.broker_transport_options = options
    for priority in range(10):
        app.send_task("tests.add", queue="named", priority=priority)
    app.send_task("tests.add", queue="listed")
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(f"user:session:{i}", "x")
    pipe.execute()
    source = RedisQueueSource(Celery(broker=redis_url), {}, timeout=5.0)
    source.walk = KeyspaceWalk(count=100, calls=5)
    listed_in: list[bool] = []
    passes: list[int] = []
    try:
        for i in range(1, 16):
            before = client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
            sample = source.sample(["named"])
            calls = client.info("commandstats")["cmdstat_scan"]["calls"] - before
            assert calls <= 5, (i, calls)
            assert sample.queues["named"].ready == 10, i
            assert set(sample.queues["named"].by_priority or {}) == {str(p) for p in range(10)}
            listed_in.append("listed" in sample.queues)
            passes.append(source.walk.passes)
    finally:
        source.close()
        client.close()
        app.close()
    # 5,000-odd keys at up to 500 per sample: the first pass ends after several samples
    # (where in it the binding key comes is up to Redis' hash table), and from then on the
    # queue only kombu's bindings name is listed in every sample.
    first_pass = passes.index(1)
    assert first_pass >= 5, passes  # about 10 samples; SCAN's COUNT is a hint
    assert all(listed_in[first_pass:]), listed_in
    assert listed_in.index(True) <= first_pass


def test_workers_own_layout_is_read_before_any_message(
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    """The worker's ``inspect conf`` names its priority_steps: the exporter (told nothing)
    reads those lists from then on, shows each priority at 0 while the queue is empty,
    and says once that the configurations differ."""
    options = {"priority_steps": list(range(10)), "queue_order_strategy": "priority"}
    exporter = exporter_factory(redis_url, *FAST)
    worker = worker_factory(
        redis_url,
        "tenlists@test",
        extra_env={"TEST_BROKER_TRANSPORT_OPTIONS": json.dumps(options)},
    )
    worker.wait_ready()
    s = sampled(exporter, lambda s: priorities(s, "celery") == {str(p) for p in range(10)})
    assert value(s, "celery_queue_messages", queue_name="celery") == 0
    assert value(s, "celery_queue_priority_layout_mismatch", queue_name="celery") == 0
    log = exporter.log()
    assert log.count("worker tenlists@test uses priority_steps [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]") == 1
    assert "--broker-transport-option 'priority_steps=[0,1,2,3,4,5,6,7,8,9]'" in log


def test_an_app_under_another_keyprefix_is_pointed_out(
    redis_url: str, producer_factory: Callable[..., Producer]
) -> None:
    """Producers with global_keyprefix, diagnose told nothing: it cannot see that app's
    queues (kombu prefixes everything), and says which prefix to give."""
    producer = producer_factory(
        redis_url, send_sent_event=False, broker_transport_options={"global_keyprefix": "prod:"}
    )
    producer.send("tests.add", args=(1, 1), queue="orders")
    result = diagnose(redis_url, "--listen", "1")
    assert "WARNING   Redis holds Celery queues under global_keyprefix `prod:`" in result.stdout
    assert "fix:   if that app is the one to watch: --broker-transport-option " in result.stdout
    assert "'global_keyprefix=prod:'" in result.stdout, result.stdout


def test_a_queue_named_like_a_priority_list_is_its_own_queue(redis_url: str) -> None:
    """``tasks-1``, ``reports_2``, ``jobs.3`` beside ``tasks``, ``reports``, ``jobs``: each a
    queue of its own, not a priority list of the other, whether or not the exporter knows
    it yet (a separator made of name punctuation is never learned from a key name)."""
    client = redis.Redis.from_url(redis_url)
    pairs = [("tasks", "tasks-1"), ("reports", "reports_2"), ("jobs", "jobs.3")]
    for base, other in pairs:
        client.lpush(base, *[b"m"] * 5)
        client.lpush(other, *[b"m"] * 7)
    source = RedisQueueSource(Celery(broker=redis_url), {}, timeout=5.0)
    try:
        for known in ([b for b, _o in pairs], [q for pair in pairs for q in pair]):
            for _ in range(3):  # the keyspace walk sees every key in the first sample
                sample = source.sample(known)
                for base, other in pairs:
                    assert sample.queues[base].ready == 5, (known, base)
                    assert sample.queues[base].by_priority == {s: 0 for s in "369"} | {"0": 5}
                    assert sample.queues[base].priority_mismatch is None
                    if other in known:
                        assert sample.queues[other].ready == 7
            assert source.layout.seps == [SEP]
    finally:
        source.close()
        client.delete(*[q for pair in pairs for q in pair])
        client.close()


def test_queues_tasks_and_tasks_1_consumed_by_workers(
    redis_url: str,
    tmp_path: Path,
    exporter_factory: Callable[..., ExporterProcess],
    producer_factory: Callable[..., Producer],
    worker_factory: Callable[..., CeleryWorker],
) -> None:
    """A worker consumes ``tasks`` and ``tasks-1`` (held by one running task acknowledged
    late, so messages wait); the exporter with default flags: each depth exact in every
    sample, no layout mismatch, no separator advice in its log or in diagnose."""
    exporter = exporter_factory(redis_url, *FAST)
    worker = worker_factory(
        redis_url,
        "dash@test",
        queues=("tasks", "tasks-1"),
        pool="threads",
        extra_args=("--prefetch-multiplier", "1"),
    )
    worker.wait_ready()
    release = tmp_path / "release"
    producer = producer_factory(redis_url, send_sent_event=False)
    client = redis.Redis.from_url(redis_url)
    try:
        producer.send("tests.wait_for_file_acks_late", args=(str(release),), queue="tasks")
        wait_for(lambda: client.hlen("unacked") == 1 and client.llen("tasks") == 0, 30)
        for i in range(5):
            producer.send("tests.add", args=(i, i), queue="tasks")
        for i in range(7):
            producer.send("tests.add", args=(i, i), queue="tasks-1")
        assert (client.llen("tasks"), client.llen("tasks-1")) == (5, 7)

        def both(s: Samples) -> bool:
            return (
                value(s, "celery_queue_messages", queue_name="tasks") == 5
                and value(s, "celery_queue_messages", queue_name="tasks-1") == 7
            )

        s = sampled(exporter, both)
        for _ in range(3):  # and in each sample after
            last = last_sample(s)
            s = sampled(exporter, lambda s, last=last: last_sample(s) > last)
            assert both(s)
            for queue in ("tasks", "tasks-1"):
                assert priorities(s, queue) == {"0", "3", "6", "9"}
                assert value(s, "celery_queue_priority_layout_mismatch", queue_name=queue) == 0
        assert value(s, "celery_queue_messages_by_priority", queue_name="tasks", priority="0") == 5
        result = diagnose(redis_url, "--listen", "1")
        for text in (exporter.log(), result.stdout):
            assert "sep=" not in text and "has priority lists" not in text, text
    finally:
        release.touch()
        client.close()


def test_a_separator_is_learned_from_a_key_only_when_it_holds_a_kombu_message(
    redis_url: str,
) -> None:
    """No binding, no worker names ``#`` or ``~``: ``orders#3`` holding a kombu message is
    the priority-3 list of ``orders``; ``orders~1`` holding something else is not."""
    app = Celery(broker=redis_url)
    app.send_task("tests.add", args=(1, 1), queue="orders-source")
    client = redis.Redis.from_url(redis_url)
    client.rename("orders-source", "orders#3")
    client.delete("_kombu.binding.orders-source")
    client.lpush("orders", *[b"m"] * 2)
    client.lpush("orders~1", "not a task")
    source = RedisQueueSource(Celery(broker=redis_url), {}, timeout=5.0)
    try:
        for _ in range(2):
            sample = source.sample(["orders"])
            assert sample.queues["orders"].ready == 3
            assert sample.queues["orders"].by_priority == {"0": 2, "3": 1, "6": 0, "9": 0}
            assert source.layout.seps == [SEP, "#"]
    finally:
        source.close()
        client.delete("orders", "orders#3", "orders~1")
        client.close()
        app.close()
