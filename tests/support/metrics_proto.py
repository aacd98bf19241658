"""A decoder for the Prometheus protobuf exposition format, built with the ``protobuf``
package (a dev dependency) from the message definitions of prometheus/client_model's
``io/prometheus/client/metrics.proto``, written out here field by field (no protoc needed).

``decode(body)`` splits a delimited body into ``MetricFamily`` messages, so tests read what
the exporter wrote with Google's own wire-format parser rather than with ours.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.decoder import _DecodeVarint

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
DOUBLE, UINT64, UINT32, INT64 = F.TYPE_DOUBLE, F.TYPE_UINT64, F.TYPE_UINT32, F.TYPE_INT64
SINT32, SINT64, STRING, MESSAGE, ENUM = (
    F.TYPE_SINT32,
    F.TYPE_SINT64,
    F.TYPE_STRING,
    F.TYPE_MESSAGE,
    F.TYPE_ENUM,
)
PKG = ".io.prometheus.client."

# message -> [(field, number, label, type, message or enum type)]
MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "LabelPair": [("name", 1, OPTIONAL, STRING, ""), ("value", 2, OPTIONAL, STRING, "")],
    "Gauge": [("value", 1, OPTIONAL, DOUBLE, "")],
    "Counter": [("value", 1, OPTIONAL, DOUBLE, "")],
    "Untyped": [("value", 1, OPTIONAL, DOUBLE, "")],
    "Quantile": [("quantile", 1, OPTIONAL, DOUBLE, ""), ("value", 2, OPTIONAL, DOUBLE, "")],
    "Summary": [
        ("sample_count", 1, OPTIONAL, UINT64, ""),
        ("sample_sum", 2, OPTIONAL, DOUBLE, ""),
        ("quantile", 3, REPEATED, MESSAGE, "Quantile"),
    ],
    "Bucket": [
        ("cumulative_count", 1, OPTIONAL, UINT64, ""),
        ("cumulative_count_float", 4, OPTIONAL, DOUBLE, ""),
        ("upper_bound", 2, OPTIONAL, DOUBLE, ""),
    ],
    "BucketSpan": [("offset", 1, OPTIONAL, SINT32, ""), ("length", 2, OPTIONAL, UINT32, "")],
    "Histogram": [
        ("sample_count", 1, OPTIONAL, UINT64, ""),
        ("sample_count_float", 4, OPTIONAL, DOUBLE, ""),
        ("sample_sum", 2, OPTIONAL, DOUBLE, ""),
        ("bucket", 3, REPEATED, MESSAGE, "Bucket"),
        ("schema", 5, OPTIONAL, SINT32, ""),
        ("zero_threshold", 6, OPTIONAL, DOUBLE, ""),
        ("zero_count", 7, OPTIONAL, UINT64, ""),
        ("zero_count_float", 8, OPTIONAL, DOUBLE, ""),
        ("negative_span", 9, REPEATED, MESSAGE, "BucketSpan"),
        ("negative_delta", 10, REPEATED, SINT64, ""),
        ("negative_count", 11, REPEATED, DOUBLE, ""),
        ("positive_span", 12, REPEATED, MESSAGE, "BucketSpan"),
        ("positive_delta", 13, REPEATED, SINT64, ""),
        ("positive_count", 14, REPEATED, DOUBLE, ""),
    ],
    "Metric": [
        ("label", 1, REPEATED, MESSAGE, "LabelPair"),
        ("gauge", 2, OPTIONAL, MESSAGE, "Gauge"),
        ("counter", 3, OPTIONAL, MESSAGE, "Counter"),
        ("summary", 4, OPTIONAL, MESSAGE, "Summary"),
        ("untyped", 5, OPTIONAL, MESSAGE, "Untyped"),
        ("histogram", 7, OPTIONAL, MESSAGE, "Histogram"),
        ("timestamp_ms", 6, OPTIONAL, INT64, ""),
    ],
    "MetricFamily": [
        ("name", 1, OPTIONAL, STRING, ""),
        ("help", 2, OPTIONAL, STRING, ""),
        ("type", 3, OPTIONAL, ENUM, "MetricType"),
        ("metric", 4, REPEATED, MESSAGE, "Metric"),
    ],
}
METRIC_TYPES = ["COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM"]


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="io/prometheus/client/metrics.proto", package="io.prometheus.client", syntax="proto2"
    )
    enum = file.enum_type.add(name="MetricType")
    for number, name in enumerate(METRIC_TYPES):
        enum.value.add(name=name, number=number)
    for message_name, fields in MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for name, number, label, typ, type_name in fields:
            field = message.field.add(name=name, number=number, label=label, type=typ)
            if type_name:
                field.type_name = PKG + type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name[1:]))
        for name in (PKG + m for m in MESSAGES)
    }


_CLASSES = _build()
MetricFamily = _CLASSES[PKG + "MetricFamily"]


def message_class(name: str) -> Any:
    """The generated class of message ``name`` (``"MetricFamily"``, ``"Histogram"``...)."""
    return _CLASSES[PKG + name]


def decode(body: bytes) -> list[Any]:
    """The MetricFamily messages of a delimited body; raises on any malformed byte."""
    families = []
    position = 0
    while position < len(body):
        length, position = _DecodeVarint(body, position)
        if position + length > len(body):
            raise ValueError("truncated MetricFamily")
        family = MetricFamily()
        family.ParseFromString(body[position : position + length])
        families.append(family)
        position += length
    return families


def native_buckets(histogram: Any) -> dict[int, int]:
    """index -> count of the positive native buckets, from spans and deltas (the empty
    buckets a span may hold left out)."""
    out: dict[int, int] = {}
    deltas = iter(histogram.positive_delta)
    index = 0
    count = 0
    for n, span in enumerate(histogram.positive_span):
        index = span.offset if n == 0 else index + span.offset + 1
        for i in range(span.length):
            count += next(deltas)
            if count:
                out[index + i] = count
        index += span.length - 1
    return out
