"""The Prometheus protobuf exposition format, written by hand.

Prometheus asks for it (``application/vnd.google.protobuf;proto=io.prometheus.client.
MetricFamily;encoding=delimited``) when native histograms are enabled, since the text
formats cannot carry them. The body is a sequence of ``io.prometheus.client.MetricFamily``
messages (prometheus/client_model's metrics.proto), each preceded by its length as a varint.

Hand-written rather than with the ``protobuf`` package: the messages used here are a dozen
fields of four wire types, label bytes are cached per series (exposition.LabelText), and
bench/protobuf.py measured this encoder about twice as fast as building the same messages
with the package (upb), without a runtime dependency. tests/unit/prom/test_native.py
decodes the output with the package.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from exporter.prom.native import NativeBuckets, spans_and_deltas

CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

# io.prometheus.client.MetricType
COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM, GAUGE_HISTOGRAM = range(6)

_DOUBLE = struct.Struct("<d").pack
LabelKey = tuple[tuple[str, str], ...]


# Varints of 0 .. 16383 (one or two bytes): counts, lengths and deltas are mostly small.
_SMALL = [bytes((i,)) for i in range(0x80)] + [
    bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(0x80, 0x4000)
]


def varint(n: int) -> bytes:
    """Unsigned varint (``n`` >= 0)."""
    if n < 0x4000:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n: int) -> int:
    return (n << 1) if n >= 0 else ((-n) << 1) - 1


def _delimited(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (tag already shifted, wire type 2)."""
    return b"".join((_SMALL[tag], varint(len(payload)), payload))


def _double(tag: int, value: float) -> bytes:
    """A double field (wire type 1)."""
    return _SMALL[tag] + _DOUBLE(value)


def _uint(tag: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return _SMALL[tag] + varint(value)


def _string(tag: int, text: str) -> bytes:
    return _delimited(tag, text.encode("utf-8"))


# Field tags, (number << 3) | wire type, per message.
_LABEL_NAME, _LABEL_VALUE = 0x0A, 0x12  # LabelPair: name=1, value=2
_METRIC_LABEL, _METRIC_GAUGE, _METRIC_COUNTER = 0x0A, 0x12, 0x1A  # Metric: 1, 2, 3
_METRIC_SUMMARY, _METRIC_UNTYPED, _METRIC_HISTOGRAM = 0x22, 0x2A, 0x3A  # Metric: 4, 5, 7
_VALUE = 0x09  # Gauge/Counter/Untyped: value=1 (double)
_FAMILY_NAME, _FAMILY_HELP, _FAMILY_TYPE, _FAMILY_METRIC = 0x0A, 0x12, 0x18, 0x22
# Histogram: sample_count=1, sample_sum=2, bucket=3, schema=5, zero_threshold=6,
# zero_count=7, negative_span=9, negative_delta=10, positive_span=12, positive_delta=13.
_H_COUNT, _H_SUM, _H_BUCKET, _H_SCHEMA, _H_ZERO_THRESHOLD, _H_ZERO_COUNT = (
    0x08,
    0x11,
    0x1A,
    0x28,
    0x31,
    0x38,
)
_H_NEG_SPAN, _H_NEG_DELTA, _H_POS_SPAN, _H_POS_DELTA = 0x4A, 0x52, 0x62, 0x6A
# Bucket: cumulative_count=1, upper_bound=2. BucketSpan: offset=1 (sint32), length=2.
_B_COUNT, _B_BOUND = 0x08, 0x11
_SPAN_OFFSET, _SPAN_LENGTH = 0x08, 0x10
# Summary: sample_count=1, sample_sum=2, quantile=3; Quantile: quantile=1, value=2.
_S_COUNT, _S_SUM, _S_QUANTILE = 0x08, 0x11, 0x1A
_Q_QUANTILE, _Q_VALUE = 0x09, 0x11


def label_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The ``label`` fields of a Metric, names sorted (as the text formats sort them)."""
    return b"".join(
        _delimited(_METRIC_LABEL, _string(_LABEL_NAME, name) + _string(_LABEL_VALUE, value))
        for name, value in sorted(pairs)
    )


def family(name: str, help_text: str, typ: int, metrics: Iterable[bytes]) -> bytes:
    """One length-prefixed MetricFamily from its already encoded Metric messages; nothing
    for a family without metrics (Go clients never send one)."""
    encoded = [_delimited(_FAMILY_METRIC, m) for m in metrics]
    if not encoded:
        return b""
    body = b"".join(
        [
            _string(_FAMILY_NAME, name),
            _string(_FAMILY_HELP, help_text),
            _uint(_FAMILY_TYPE, typ),
            *encoded,
        ]
    )
    return varint(len(body)) + body


# A Metric's counter field holding a Counter of one double: tag, length 9, value tag.
_COUNTER_PREFIX = bytes((_METRIC_COUNTER, 9, _VALUE))


def counter_metric(labels: bytes, value: float) -> bytes:
    """``scalar_metric(labels, COUNTER, value)``, for the many series of task counters."""
    return labels + _COUNTER_PREFIX + _DOUBLE(value)


def scalar_metric(labels: bytes, typ: int, value: float) -> bytes:
    field = {COUNTER: _METRIC_COUNTER, GAUGE: _METRIC_GAUGE}.get(typ, _METRIC_UNTYPED)
    return labels + _delimited(field, _double(_VALUE, value))


def bound_field(bound: float) -> bytes:
    """A classic bucket's ``upper_bound`` field, computed once per bound by the caller."""
    return _double(_B_BOUND, bound)


def _spans(tag: int, spans: list[tuple[int, int]]) -> bytes:
    return b"".join(
        _delimited(tag, _uint(_SPAN_OFFSET, zigzag(offset)) + _uint(_SPAN_LENGTH, length))
        for offset, length in spans
    )


def _packed_sints(tag: int, values: list[int]) -> bytes:
    return _delimited(tag, b"".join([varint(v << 1 if v >= 0 else (-v << 1) - 1) for v in values]))


def histogram_metric(
    labels: bytes,
    count: int,
    total: float,
    buckets: Iterable[tuple[bytes, int]],
    native: NativeBuckets | None = None,
    zero_threshold: float = 0.0,
) -> bytes:
    """A Metric holding a Histogram: classic ``buckets`` as (``bound_field(upper bound)``,
    cumulative count), +Inf left out as Prometheus's clients leave it (the count is the +Inf
    bucket); and the native buckets when given."""
    parts = [_SMALL[_H_COUNT], varint(count), _SMALL[_H_SUM], _DOUBLE(total)]
    bucket_tag, count_tag = _SMALL[_H_BUCKET], _SMALL[_B_COUNT]
    for bound, cumulative in buckets:
        encoded = varint(cumulative)
        # A Bucket is its count field (1 + len) and its bound field (9): under 128 bytes.
        parts += (bucket_tag, _SMALL[len(encoded) + 1 + len(bound)], count_tag, encoded, bound)
    if native is not None:
        parts.append(_uint(_H_SCHEMA, zigzag(native.schema)))
        # A threshold above 0 also marks the histogram as native to Prometheus when it has
        # no observation yet.
        parts.append(_double(_H_ZERO_THRESHOLD, zero_threshold))
        parts.append(_uint(_H_ZERO_COUNT, native.zero_count))
        for span_tag, delta_tag, side in (
            (_H_NEG_SPAN, _H_NEG_DELTA, native.negative),
            (_H_POS_SPAN, _H_POS_DELTA, native.positive),
        ):
            if side.counts:
                spans, deltas = spans_and_deltas(side)
                parts.append(_spans(span_tag, spans))
                parts.append(_packed_sints(delta_tag, deltas))
    return labels + _delimited(_METRIC_HISTOGRAM, b"".join(parts))


def summary_metric(
    labels: bytes, count: int, total: float, quantiles: Iterable[tuple[float, float]]
) -> bytes:
    parts = [_uint(_S_COUNT, count), _double(_S_SUM, total)]
    for q, v in quantiles:
        parts.append(_delimited(_S_QUANTILE, _double(_Q_QUANTILE, q) + _double(_Q_VALUE, v)))
    return labels + _delimited(_METRIC_SUMMARY, b"".join(parts))


def generic_family(metrics: Sequence[Metric]) -> bytes:
    """A prometheus_client family (several of one name: the brokers') as a MetricFamily,
    named and typed as the Go client would expose it."""
    first = metrics[0]
    samples = [s for m in metrics for s in m.samples]
    name, typ = first.name, first.type
    if typ in ("counter", "gauge", "info", "stateset", "unknown", "untyped"):
        proto_type = {"counter": COUNTER, "unknown": UNTYPED, "untyped": UNTYPED}.get(typ, GAUGE)
        if typ == "counter":
            name += "_total"
        elif typ == "info":
            name += "_info"
        encoded = [
            scalar_metric(label_pairs(s.labels.items()), proto_type, s.value)
            for s in samples
            if s.name == name  # counters' _created: Prometheus 2 does not take it here
        ]
        return family(name, first.documentation, proto_type, encoded)
    if typ in ("histogram", "gaugehistogram"):
        return family(
            name,
            first.documentation,
            HISTOGRAM if typ == "histogram" else GAUGE_HISTOGRAM,
            _classic_histograms(name, samples, typ == "gaugehistogram"),
        )
    if typ == "summary":
        return family(name, first.documentation, SUMMARY, _summaries(name, samples))
    raise ValueError(f"{name}: no protobuf form for metric type {typ!r}")


def _group(samples: Iterable[Sample], without: str) -> dict[LabelKey, list[Sample]]:
    groups: dict[LabelKey, list[Sample]] = {}
    for s in samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != without))
        groups.setdefault(key, []).append(s)
    return groups


def _classic_histograms(name: str, samples: Sequence[Sample], gauge: bool) -> list[bytes]:
    count_name = name + ("_gcount" if gauge else "_count")
    sum_name = name + ("_gsum" if gauge else "_sum")
    out: list[bytes] = []
    for key, group in _group(samples, "le").items():
        count, total = 0, 0.0
        buckets: list[tuple[bytes, int]] = []
        for s in group:
            if s.name == name + "_bucket":
                if s.labels["le"] != "+Inf":
                    buckets.append((bound_field(float(s.labels["le"])), int(s.value)))
                else:
                    count = count or int(s.value)
            elif s.name == count_name:
                count = int(s.value)
            elif s.name == sum_name:
                total = s.value
        out.append(histogram_metric(label_pairs(key), count, total, buckets))
    return out


def _summaries(name: str, samples: Sequence[Sample]) -> list[bytes]:
    out: list[bytes] = []
    for key, group in _group(samples, "quantile").items():
        count, total = 0, 0.0
        quantiles: list[tuple[float, float]] = []
        for s in group:
            if s.name == name:
                quantiles.append((float(s.labels["quantile"]), s.value))
            elif s.name == name + "_count":
                count = int(s.value)
            elif s.name == name + "_sum":
                total = s.value
        out.append(summary_metric(label_pairs(key), count, total, quantiles))
    return out
