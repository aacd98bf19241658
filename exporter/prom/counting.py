"""Lean counters and histograms for the event hot path.

prometheus_client's labelled metrics take a lock and validate labels on every call; the
event path needs neither. These keep plain dicts keyed by label tuples, guarded by the
caller's lock, and render fresh metric families at scrape time (so removing a key removes
its series, with no private API).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import Metric

from exporter.prom.exposition import FastCounterFamily, FastHistogramFamily, LabelText
from exporter.prom.native import NativeBuckets, NativeConfig


def _go_float(bound: float) -> str:
    """Bucket bound as Prometheus clients print it (1.0, 0.25, 3600.0)."""
    return repr(float(bound))


# A histogram's classic slots per series, and its native buckets (None: not kept).
HistogramSnapshot = tuple[
    dict[tuple[str, ...], list[float]], dict[tuple[str, ...], NativeBuckets] | None
]


class LabelledCounter:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        self._text = LabelText(self.labelnames)

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def get(self, labels: tuple[str, ...]) -> float:
        return self.values.get(labels, 0.0)

    def snapshot(self) -> dict[tuple[str, ...], float]:
        """A copy to render from, taken under the caller's lock."""
        return dict(self.values)

    def family(self, values: dict[tuple[str, ...], float] | None = None) -> Metric:
        """The family to expose; renders its own text (exposition.py). Pass a snapshot
        when the values may change meanwhile."""
        return FastCounterFamily(
            self.name,
            self.documentation,
            self.labelnames,
            self.snapshot() if values is None else values,
            self._text,
        )


class LabelledHistogram:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        native: NativeConfig | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = list(buckets)
        self._le = [_go_float(b) for b in self.bounds] + ["+Inf"]
        # Per label tuple: non-cumulative bucket counts (last is +Inf), then the sum.
        self.values: dict[tuple[str, ...], list[float]] = {}
        # The same series' native buckets (native.py), when enabled; same keys as values.
        self.native_config = native
        self.native: dict[tuple[str, ...], NativeBuckets] = {}
        self._text = LabelText(self.labelnames)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        slots = self.values.get(labels)
        if slots is None:
            slots = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        slots[bisect_left(self.bounds, value)] += 1
        slots[-1] += value
        config = self.native_config
        if config is not None:
            buckets = self.native.get(labels)
            if buckets is None:
                buckets = self.native[labels] = NativeBuckets(config.schema)
            buckets.observe(value, config)

    def remove(self, labels: tuple[str, ...]) -> None:
        del self.values[labels]
        self.native.pop(labels, None)

    def count(self, labels: tuple[str, ...]) -> int:
        slots = self.values.get(labels)
        return 0 if slots is None else int(sum(slots[:-1]))

    def snapshot(self) -> HistogramSnapshot:
        """A copy to render from, taken under the caller's lock (the slots mutate in place)."""
        values = {labels: slots[:] for labels, slots in self.values.items()}
        if self.native_config is None:
            return values, None
        return values, {labels: b.copy() for labels, b in self.native.items()}

    def family(self, snapshot: HistogramSnapshot | None = None) -> Metric:
        """The family to expose; renders its own text (exposition.py)."""
        values, native = self.snapshot() if snapshot is None else snapshot
        return FastHistogramFamily(
            self.name,
            self.documentation,
            self.labelnames,
            self._le,
            values,
            self._text,
            # As HistogramMetricFamily: no _count/_sum when a bucket bound is negative.
            with_count=not self.bounds or self.bounds[0] >= 0,
            bounds=self.bounds,
            native=native,
            native_config=self.native_config,
        )
