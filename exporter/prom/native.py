"""Native (sparse, exponential) histogram buckets, kept per series at observe time.

A native histogram of schema ``s`` has buckets whose bounds grow by ``2 ** (2 ** -s)``:
bucket ``i`` holds the values in ``(2 ** ((i - 1) / 2 ** s), 2 ** (i / 2 ** s)]``; values
within ``zero_threshold`` of 0 go to a zero bucket. Only the range of buckets that were hit
is kept (a run of counts from the lowest to the highest), so one series covers 1 ms to hours
at a few percent resolution, which Prometheus stores as one series instead of one per
classic bucket.

The index comes from ``math.frexp`` and a table lookup, as the Go client computes it (no
logarithm, so values on a bound land in the same bucket as Go's). When a series' run spans
more than ``max_buckets`` buckets its schema drops by one (neighbouring buckets merge), as
the Go client's ``NativeHistogramMaxBucketNumber`` does: memory stays bounded whatever the
spread.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from math import frexp

MIN_SCHEMA = -4
MAX_SCHEMA = 8
# The Go client's default zero threshold (2 ** -128): only true zeros, in practice.
DEFAULT_ZERO_THRESHOLD = 2.0**-128

# Per positive schema, the bounds of the fraction ``frexp`` returns, within [0.5, 1).
_BOUNDS: dict[int, list[float]] = {
    schema: [2.0 ** (i / (1 << schema)) / 2 for i in range(1 << schema)]
    for schema in range(1, MAX_SCHEMA + 1)
}


@dataclass(frozen=True)
class NativeConfig:
    """How the native form of a histogram is kept; None in its place turns it off."""

    schema: int = 3
    zero_threshold: float = DEFAULT_ZERO_THRESHOLD
    max_buckets: int = 160
    # Whether the protobuf exposition carries the classic buckets too (text always does).
    classic: bool = True

    def __post_init__(self) -> None:
        if not MIN_SCHEMA <= self.schema <= MAX_SCHEMA:
            raise ValueError(f"schema must be between {MIN_SCHEMA} and {MAX_SCHEMA}")


def bucket_index(value: float, schema: int) -> int:
    """The index of the bucket holding ``value`` (finite, > 0) at ``schema``."""
    frac, exp = math.frexp(value)
    if schema > 0:
        bounds = _BOUNDS[schema]
        return bisect_left(bounds, frac) + (exp - 1) * len(bounds)
    key = exp - 1 if frac == 0.5 else exp
    return (key + (1 << -schema) - 1) >> -schema


def bucket_upper_bound(index: int, schema: int) -> float:
    """The upper bound of bucket ``index`` at ``schema`` (for tests and readers)."""
    return float(2.0 ** math.ldexp(index, -schema))


class BucketRun:
    """Counts of consecutive bucket indexes from ``offset`` (zeros where none was hit): a
    list is a fifth of the memory of a dict of index -> count, and as fast to bump."""

    __slots__ = ("counts", "offset")

    def __init__(self, offset: int = 0, counts: list[int] | None = None) -> None:
        self.offset = offset
        self.counts: list[int] = [] if counts is None else counts

    def add(self, key: int) -> None:
        """Count one observation in bucket ``key``, widening the run to reach it."""
        counts = self.counts
        i = key - self.offset
        if 0 <= i < len(counts):
            counts[i] += 1
        elif not counts:
            self.offset = key
            counts.append(1)
        elif i < 0:
            self.counts = [1] + [0] * (-i - 1) + counts
            self.offset = key
        else:
            counts.extend([0] * (i - len(counts)))
            counts.append(1)

    def items(self) -> Iterator[tuple[int, int]]:
        """(index, count) of the buckets that were hit, in index order."""
        offset = self.offset
        return ((offset + i, n) for i, n in enumerate(self.counts) if n)

    def as_dict(self) -> dict[int, int]:
        return dict(self.items())

    def halved(self) -> BucketRun:
        """The run at schema - 1: bucket ``i`` merges into ``ceil(i / 2)``, which covers it
        exactly."""
        merged: dict[int, int] = {}
        for key, n in self.items():
            wider = (key + 1) >> 1
            merged[wider] = merged.get(wider, 0) + n
        if not merged:
            return BucketRun()
        low, high = min(merged), max(merged)
        return BucketRun(low, [merged.get(k, 0) for k in range(low, high + 1)])

    def copy(self) -> BucketRun:
        return BucketRun(self.offset, self.counts[:])


class NativeBuckets:
    """One series' native buckets. The caller holds its lock (counting.py)."""

    __slots__ = ("_bounds", "negative", "positive", "schema", "zero_count")

    def __init__(self, schema: int) -> None:
        self.schema = schema
        self._bounds = _BOUNDS.get(schema)
        self.zero_count = 0
        self.positive = BucketRun()
        self.negative = BucketRun()

    def observe(self, value: float, config: NativeConfig) -> None:
        """``value`` is finite (the event handlers check it)."""
        threshold = config.zero_threshold
        if value > threshold:
            run = self.positive
        elif value < -threshold:
            run = self.negative
            value = -value
        else:
            self.zero_count += 1
            return
        # bucket_index(), inlined: this runs once per task event.
        frac, exp = frexp(value)
        bounds = self._bounds
        if bounds is not None:
            key = bisect_left(bounds, frac) + (exp - 1) * len(bounds)
        else:
            key = bucket_index(value, self.schema)
        # BucketRun.add()'s common case, inlined.
        counts = run.counts
        i = key - run.offset
        if 0 <= i < len(counts):
            counts[i] += 1
            return
        run.add(key)
        if len(run.counts) > config.max_buckets:
            self._shrink(config.max_buckets)

    def _shrink(self, max_buckets: int) -> None:
        """Halve the resolution until each run spans at most ``max_buckets`` buckets."""
        while self.schema > MIN_SCHEMA and (
            len(self.positive.counts) > max_buckets or len(self.negative.counts) > max_buckets
        ):
            self.halve_resolution()

    def halve_resolution(self) -> None:
        """Schema - 1: each pair of neighbouring buckets becomes one."""
        self.schema -= 1
        self._bounds = _BOUNDS.get(self.schema)
        self.positive = self.positive.halved()
        self.negative = self.negative.halved()

    def copy(self) -> NativeBuckets:
        other = NativeBuckets(self.schema)
        other.zero_count = self.zero_count
        other.positive = self.positive.copy()
        other.negative = self.negative.copy()
        return other


# Gaps of up to this many empty buckets are written as zero counts rather than as a new span
# (a span costs more bytes than two zero deltas), as the Go client does.
MAX_GAP_IN_SPAN = 2


def spans_and_deltas(
    buckets: dict[int, int] | BucketRun,
) -> tuple[list[tuple[int, int]], list[int]]:
    """Prometheus's sparse layout: spans of (offset, length) over consecutive indexes (the
    first offset is the first index, later ones the gap since the previous span), and each
    bucket's count as the difference from the previous bucket's (empty buckets inside a span
    count 0)."""
    pairs = buckets.items() if isinstance(buckets, BucketRun) else sorted(buckets.items())
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    previous_key = 0
    previous_count = 0
    offset = length = 0
    for key, count in pairs:
        gap = key - previous_key - 1
        if length and gap <= MAX_GAP_IN_SPAN:
            if gap:
                deltas.append(-previous_count)
                deltas.extend([0] * (gap - 1))
                previous_count = 0
            length += gap + 1
        else:
            if length:
                spans.append((offset, length))
            offset, length = (gap if spans or deltas else key), 1
        deltas.append(count - previous_count)
        previous_key = key
        previous_count = count
    if length:
        spans.append((offset, length))
    return spans, deltas
