"""Lean counters and histograms for the event hot path.

prometheus_client's labelled metrics take a lock and validate labels on every call; the
event path needs neither. These keep plain dicts keyed by label tuples, guarded by the
caller's lock, and render fresh metric families at scrape time (so removing a key removes
its series, with no private API).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric


def _go_float(bound: float) -> str:
    """Bucket bound as Prometheus clients print it (1.0, 0.25, 3600.0)."""
    return repr(float(bound))


class LabelledCounter:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def get(self, labels: tuple[str, ...]) -> float:
        return self.values.get(labels, 0.0)

    def snapshot(self) -> dict[tuple[str, ...], float]:
        """A copy to render from, taken under the caller's lock."""
        return dict(self.values)

    def family(self, values: dict[tuple[str, ...], float] | None = None) -> Metric:
        # CounterMetricFamily appends `_total` itself.
        family = CounterMetricFamily(
            self.name.removesuffix("_total"), self.documentation, labels=self.labelnames
        )
        for labels, value in (self.values if values is None else values).items():
            family.add_metric(list(labels), value)
        return family


class LabelledHistogram:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = list(buckets)
        self._le = [_go_float(b) for b in self.bounds] + ["+Inf"]
        # Per label tuple: non-cumulative bucket counts (last is +Inf), then the sum.
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        slots = self.values.get(labels)
        if slots is None:
            slots = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        slots[bisect_left(self.bounds, value)] += 1
        slots[-1] += value

    def count(self, labels: tuple[str, ...]) -> int:
        slots = self.values.get(labels)
        return 0 if slots is None else int(sum(slots[:-1]))

    def snapshot(self) -> dict[tuple[str, ...], list[float]]:
        """A copy to render from, taken under the caller's lock (the slots mutate in place)."""
        return {labels: slots[:] for labels, slots in self.values.items()}

    def family(self, values: dict[tuple[str, ...], list[float]] | None = None) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, slots in (self.values if values is None else values).items():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self._le, slots[:-1], strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, slots[-1])
        return family
