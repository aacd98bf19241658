"""Exposition text for the big families, written directly, byte for byte as
prometheus_client writes it.

prometheus_client builds a ``Sample`` (a named tuple with a labels dict) per line and
formats each one, sorting and escaping its labels every time: about 10 µs per line, half a
second per scrape at 50,000 series. The task counters and histograms are plain dicts keyed
by label tuples (counting.py); here each label tuple's escaped label text is built once and
cached, and a line is one f-string.

``FastFamily`` is still a prometheus_client ``Metric``: anything that reads ``samples``
(``generate_latest``, the tests' parsers) gets them, built on first access. ``render()``
(used by web.py for both the Prometheus text format and OpenMetrics) writes the fast
families itself and hands every other family to prometheus_client's own encoder.
tests/unit/prom/test_exposition.py checks that both paths give the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.logs import LogOnce
from exporter.prom import protobuf
from exporter.prom.native import NativeBuckets, NativeConfig

log = logging.getLogger(__name__)
# A family that cannot be written is left out of the scrape, logged once per family name
# (collectors/guard.py does the same for a collector that cannot gather its families).
_log_once = LogOnce(log, max_keys=1_000)

INF = float("inf")
OPENMETRICS = "application/openmetrics-text"
# Label text caches are rebuilt when they hold this many more entries than live series.
CACHE_SLACK = 1_024


def go_float(value: float) -> str:
    """``floatToGoString``, with its common case (a float under 1e6) first."""
    if type(value) is float and -INF < value < 1e6:
        return repr(value)
    text: str = floatToGoString(value)
    return text


def escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class LabelText:
    """Per label tuple, the escaped ``{a="x",b="y"}`` text (label names sorted, as
    prometheus_client sorts them), plus the parts around ``le`` for histogram buckets.

    Constant labels (the ``broker`` label of a named broker) are merged in, in order."""

    def __init__(self, labelnames: Sequence[str]) -> None:
        self.labelnames = list(labelnames)
        self._const: tuple[tuple[str, str], ...] = ()
        self._layout()

    def _layout(self) -> None:
        names = self.labelnames + [name for name, _ in self._const]
        self._names = names
        self._const_values = tuple(value for _, value in self._const)
        order = sorted(range(len(names)), key=names.__getitem__)
        self._order = order
        self._before_le = [i for i in order if names[i] < "le"]
        self._after_le = [i for i in order if names[i] > "le"]
        self._full: dict[tuple[str, ...], str] = {}
        self._bucket: dict[tuple[str, ...], tuple[str, str]] = {}
        self._proto: dict[tuple[str, ...], bytes] = {}

    def use_constant_labels(self, const: tuple[tuple[str, str], ...]) -> None:
        if const != self._const:
            self._const = const
            self._layout()

    def _pairs(self, labels: tuple[str, ...], indexes: list[int]) -> str:
        names = self._names
        values = labels + self._const_values if self._const_values else labels
        return ",".join(f'{names[i]}="{escape_value(values[i])}"' for i in indexes)

    def full(self, labels: tuple[str, ...]) -> str:
        text = self._full.get(labels)
        if text is None:
            inner = self._pairs(labels, self._order)
            text = self._full[labels] = "{" + inner + "}" if inner else ""
        return text

    def bucket(self, labels: tuple[str, ...]) -> tuple[str, str]:
        """(text before ``le="..."``, text after it), each with its comma."""
        parts = self._bucket.get(labels)
        if parts is None:
            before = self._pairs(labels, self._before_le)
            after = self._pairs(labels, self._after_le)
            parts = self._bucket[labels] = (
                before + "," if before else "",
                "," + after if after else "",
            )
        return parts

    def proto(self, labels: tuple[str, ...]) -> bytes:
        """The protobuf ``label`` fields of a Metric (protobuf.py)."""
        encoded = self._proto.get(labels)
        if encoded is None:
            values = labels + self._const_values if self._const_values else labels
            encoded = self._proto[labels] = protobuf.label_pairs(
                zip(self._names, values, strict=True)
            )
        return encoded

    def prune(self, live: Iterable[tuple[str, ...]]) -> None:
        """Forget the text of label tuples that are gone (removed series)."""
        live_keys = set(live)
        for cache in (self._full, self._bucket, self._proto):
            if len(cache) > len(live_keys) + CACHE_SLACK:
                # list(): one C-level copy, safe while another scrape adds entries.
                for key in [k for k in list(cache) if k not in live_keys]:
                    cache.pop(key, None)


class FastFamily(Metric):
    """A counter or histogram family that renders its own exposition lines."""

    def __init__(
        self, name: str, documentation: str, typ: str, lines: Callable[[], list[str]]
    ) -> None:
        super().__init__(name, documentation, typ)
        self._lines = lines
        self._built: list[Sample] | None = None
        self.const_labels: dict[str, str] = {}
        self.text: LabelText

    # prometheus_client's Metric keeps ``samples`` as a plain attribute; here it is built
    # only when read (generate_latest, parsers, tests), never on the fast path.
    @property
    def samples(self) -> list[Sample]:
        if self._built is None:
            self._built = self.build().samples
        return self._built

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._built = value or None

    def build(self) -> Metric:
        raise NotImplementedError

    def add_labels(self, labels: dict[str, str]) -> None:
        """Constant labels on every sample (as daemon.py's collector adds ``broker``)."""
        self.const_labels = dict(labels)
        self._built = None
        self.text.use_constant_labels(tuple(sorted(labels.items())))

    def _with_const(self, family: Metric) -> Metric:
        if self.const_labels:
            family.samples = [
                Sample(s.name, {**self.const_labels, **s.labels}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            ]
        return family

    def header(self, openmetrics: bool) -> str:
        name = self.name
        if openmetrics:
            doc = escape_value(self.documentation)
        else:
            doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
            if self.type == "counter":
                name += "_total"
        return f"# HELP {name} {doc}\n# TYPE {name} {self.type}\n"

    def lines(self) -> list[str]:
        return self._lines()

    def proto_type(self) -> int:
        raise NotImplementedError

    def proto_name(self) -> str:
        return self.name

    def proto_metrics(self) -> list[bytes]:
        """This family's Metric messages in the protobuf format (protobuf.py)."""
        raise NotImplementedError


class FastCounterFamily(FastFamily):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        values: dict[tuple[str, ...], float],
        text: LabelText,
    ) -> None:
        self.labelnames = list(labelnames)
        self.values = values
        self.text = text
        super().__init__(name.removesuffix("_total"), documentation, "counter", self._render)

    def build(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return self._with_const(family)

    def _render(self) -> list[str]:
        sample = self.name + "_total"
        full = self.text.full
        out = [
            f"{sample}{full(labels)} {go_float(value)}\n" for labels, value in self.values.items()
        ]
        self.text.prune(self.values)
        return out

    def proto_type(self) -> int:
        return protobuf.COUNTER

    def proto_name(self) -> str:
        return self.name + "_total"

    def proto_metrics(self) -> list[bytes]:
        proto, counter = self.text.proto, protobuf.counter_metric
        out = [counter(proto(labels), value) for labels, value in self.values.items()]
        # A Prometheus that asks for protobuf never reads the text: prune here too.
        self.text.prune(self.values)
        return out


class FastHistogramFamily(FastFamily):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        le: Sequence[str],
        values: dict[tuple[str, ...], list[float]],
        text: LabelText,
        with_count: bool,
        bounds: Sequence[float] = (),
        native: dict[tuple[str, ...], NativeBuckets] | None = None,
        native_config: NativeConfig | None = None,
    ) -> None:
        self.labelnames = list(labelnames)
        self.le = list(le)
        self.values = values
        self.text = text
        self.with_count = with_count
        self.bounds = list(bounds)
        self.native = native
        self.native_config = native_config
        super().__init__(name, documentation, "histogram", self._render)

    def proto_type(self) -> int:
        return protobuf.HISTOGRAM

    def proto_metrics(self) -> list[bytes]:
        config = self.native_config
        native = self.native if config is not None else None
        zero_threshold = 0.0 if config is None else config.zero_threshold
        bounds = [protobuf.bound_field(b) for b in self.bounds]
        if config is not None and not config.classic:
            bounds = []
        proto, metric = self.text.proto, protobuf.histogram_metric
        out: list[bytes] = []
        for labels, slots in self.values.items():
            buckets: list[tuple[bytes, int]] = []
            cumulative = 0
            for bound, n in zip(bounds, slots, strict=False):
                cumulative += int(n)
                buckets.append((bound, cumulative))
            count = int(sum(slots[:-1]))  # every bucket, +Inf included
            series = None if native is None else native.get(labels)
            out.append(metric(proto(labels), count, slots[-1], buckets, series, zero_threshold))
        self.text.prune(self.values)
        return out

    def build(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, slots in self.values.items():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self.le, slots[:-1], strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, slots[-1])
        return self._with_const(family)

    def _render(self) -> list[str]:
        bucket_name = self.name + "_bucket"
        count_name = self.name + "_count"
        sum_name = self.name + "_sum"
        full = self.text.full
        bucket = self.text.bucket
        le_values = [f'le="{le}"' for le in self.le]
        out: list[str] = []
        append = out.append
        for labels, slots in self.values.items():
            before, after = bucket(labels)
            cumulative = 0.0
            for le, n in zip(le_values, slots, strict=False):
                cumulative += n
                append(f"{bucket_name}{{{before}{le}{after}}} {go_float(cumulative)}\n")
            if self.with_count:
                text = full(labels)
                append(f"{count_name}{text} {go_float(cumulative)}\n")
                append(f"{sum_name}{text} {go_float(slots[-1])}\n")
        self.text.prune(self.values)
        return out


class _One:
    """A registry of one family, for prometheus_client's encoders."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


def wants_protobuf(accept: str) -> bool:
    """Whether ``accept`` prefers the delimited protobuf format over every text format
    (Prometheus asks for it first, with q=1, when native histograms are enabled)."""
    protobuf_q = other_q = 0.0
    for entry in accept.split(","):
        media, *params = (part.strip() for part in entry.split(";"))
        fields = {}
        for param in params:
            key, _, value = param.partition("=")
            fields[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(fields.get("q", "1"))
        except ValueError:
            q = 0.0
        if media.lower() == "application/vnd.google.protobuf":
            if (
                fields.get("proto") == "io.prometheus.client.MetricFamily"
                and fields.get("encoding") == "delimited"
            ):
                protobuf_q = max(protobuf_q, q)
        elif media:
            other_q = max(other_q, q)
    return protobuf_q > 0 and protobuf_q >= other_q


def _has_native(families: dict[str, list[Metric]]) -> bool:
    return any(
        isinstance(m, FastHistogramFamily) and m.native is not None
        for same_name in families.values()
        for m in same_name
    )


def _left_out(name: str) -> None:
    _log_once(
        name,
        logging.ERROR,
        "writing metric family %s failed; it is left out of /metrics (a bug: please report)",
        name,
        exc_info=True,
    )


def _protobuf_family(same_name: list[Metric]) -> bytes:
    first = same_name[0]
    if not isinstance(first, FastFamily):
        return protobuf.generic_family(same_name)
    metrics = [
        m for fast in same_name if isinstance(fast, FastFamily) for m in fast.proto_metrics()
    ]
    return protobuf.family(first.proto_name(), first.documentation, first.proto_type(), metrics)


def render_protobuf(families: dict[str, list[Metric]]) -> bytes:
    parts: list[bytes] = []
    for name, same_name in families.items():
        try:
            parts.append(_protobuf_family(same_name))
        except Exception:
            _left_out(name)
    return b"".join(parts)


def _text_family(same_name: list[Metric], encoder: Any, openmetrics: bool) -> list[str]:
    first = same_name[0]
    if isinstance(first, FastFamily):
        lines = [first.header(openmetrics)]
        for metric in same_name:
            assert isinstance(metric, FastFamily)
            lines.extend(metric.lines())
        return lines
    if len(same_name) > 1:
        merged = Metric(first.name, first.documentation, first.type, first.unit)
        merged.samples = [sample for metric in same_name for sample in metric.samples]
        first = merged
    text: str = encoder(_One(first)).decode("utf-8")
    return [text.removesuffix("# EOF\n") if openmetrics else text]


def render(registry: Any, accept: str) -> tuple[bytes, str]:
    """The body and content type of a scrape: the protobuf format when the scraper prefers it
    and native histograms are kept, else as ``choose_encoder(accept)`` would give."""
    # With several brokers each family comes once per broker: every format allows a family
    # (HELP/TYPE) only once, so same-named families are written as one.
    families: dict[str, list[Metric]] = {}
    for metric in registry.collect():
        families.setdefault(metric.name, []).append(metric)
    if wants_protobuf(accept) and _has_native(families):
        return render_protobuf(families), protobuf.CONTENT_TYPE
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith(OPENMETRICS)
    parts: list[str] = []
    for name, same_name in families.items():
        try:
            parts.extend(_text_family(same_name, encoder, openmetrics))
        except Exception:
            _left_out(name)
    if openmetrics:
        parts.append("# EOF\n")
    return "".join(parts).encode("utf-8"), content_type
