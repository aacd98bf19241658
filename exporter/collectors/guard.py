"""Each collector fails alone, as node_exporter wraps its collectors.

Every collector the registry holds is a ``GuardedCollector``: its families are gathered
under its lock (if any), timed, and given its constant labels (a named broker's ``broker``).
An exception is caught there: that collector's families are left out of this scrape, the
rest of ``/metrics`` is served, and ``CollectorOutcomes`` says which collector failed and
how long each took (``celery_exporter_collector_success``,
``celery_exporter_collector_scrape_duration_seconds``, label ``collector``: the fixed names
the daemon registers, so the label stays bounded). The process-wide collectors (build info,
process, web config) are guarded too, without outcome gauges: like their own series, those
would carry no ``broker`` label where every other series has one.

A collector that fails on every scrape is logged once, when it starts failing (with the
traceback), and once when it recovers: never once per scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.prom.exposition import FastFamily

log = logging.getLogger(__name__)

COLLECTOR_LABEL = "collector"


class CollectorOutcomes:
    """The latest duration and success of every guarded collector, as two gauge families.

    Registered after the collectors it describes, so a scrape shows that scrape's outcomes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Keyed by the collector's labels (collector name, plus broker when named), sorted.
        self._latest: dict[tuple[tuple[str, str], ...], tuple[float, bool]] = {}

    def record(self, labels: Mapping[str, str], seconds: float, ok: bool) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._latest[key] = (seconds, ok)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            latest = dict(self._latest)
        duration = GaugeMetricFamily(
            "celery_exporter_collector_scrape_duration_seconds",
            "Seconds the collector took to gather its metrics in the latest scrape.",
        )
        success = GaugeMetricFamily(
            "celery_exporter_collector_success",
            "1 when the collector's latest scrape succeeded; 0 when it raised (its metrics "
            "are missing from that scrape; the error is logged when it starts).",
        )
        for key, (seconds, ok) in latest.items():
            labels = dict(key)
            duration.samples.append(Sample(duration.name, labels, seconds, None, None))
            success.samples.append(Sample(success.name, labels, 1.0 if ok else 0.0, None, None))
        return [duration, success]


class GuardedCollector(Collector):
    """Adapts a ``collect`` callable (optionally under a lock) to the registry: constant labels
    on every sample, and an exception kept to this collector (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        collect: Callable[[], Iterable[Metric]],
        outcomes: CollectorOutcomes | None,
        lock: AbstractContextManager[object] | None = None,
        labels: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name = name
        # The daemon passes its own clock, so tests with a fixed clock get fixed durations.
        self._clock = clock
        self._collect = collect
        self._outcomes = outcomes
        self._lock = lock
        self._labels = dict(labels or {})
        self._outcome_labels = {**self._labels, COLLECTOR_LABEL: name}
        self._where = "".join(f"{k}={v} " for k, v in sorted(self._labels.items()))
        # Whether the latest scrape succeeded: a change is logged, a repeat is not.
        self._ok = True
        self._ok_lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        started = self._clock()
        try:
            metrics = self._gather()
        except Exception:
            if self._record(started, False):
                log.exception(
                    "%scollector %s failed; its metrics are left out of /metrics until it "
                    "recovers (celery_exporter_collector_success=0)",
                    self._where,
                    self.name,
                )
            return []
        if self._record(started, True):
            log.info("%scollector %s recovered", self._where, self.name)
        return metrics

    def _record(self, started: float, ok: bool) -> bool:
        """Keep the outcome (for the gauges, unless process-wide); True when it changed."""
        if self._outcomes is not None:
            seconds = max(0.0, self._clock() - started)  # a wall clock may step back
            self._outcomes.record(self._outcome_labels, seconds, ok)
        with self._ok_lock:
            changed, self._ok = ok != self._ok, ok
        return changed

    def _gather(self) -> list[Metric]:
        if self._lock is None:
            metrics = list(self._collect())
        else:
            with self._lock:
                metrics = list(self._collect())
        if self._labels:
            for metric in metrics:
                if isinstance(metric, FastFamily):  # writes its own text, labels included
                    metric.add_labels(self._labels)
                    continue
                metric.samples = [
                    Sample(s.name, {**self._labels, **s.labels}, s.value, s.timestamp, s.exemplar)
                    for s in metric.samples
                ]
        return metrics
