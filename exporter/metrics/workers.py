"""Worker metrics, rendered from the registry at scrape time.

A worker's series exist from its first event until it has been down for the purge time;
while down they read 0 (up, active), so alerts with ``for:`` can fire.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.control import WorkerQueues
from exporter.state.worker_registry import WorkerRegistry


class WorkerCollector:
    def __init__(self, registry: WorkerRegistry, queues: WorkerQueues) -> None:
        self.registry = registry
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        workers = self.registry.snapshot()
        up = GaugeMetricFamily(
            "celery_worker_up",
            "1 while the worker heartbeats, 0 once it said goodbye (worker-offline) or its "
            "heartbeats are overdue.",
            labels=["hostname"],
        )
        heartbeat = GaugeMetricFamily(
            "celery_worker_last_heartbeat_timestamp_seconds",
            "When the worker's latest event or heartbeat arrived (the exporter's clock).",
            labels=["hostname"],
        )
        interval = GaugeMetricFamily(
            "celery_worker_heartbeat_interval_seconds",
            "The heartbeat interval the worker advertises (freq).",
            labels=["hostname"],
        )
        active = GaugeMetricFamily(
            "celery_worker_active_tasks",
            "Tasks the worker is running, from its latest heartbeat (0 once down).",
            labels=["hostname"],
        )
        processed = CounterMetricFamily(
            "celery_worker_processed_tasks",
            "Tasks the worker accepted since it started (retries included), from its "
            "heartbeats; restarts from 0 when the worker restarts.",
            labels=["hostname"],
        )
        onlines = CounterMetricFamily(
            "celery_worker_online",
            "worker-online events: how many times the worker started while watched. "
            "A rising count is a crash or restart loop.",
            labels=["hostname"],
        )
        offlines = CounterMetricFamily(
            "celery_worker_offline",
            "worker-offline events: warm shutdowns. A worker that went down without one "
            "was killed or lost.",
            labels=["hostname"],
        )
        events_enabled = GaugeMetricFamily(
            "celery_worker_task_events_enabled",
            "1 when task events arrive from the worker; 0 when it processes tasks but sends "
            "no task events (started without -E). Absent until known.",
            labels=["hostname"],
        )
        online_count = 0
        for w in workers:
            labels = [w.hostname]
            up.add_metric(labels, 1.0 if w.up else 0.0)
            online_count += w.up
            heartbeat.add_metric(labels, w.last_heartbeat)
            interval.add_metric(labels, w.heartbeat_interval)
            active.add_metric(labels, float(w.active) if w.up else 0.0)
            processed.add_metric(labels, float(w.processed))
            onlines.add_metric(labels, float(w.onlines))
            offlines.add_metric(labels, float(w.offlines))
            if w.task_events_enabled is not None:
                events_enabled.add_metric(labels, 1.0 if w.task_events_enabled else 0.0)
        online = GaugeMetricFamily("celery_workers_online", "Workers currently up (heartbeating).")
        online.add_metric([], float(online_count))
        yield from (up, heartbeat, interval, active, processed, onlines, offlines, events_enabled)
        yield online
        consumes = GaugeMetricFamily(
            "celery_worker_queue_info",
            "1 for each queue the worker consumes, from its reply to an active_queues inspect "
            "request (asked when the worker comes online).",
            labels=["hostname", "queue_name"],
        )
        for hostname, queue_names in sorted(self.queues.all().items()):
            for queue_name in queue_names:
                consumes.add_metric([hostname, queue_name], 1.0)
        yield consumes
