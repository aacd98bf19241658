"""Metric families of one label, built from (value, sample) pairs: the shape most
snapshot collectors share (rejections by reason, reloads by result, tasks by queue)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def by_label(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    samples: Iterable[tuple[str, float]],
) -> CounterMetricFamily | GaugeMetricFamily:
    """A ``kind`` family with one sample per label value, in the order given."""
    family = kind(name, documentation, labels=[label])
    for value, sample in samples:
        family.add_metric([value], sample)
    return family
