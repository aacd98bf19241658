"""Worker metrics, rendered from the registry at scrape time.

A worker's series exist from its first event until it has been down for the purge time;
while down they read 0 (up, active), so alerts with ``for:`` can fire.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.control import WorkerQueues, WorkerStats
from exporter.state.worker_registry import WorkerRegistry, WorkerSnapshot


class WorkerCollector:
    def __init__(
        self, registry: WorkerRegistry, queues: WorkerQueues, stats: dict[str, WorkerStats]
    ) -> None:
        self.registry = registry
        self.queues = queues
        self.stats = stats

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
            "celery_worker_processed_tasks_total",
            "Tasks the worker accepted since it started (retries included), from its "
            "heartbeats; restarts from 0 when the worker restarts.",
            labels=["hostname"],
        )
        onlines = CounterMetricFamily(
            "celery_worker_online_total",
            "worker-online events: how many times the worker started while watched. "
            "A rising count is a crash or restart loop.",
            labels=["hostname"],
        )
        offlines = CounterMetricFamily(
            "celery_worker_offline_total",
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
        starts = CounterMetricFamily(
            "celery_worker_starts_total",
            "worker-online events of all workers, including workers since forgotten: on "
            "Kubernetes a restart loop of replaced pods (new hostnames) shows here.",
        )
        starts.add_metric([], float(self.registry.starts_total))
        yield from (up, heartbeat, interval, active, processed, onlines, offlines, events_enabled)
        yield online
        yield starts
        consumes = GaugeMetricFamily(
            "celery_worker_queue_info",
            "1 for each queue the worker consumes, from its replies to active_queues inspect "
            "requests (every --inspect-interval).",
            labels=["hostname", "queue_name"],
        )
        for hostname, queue_names in sorted(self.queues.all().items()):
            for queue_name in queue_names:
                consumes.add_metric([hostname, queue_name], 1.0)
        yield consumes
        yield from self._capacity(workers)

    def _capacity(self, workers: list[WorkerSnapshot]) -> Iterator[Metric]:
        pool = GaugeMetricFamily(
            "celery_worker_pool_processes",
            "Pool size: how many tasks the worker runs at once (stats: pool.max-concurrency).",
            labels=["hostname"],
        )
        busy = GaugeMetricFamily(
            "celery_worker_busy_processes",
            "Pool processes running a task: the heartbeat's active tasks, capped at the pool "
            "size (0 once down).",
            labels=["hostname"],
        )
        prefetch = GaugeMetricFamily(
            "celery_worker_prefetch_limit",
            "Messages the worker may hold unacknowledged at once: its QoS prefetch limit "
            "(stats: prefetch_count). Was celery_worker_prefetch_count.",
            labels=["hostname"],
        )
        memory = GaugeMetricFamily(
            "celery_worker_max_rss_bytes",
            "Peak resident memory of the worker's main process (stats: rusage.maxrss); "
            "prefork children are not included.",
            labels=["hostname"],
        )
        stats = dict(self.stats)
        for w in workers:
            s = stats.get(w.hostname)
            if s is None:
                continue
            labels = [w.hostname]
            if s.pool_size is not None:
                pool.add_metric(labels, float(s.pool_size))
                busy.add_metric(labels, float(min(w.active, s.pool_size)) if w.up else 0.0)
            if s.prefetch_count is not None:
                prefetch.add_metric(labels, float(s.prefetch_count))
            if s.max_rss_bytes is not None:
                memory.add_metric(labels, s.max_rss_bytes)
        yield from (pool, busy, prefetch, memory)
