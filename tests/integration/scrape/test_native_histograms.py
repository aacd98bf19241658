"""Native histograms in the real Prometheus 2.42 with ``--enable-feature=native-histograms``:
one series per histogram, whose quantiles agree with the classic ones within the schema's
resolution (the bucket arithmetic and the exposition: tests/unit/prom/test_native.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.exporter import ExporterProcess
from tests.support.mixin import mixin_render
from tests.support.prometheus import PrometheusServer
from tests.support.publish import publish_raw_events
from tests.support.waiting import wait_for
from tests.unit.prom.test_native import _task_events

REPO_ROOT = Path(__file__).resolve().parents[3]

TASK_NAMES = 100
WORKERS = 20
PROBE = "probe.uniform"
PROBE_TASKS = 1000
SCHEMA = 3
# The dashboards' rate window here: both halves of the probe stay in it however slow the run.
WINDOW = "10m"


def _publish(broker_url: str, events: list[dict[str, Any]]) -> None:
    bodies = [
        (json.dumps(events[i : i + 400]).encode(), "application/json")
        for i in range(0, len(events), 400)
    ]
    publish_raw_events(broker_url, bodies)


class _DashboardExpressions:
    """The dashboards' shared expressions, from the mixin (mixin/dashboards/lib.libsonnet)."""

    R = "$__rate_interval"

    @staticmethod
    def quantile(q: float, histogram: str, filters: str, by: str = "") -> str:
        return str(mixin_render.dashboard_lib("quantile", q, histogram, filters, by))

    @staticmethod
    def mean(histogram: str, filters: str, by: str) -> str:
        return str(mixin_render.dashboard_lib("mean", histogram, filters, by))


def _dashboard_expressions() -> _DashboardExpressions:
    assert mixin_render.dashboard_lib("R") == _DashboardExpressions.R
    return _DashboardExpressions()


def test_prometheus_stores_one_series_per_native_histogram_and_agrees_on_quantiles(
    redis_url: str, exporter_factory: Any, tmp_path: Path
) -> None:
    exporter: ExporterProcess = exporter_factory(redis_url)
    config = PrometheusServer.scrape_config([f"127.0.0.1:{exporter.port}"])
    rules = [REPO_ROOT / "alerts" / "celery.rules.yml"]
    native = PrometheusServer(
        tmp_path / "native",
        config,
        rule_files=rules,
        extra_args=["--enable-feature=native-histograms"],
    )
    classic = PrometheusServer(tmp_path / "classic", config, rule_files=rules)
    with native, classic:
        # 100 task names run once on each of 20 workers; then a probe task whose runtimes are
        # spread evenly over (0.5 s, 1 s], one classic bucket, where linear interpolation of
        # the classic buckets gives the exact quantiles. The probe comes in two halves (odd,
        # then even steps), so that rate() over the window sees the second.
        now = time.time()
        events: list[dict[str, Any]] = []
        for n in range(TASK_NAMES):
            for w in range(WORKERS):
                events += _task_events(f"app.task{n}", f"w{w}@host", now, 0.01 * (1 + n % 7))
        probe = [0.5 + 0.5 * i / PROBE_TASKS for i in range(1, PROBE_TASKS + 1)]
        for runtime in probe[0::2]:
            events += _task_events(PROBE, "w0@host", now, runtime)
        _publish(redis_url, events)

        def stored(server: PrometheusServer, expr: str, count: int) -> float | None:
            value = server.query_value(expr)
            return value if value == count else None

        native_count = f'histogram_count(celery_task_runtime_seconds{{name="{PROBE}"}})'
        classic_count = f'celery_task_runtime_seconds_count{{name="{PROBE}"}}'
        for count in (PROBE_TASKS // 2, PROBE_TASKS):
            wait_for(
                lambda count=count: stored(native, native_count, count),
                60,
                message=lambda: f"native Prometheus lacks the probe; log:\n{native.log_tail()}",
            )
            wait_for(
                lambda count=count: stored(classic, classic_count, count),
                60,
                message=lambda: f"classic Prometheus lacks the probe; log:\n{classic.log_tail()}",
            )
            if count < PROBE_TASKS:
                second = [e for r in probe[1::2] for e in _task_events(PROBE, "w0@host", now, r)]
                _publish(redis_url, second)
        histograms = '{__name__=~"celery_task_(runtime|queue_wait)_seconds.*"}'
        native_series = native.query_value(f"count({histograms})")
        classic_series = classic.query_value(f"count({histograms})")
        label_sets = 2 * (TASK_NAMES + 1)  # runtime and queue wait, per name
        assert native_series == label_sets
        assert classic_series == label_sets * (19 + 1 + 2)  # buckets, +Inf, _count, _sum
        # Prometheus 2.42 keeps only the native form of a histogram that has one.
        assert native.query("celery_task_runtime_seconds_bucket") == []
        all_native = native.query_value('count({job="celery-exporter"})')
        all_classic = classic.query_value('count({job="celery-exporter"})')
        print(
            f"series stored: histograms {native_series:.0f} native vs {classic_series:.0f} "
            f"classic; whole scrape {all_native:.0f} vs {all_classic:.0f}"
        )
        # Every other series (counters, gauges, info: the generic families) is stored alike.
        # Recorded series (name:with:colons) keep the job label too, but each server records
        # them on its own evaluation clock: not part of what a scrape stores.
        others = (
            'count by (__name__) ({job="celery-exporter", '
            '__name__!~"celery_task_(runtime|queue_wait)_seconds.*|.*:.*"})'
        )

        def per_name(server: PrometheusServer) -> dict[str, str]:
            return {r["metric"]["__name__"]: r["value"][1] for r in server.query(others)}

        assert per_name(native) == per_name(classic)
        assert len(per_name(native)) > 30
        resolution = 2 ** (2**-SCHEMA) - 1  # relative width of one bucket
        for q in (0.5, 0.9, 0.99):
            classic_q = classic.query_value(
                f'histogram_quantile({q}, celery_task_runtime_seconds_bucket{{name="{PROBE}"}})'
            )
            native_q = native.query_value(
                f'histogram_quantile({q}, celery_task_runtime_seconds{{name="{PROBE}"}})'
            )
            assert classic_q == pytest.approx(0.5 + 0.5 * q, rel=1e-9)
            assert native_q is not None
            assert abs(native_q - classic_q) <= classic_q * resolution, (q, native_q, classic_q)
            print(f"p{q * 100:g}: native {native_q:.4f} s, classic {classic_q:.4f} s")
        # The dashboards' expressions (rate over the window: the increase, so the second
        # half) answer on both servers, from the native series on one and the classic buckets
        # on the other.
        dashboards = _dashboard_expressions()
        probe_filter = f'name="{PROBE}"'
        for q in (0.5, 0.95):
            expr = dashboards.quantile(q, "runtime", probe_filter, "name").replace(
                dashboards.R, WINDOW
            )
            classic_q, native_q = classic.query_value(expr), native.query_value(expr)
            assert classic_q == pytest.approx(0.5 + 0.5 * q, rel=0.01), expr
            assert native_q is not None
            assert abs(native_q - classic_q) <= classic_q * resolution, (expr, native_q)
        mean = dashboards.mean("runtime", probe_filter, "name").replace(dashboards.R, WINDOW)
        expected_mean = sum(probe[1::2]) / len(probe[1::2])
        assert native.query_value(mean) == pytest.approx(expected_mean, rel=1e-9), mean
        # rate() extrapolates each classic series (_sum, _count) towards zero by its own
        # ratio when the series has just started: a hair off, as on any Prometheus.
        assert classic.query_value(mean) == pytest.approx(expected_mean, rel=1e-3), mean
        # So do the shipped recording rules (evaluated every second here).
        recorded = f'celery:task_runtime_seconds:p95_5m{{name="{PROBE}"}}'

        def recorded_p95(server: PrometheusServer) -> float | None:
            # Evaluations from before the second half was scraped record NaN or nothing.
            value = server.query_value(recorded)
            return value if value is not None and abs(value - 0.975) <= 0.975 * resolution else None

        for server in (native, classic):
            wait_for(
                lambda server=server: recorded_p95(server),
                30,
                message=lambda server=server: f"{recorded} = {server.query(recorded)}",
            )
