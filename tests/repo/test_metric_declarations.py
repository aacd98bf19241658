"""A metric is declared once, under the name it is exposed with: every documented counter's
``_total`` name is in the source (so grepping for it finds its declaration), and every task
counter and histogram declared is one that is collected."""

from __future__ import annotations

import re
from pathlib import Path

from exporter.collectors.tasks import TaskMetrics
from exporter.prom.counting import LabelledCounter, LabelledHistogram
from tests.support.promql import documented_metrics

EXPORTER = Path(__file__).resolve().parents[2] / "exporter"


def _source() -> str:
    return "\n".join(path.read_text() for path in sorted(EXPORTER.rglob("*.py")))


def test_every_documented_counter_is_declared_with_its_exposed_name() -> None:
    source = _source()
    counters = sorted(
        name for name, metric in documented_metrics().items() if metric.type == "counter"
    )
    assert len(counters) > 20
    assert [name for name in counters if f'"{name}"' not in source] == []


def test_counter_families_are_named_with_total_in_the_source() -> None:
    names = re.findall(r'(?:CounterMetricFamily|LabelledCounter)\(\s*"([^"]+)"', _source())
    assert len(names) > 10
    assert [name for name in names if not name.endswith("_total")] == []


def test_every_task_metric_declared_is_collected() -> None:
    metrics = TaskMetrics([0.1, 1.0], [0.1, 1.0])
    declared = [
        value
        for value in vars(metrics).values()
        if isinstance(value, (LabelledCounter, LabelledHistogram))
    ]
    assert set(map(id, declared)) == set(map(id, metrics.all))
