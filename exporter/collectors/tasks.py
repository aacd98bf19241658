"""Task metrics: one counter per task event type, runtime and queue-wait histograms.

Label sets:
- ``celery_task_sent_total``: name, queue_name. Producers send ``task-sent`` as
  ``gen<pid>@host``, one name per process; a hostname label there would grow without bound.
- worker-side counters: name, hostname (the worker's node name), queue_name; without
  hostname when built with ``worker_label=False`` (``--no-task-worker-label``).
- ``celery_task_failed_total`` adds ``exception`` (the exception class name).
- histograms: name, queue_name (no hostname: buckets x workers would explode the series).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.beat_schedule import ScheduleEntry
from exporter.prom.counting import LabelledCounter, LabelledHistogram
from exporter.prom.native import NativeConfig
from exporter.state.arrivals import ArrivalStats

NO_WORKER_LABELS = ("name", "queue_name")


class TaskMetrics:
    def __init__(
        self,
        runtime_buckets: Sequence[float],
        queue_wait_buckets: Sequence[float],
        worker_label: bool = True,
        native: NativeConfig | None = None,
    ) -> None:
        self.worker_label = worker_label
        worker_labels = ("name", "hostname", "queue_name") if worker_label else NO_WORKER_LABELS
        self.sent = LabelledCounter(
            "celery_task_sent_total",
            "Tasks published by producers (task-sent events; needs task_send_sent_event).",
            ("name", "queue_name"),
        )
        self.received = LabelledCounter(
            "celery_task_received_total",
            "Task deliveries received by workers (task-received); a retry is received again.",
            worker_labels,
        )
        self.started = LabelledCounter(
            "celery_task_started_total", "Tasks started by workers (task-started).", worker_labels
        )
        self.succeeded = LabelledCounter(
            "celery_task_succeeded_total",
            "Tasks that succeeded (task-succeeded).",
            worker_labels,
        )
        self.failed = LabelledCounter(
            "celery_task_failed_total",
            "Tasks that failed (task-failed), by exception class.",
            (*worker_labels, "exception"),
        )
        self.retried = LabelledCounter(
            "celery_task_retried_total", "Task retries (task-retried).", worker_labels
        )
        self.rejected = LabelledCounter(
            "celery_task_rejected_total",
            "Tasks rejected by workers (task-rejected).",
            worker_labels,
        )
        self.revoked = LabelledCounter(
            "celery_task_revoked_total", "Tasks revoked (task-revoked).", worker_labels
        )
        self.runtime = LabelledHistogram(
            "celery_task_runtime_seconds",
            "Task execution time: the worker's runtime for succeeded tasks, "
            "started-to-failed for failed tasks.",
            ("name", "queue_name", "state"),
            runtime_buckets,
            native,
        )
        self.queue_wait = LabelledHistogram(
            "celery_task_queue_wait_seconds",
            "Time from when a task became due (sent, or its ETA/countdown) to when it started. "
            "Without task-sent events, measured from when the worker received it.",
            ("name", "queue_name"),
            queue_wait_buckets,
            native,
        )
        self.all: tuple[LabelledCounter | LabelledHistogram, ...] = (
            self.sent,
            self.received,
            self.started,
            self.succeeded,
            self.failed,
            self.retried,
            self.rejected,
            self.revoked,
            self.runtime,
            self.queue_wait,
        )

    def collect(self, lock: AbstractContextManager[object] | None = None) -> list[Metric]:
        """Render every family; with ``lock``, hold it only while copying the values, so a
        scrape of many series does not stall the event stream."""
        if lock is None:
            return [metric.family() for metric in self.all]
        with lock:
            counters = [(c, c.snapshot()) for c in self.all if isinstance(c, LabelledCounter)]
            histograms = [(h, h.snapshot()) for h in self.all if isinstance(h, LabelledHistogram)]
        return [c.family(v) for c, v in counters] + [h.family(v) for h, v in histograms]

    def forget(self, label: str, value: str | Collection[str]) -> int:
        """Remove every series whose ``label`` is ``value`` (or one of several values: one
        pass over the series for all of them, which a mass release after a flood of junk
        labels needs); returns how many."""
        gone = {value} if isinstance(value, str) else set(value)
        if not gone:
            return 0
        removed = 0
        for metric in self.all:
            if label in metric.labelnames:
                position = metric.labelnames.index(label)
                values: dict[tuple[str, ...], object] = metric.values  # type: ignore[assignment]
                for labels in [k for k in values if k[position] in gone]:
                    if isinstance(metric, LabelledHistogram):
                        metric.remove(labels)
                    else:
                        del values[labels]
                    removed += 1
        return removed

    @staticmethod
    def running_families(running: dict[str, tuple[int, float]]) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "celery_task_running",
            "Tasks started and not finished, on workers that are up (refreshed every 5 s).",
            labels=["name"],
        )
        oldest = GaugeMetricFamily(
            "celery_task_oldest_running_start_timestamp_seconds",
            "When the longest-running task of this name started (the worker's clock); "
            "time() minus this is how long it has been running.",
            labels=["name"],
        )
        for name, (n, started) in sorted(running.items()):
            count.add_metric([name], float(n))
            oldest.add_metric([name], started)
        yield count
        yield oldest


def arrival_families(stats: dict[str, ArrivalStats]) -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "celery_task_last_arrival_timestamp_seconds",
        "When a task of this name last arrived: its task-sent timestamp, or its first "
        "task-received when producers send no task-sent (retries excluded).",
        labels=["name"],
    )
    interval = GaugeMetricFamily(
        "celery_task_arrival_interval_seconds",
        "Median gap between the last 16 arrivals of this task name. For a periodic task "
        "this is its learned rhythm: it halves when beat runs twice.",
        labels=["name"],
    )
    senders = GaugeMetricFamily(
        "celery_task_senders",
        "Distinct producers (task-sent hostnames, one per process) among the last 16 "
        "arrivals. A periodic task sent by 2 means two beats.",
        labels=["name"],
    )
    regular = GaugeMetricFamily(
        "celery_task_arrival_regular",
        "1 when the recent arrivals of this task name keep time like beat's (at least 10 "
        "intervals, three quarters of them within 10% of the median, median >= 0.5 s), else "
        "0. Only regular names count as periodic for CeleryPeriodicTaskMissed.",
        labels=["name"],
    )
    for name, st in sorted(stats.items()):
        last.add_metric([name], st.last)
        if st.interval is not None:
            interval.add_metric([name], st.interval)
            regular.add_metric([name], 1.0 if st.regular else 0.0)
        if st.senders:
            senders.add_metric([name], float(st.senders))
    yield from (last, interval, senders, regular)


def schedule_families(entries: list[ScheduleEntry]) -> Iterator[Metric]:
    interval = GaugeMetricFamily(
        "celery_beat_schedule_interval_seconds",
        "Interval between two runs of a beat schedule entry, read from the app given with "
        "--app (crontabs: the gap between their next two runs).",
        labels=["entry", "name"],
    )
    for e in entries:
        interval.add_metric([e.entry, e.task], e.interval_seconds)
    yield interval
