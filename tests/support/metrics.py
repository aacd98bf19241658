"""Read metrics the way Prometheus does: from the text exposition."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def registry_samples(registry: CollectorRegistry) -> Samples:
    return parse_samples(generate_latest(registry).decode())


def scrape(port: int, timeout: float = 5.0) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        return parse_samples(resp.read().decode())


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The sample with exactly these labels, or None when absent."""
    return samples.get((metric, frozenset(labels.items())))


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and wanted <= ls)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls) in samples if n == name and label in dict(ls)}
