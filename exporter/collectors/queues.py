"""Queue metrics: the latest broker sample plus who listens, rendered at scrape time.

Depth, reserved and age come from the last successful sample (see sources/runner.py);
consumers per queue are computed from the workers' queues and liveness at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.control import WorkerQueues
from exporter.prom.families import by_label
from exporter.sources.runner import QueueSampler
from exporter.state.worker_registry import WorkerRegistry


class QueueCollector:
    def __init__(
        self,
        sampler: QueueSampler,
        worker_queues: WorkerQueues,
        workers: WorkerRegistry,
        worker_consumers: bool = True,
    ) -> None:
        self.sampler = sampler
        self.worker_queues = worker_queues
        self.workers = workers
        # Consumer counts come from the workers' replies to remote control: without it (SQS)
        # the family is left out, rather than zeros that read as "no worker consumes it".
        self.worker_consumers = worker_consumers

    def collect(self) -> Iterator[Metric]:
        yield from self._health()
        snapshot = self.sampler.snapshot
        listening = self._live_consumers()
        ready = GaugeMetricFamily(
            "celery_queue_messages",
            "Messages waiting in the queue (ready, not yet handed to a worker), sampled from "
            "the broker; on Redis summed over the priority sub-queues.",
            labels=["queue_name"],
        )
        by_priority = GaugeMetricFamily(
            "celery_queue_messages_by_priority",
            "Ready messages per priority sub-queue (Redis), sampled.",
            labels=["queue_name", "priority"],
        )
        reserved = GaugeMetricFamily(
            "celery_queue_reserved_messages",
            "Messages handed to workers but not acknowledged (prefetched, ETA/countdown "
            "held, acks_late running): Redis' unacked hash, sampled.",
            labels=["queue_name"],
        )
        oldest = GaugeMetricFamily(
            "celery_queue_oldest_message_age_seconds",
            "How long the next message to be consumed has waited (Redis), sampled: from its "
            "task-sent event when seen, else since a sample first saw it next in line.",
            labels=["queue_name"],
        )
        broker_consumers = GaugeMetricFamily(
            "celery_queue_broker_consumers",
            "Consumers the broker counts on the queue (RabbitMQ), sampled.",
            labels=["queue_name"],
        )
        mismatch = GaugeMetricFamily(
            "celery_queue_priority_layout_mismatch",
            "Redis: 1 when the queue has priority lists (steps or separator) that the "
            "exporter's priority_steps/sep (or kombu's default) do not name; they are "
            "counted anyway. Producers and the exporter are configured differently.",
            labels=["queue_name"],
        )
        worker_consumers = GaugeMetricFamily(
            "celery_queue_worker_consumers",
            "Live workers that consume the queue (from their active_queues replies).",
            labels=["queue_name"],
        )
        queues = set(listening)
        if snapshot is not None:
            queues |= snapshot.sample.queues.keys()
            for queue, qs in sorted(snapshot.sample.queues.items()):
                ready.add_metric([queue], float(qs.ready))
                if qs.by_priority is not None:
                    for priority, count in qs.by_priority.items():
                        by_priority.add_metric([queue, priority], float(count))
                    mismatch.add_metric([queue], 0.0 if qs.priority_mismatch is None else 1.0)
                if qs.reserved is not None:
                    reserved.add_metric([queue], float(qs.reserved))
                if qs.broker_consumers is not None:
                    broker_consumers.add_metric([queue], float(qs.broker_consumers))
            for queue, age in sorted(snapshot.oldest_age.items()):
                oldest.add_metric([queue], age)
        for queue in sorted(queues):
            worker_consumers.add_metric([queue], float(listening.get(queue, 0)))
        yield from (ready, by_priority, mismatch, reserved, oldest)
        yield broker_consumers
        if self.worker_consumers:
            yield worker_consumers
        if snapshot is None:
            return
        # Broker-wide totals: only where the broker's sample holds them.
        for name, documentation, total in (
            (
                "celery_broker_delayed_messages",
                "RabbitMQ: ETA/countdown tasks not due yet, waiting in Celery's native delayed "
                "delivery queues (celery_delayed_0..27; Celery 5.5+ with quorum queues), sampled.",
                snapshot.sample.delayed_total,
            ),
            (
                "celery_broker_reserved_messages",
                "All unacknowledged messages in Redis' unacked hash, sampled. Per-queue "
                "counts are exported while this is at most the scan limit (10,000).",
                snapshot.sample.reserved_total,
            ),
        ):
            if total is not None:
                yield GaugeMetricFamily(name, documentation, value=float(total))

    def _live_consumers(self) -> dict[str, int]:
        up = {w.hostname for w in self.workers.snapshot() if w.up}
        counts: dict[str, int] = {}
        for hostname, queues in self.worker_queues.all().items():
            for queue in queues:
                counts.setdefault(queue, 0)
                if hostname in up:
                    counts[queue] += 1
        return counts

    def _health(self) -> Iterator[Metric]:
        name = self.sampler.source.name
        health = self.sampler.health
        up = GaugeMetricFamily(
            "celery_exporter_source_up",
            "1 when the source's latest sample succeeded and is recent (at most 3 intervals "
            "plus the timeout old).",
            labels=["source"],
        )
        up.add_metric([name], 1.0 if self.sampler.up(time.time()) else 0.0)
        last = GaugeMetricFamily(
            "celery_exporter_source_last_success_timestamp_seconds",
            "When the source last sampled successfully; 0 before the first success.",
            labels=["source"],
        )
        last.add_metric([name], health.last_success)
        duration = GaugeMetricFamily(
            "celery_exporter_source_duration_seconds",
            "How long the source's latest sample took.",
            labels=["source"],
        )
        duration.add_metric([name], health.last_duration)
        errors = CounterMetricFamily(
            "celery_exporter_source_errors_total",
            "Failed samples of the source.",
            labels=["source"],
        )
        errors.add_metric([name], float(health.errors))
        snapshot = self.sampler.snapshot
        failed = GaugeMetricFamily(
            "celery_exporter_source_failed_queues",
            "Queues the source's latest successful sample could not read while others "
            "answered (SQS: a queue whose credentials or rights fail); their celery_queue_* "
            "series are left out and the log names them.",
            labels=["source"],
        )
        failed.add_metric([name], float(len(snapshot.sample.failed_queues)) if snapshot else 0.0)
        yield from (up, last, duration, errors, failed)


def worker_reserved_family(reserved: dict[str, int]) -> Iterator[Metric]:
    """From task events (any broker): tasks workers took from each queue, not started yet."""
    yield by_label(
        GaugeMetricFamily,
        "celery_queue_worker_reserved_tasks",
        "Tasks live workers received from the queue and have not started (prefetched, or "
        "ETA/countdown held), from task events, refreshed every 5 s. On RabbitMQ these are "
        "the queue's unacknowledged messages (with acks_late, add the running tasks).",
        "queue_name",
        ((queue, float(count)) for queue, count in sorted(reserved.items())),
    )
