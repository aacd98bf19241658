"""The exporter's /metrics text, parsed for the figures a benchmark checks."""

from __future__ import annotations

import re

_METRIC_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text exposition: name -> [(labels, value)]."""

    def __init__(self, text: str) -> None:
        self.series: dict[str, list[tuple[dict[str, str], float]]] = {}
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            match = _METRIC_LINE.match(line)
            if match is None:
                continue
            name, labels_text, value = match.groups()
            labels = dict(_LABEL.findall(labels_text)) if labels_text else {}
            self.series.setdefault(name, []).append((labels, float(value)))

    def total(self, name: str, **match: str) -> float:
        return sum(
            value
            for labels, value in self.series.get(name, [])
            if all(labels.get(k) == v for k, v in match.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.series.get(name, []):
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


def events_total(metrics: Metrics) -> float:
    return metrics.total("celery_exporter_events_total")


def counter_delta(after: Metrics, before: Metrics, name: str, label: str) -> dict[str, float]:
    a, b = after.by_label(name, label), before.by_label(name, label)
    return {k: v - b.get(k, 0.0) for k, v in a.items() if v - b.get(k, 0.0)}


def fmt_counts(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counts.items()))
