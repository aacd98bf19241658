"""What a PromQL expression refers to, and what docs/metrics.md and alerts/ define.

Used to check that dashboards and alert rules name only metrics that exist, with labels they
have. The extraction is lexical, not a full parser (Prometheus itself checks the syntax), but it
knows PromQL's lexical rules: strings, label matchers, range and subquery brackets, grouping
lists, function calls, keywords, numbers and durations.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Labels Prometheus adds to every scraped series (``namespace`` and ``pod`` with the Prometheus
#: Operator's ServiceMonitor: the mixin's cluster and replica labels).
TARGET_LABELS = frozenset({"instance", "job", "namespace", "pod"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.DOTALL)
_COMMENT = re.compile(r"#[^\n]*")
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
# An identifier not glued to a preceding word character or dot (so not the "e3" of 1e3, the
# "m" of 5m, the "x1F" of 0x1F).
_WORD = re.compile(rf"(?<![\w.:])({_IDENT})")
_SELECTOR = re.compile(rf"(?<![\w.:])({_IDENT})?\s*\{{([^}}]*)\}}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*(\"\d+\")")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", re.I)
_BRACKETS = re.compile(r"\[[^\]]*\]")

#: Words that are never metric names: operators, modifiers, aggregations, number literals.
KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
        "group_right", "bool", "offset", "atan2", "inf", "nan",
        # aggregation operators may be followed by by/without instead of "("
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip


@dataclass
class Reference:
    """What one expression refers to."""

    metrics: set[str] = field(default_factory=set)
    #: regexes of ``{__name__=~"..."}`` matchers (Prometheus anchors them at both ends).
    name_patterns: set[str] = field(default_factory=set)
    #: (what the selector selects, label) for every label matcher inside a selector's braces:
    #: a metric name, ``"=~<regex>"`` for a regex on ``__name__``, or None.
    matcher_labels: set[tuple[str | None, str]] = field(default_factory=set)
    #: labels named in by/without/on/ignoring/group_left/group_right lists.
    grouping_labels: set[str] = field(default_factory=set)


def _mask_strings(expr: str) -> tuple[str, list[str]]:
    """Replace string literals with ``"<n>"`` placeholders (contents kept aside), drop comments."""
    strings: list[str] = []

    def keep(match: re.Match[str]) -> str:
        strings.append(match.group(0)[1:-1])
        return f'"{len(strings) - 1}"'

    # Strings first: a "#" or "{" inside a string is not syntax.
    masked = _STRING.sub(keep, expr)
    return _COMMENT.sub("", masked), strings


def references(expr: str) -> Reference:
    """Metric names, matcher labels and grouping labels that ``expr`` mentions."""
    masked, strings = _mask_strings(expr)
    ref = Reference()

    for match in _SELECTOR.finditer(masked):
        # What the selector selects: its name, {__name__="x"}, or {__name__=~"regex"}.
        selected = match.group(1)
        labels: list[str] = []
        for label, op, placeholder in _MATCHER.findall(match.group(2)):
            value = strings[int(placeholder[1:-1])]
            if label != "__name__":
                labels.append(label)
            elif op == "=":
                selected = value
            elif op == "=~":
                selected = "=~" + value
            # __name__!= and !~ only narrow what the other matchers select.
        if selected is not None and selected.startswith("=~"):
            ref.name_patterns.add(selected[2:])
        elif selected is not None:
            ref.metrics.add(selected)
        ref.matcher_labels.update((selected, label) for label in labels)

    for _keyword, names in _GROUPING.findall(masked):
        ref.grouping_labels.update(x.strip() for x in names.split(",") if x.strip())

    # What is left once matchers, ranges and grouping lists are gone: identifiers are
    # functions (followed by "("), keywords, or metric names.
    bare = re.sub(r"\{[^}]*\}", " ", masked)
    bare = _BRACKETS.sub(" ", bare)
    bare = _GROUPING.sub(r" \1 ", bare)
    bare = re.sub(r'"\d+"', " ", bare)
    for match in _WORD.finditer(bare):
        word = match.group(1)
        if word.lower() in KEYWORDS:
            continue
        if bare[match.end() :].lstrip().startswith("("):
            continue  # a function call
        ref.metrics.add(word)
    return ref


@dataclass(frozen=True)
class Selector:
    """One vector selector of an expression, as written."""

    #: a metric name, ``"=~<regex>"`` for a regex on ``__name__``, or None.
    selected: str | None
    #: (label, operator, value) of its matchers, ``__name__`` excepted.
    matchers: tuple[tuple[str, str, str], ...] = ()


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr``, in order: ``name{...}``, ``{...}``, and bare names."""
    masked, strings = _mask_strings(expr)
    found: list[tuple[int, Selector]] = []
    for match in _SELECTOR.finditer(masked):
        selected = match.group(1)
        matchers: list[tuple[str, str, str]] = []
        for label, op, placeholder in _MATCHER.findall(match.group(2)):
            value = strings[int(placeholder[1:-1])]
            if label != "__name__":
                matchers.append((label, op, value))
            elif op in ("=", "=~"):
                selected = value if op == "=" else "=~" + value
        found.append((match.start(), Selector(selected, tuple(matchers))))
    # Bare names: what references() finds once the selectors with braces are blanked out
    # (same length, so positions stay comparable).
    bare = _SELECTOR.sub(lambda m: " " * len(m.group(0)), masked)
    bare = _BRACKETS.sub(lambda m: " " * len(m.group(0)), bare)
    bare = _GROUPING.sub(lambda m: m.group(1) + " " * (len(m.group(0)) - len(m.group(1))), bare)
    bare = re.sub(r'"\d+"', lambda m: " " * len(m.group(0)), bare)
    for match in _WORD.finditer(bare):
        word = match.group(1)
        if word.lower() in KEYWORDS or bare[match.end() :].lstrip().startswith("("):
            continue
        found.append((match.start(), Selector(word)))
    return [selector for _, selector in sorted(found, key=lambda x: x[0])]


def metric_names(expr: str) -> set[str]:
    return references(expr).metrics


# --------------------------------------------------------------------------------------------
# What exists


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: frozenset[str]


#: The label every series carries when the exporter watches several brokers (docs/metrics.md
#: says so once, above its tables, rather than in every row), except the series below.
BROKER_LABEL = "broker"
NOT_PER_BROKER = (
    "celery_exporter_build_info",
    "celery_exporter_web_config_",
    "celery_exporter_http_",
    "process_",
    "scrape_",  # added by Prometheus to each target, not by the exporter
)

_DOC_ROW = re.compile(r"^\|\s*`([a-zA-Z_:][\w:]*\*?)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|", re.M)


def documented_metrics(path: Path = REPO_ROOT / "docs" / "metrics.md") -> dict[str, Metric]:
    """Every series name docs/metrics.md documents, from its tables.

    A histogram gives ``_bucket`` (with ``le``), ``_sum`` and ``_count``, and its own name for
    the native histogram Prometheus stores when it scrapes the protobuf format; counters are listed
    with their ``_total`` name already. A name ending in ``*`` (``process_*``) is a prefix.
    Every metric but ``NOT_PER_BROKER`` also has the ``broker`` label.
    """
    metrics: dict[str, Metric] = {}
    for name, kind, labels_cell in _DOC_ROW.findall(path.read_text()):
        if name == "metric":
            continue
        labels = frozenset(re.findall(r"`([a-zA-Z_]\w*)`", labels_cell))
        if not name.startswith(NOT_PER_BROKER):
            labels |= {BROKER_LABEL}
        kind = kind.strip()
        if kind == "histogram":
            metrics[f"{name}_bucket"] = Metric(f"{name}_bucket", kind, labels | {"le"})
            metrics[f"{name}_sum"] = Metric(f"{name}_sum", kind, labels)
            metrics[f"{name}_count"] = Metric(f"{name}_count", kind, labels)
            metrics[name] = Metric(name, kind, labels)
        else:
            metrics[name] = Metric(name, kind, labels)
    return metrics


def lookup(name: str, metrics: dict[str, Metric]) -> Metric | None:
    """The documented metric ``name``, matching ``prefix*`` entries too."""
    if name in metrics:
        return metrics[name]
    for key, metric in metrics.items():
        if key.endswith("*") and name.startswith(key[:-1]):
            return metric
    return None


_RECORD = re.compile(r"^\s*(?:-\s*)?record\s*:\s*[\"']?([a-zA-Z_:][\w:]*)[\"']?\s*$", re.M)


def recording_rules(directory: Path = REPO_ROOT / "alerts") -> set[str]:
    """Names of the recording rules defined in ``directory``/*.yml (none if it is missing)."""
    if not directory.is_dir():
        return set()
    names: set[str] = set()
    for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        names.update(_RECORD.findall(path.read_text()))
    return names


def problems(
    expr: str, metrics: dict[str, Metric], rules: set[str], extra_labels: Collection[str] = ()
) -> list[str]:
    """What is wrong with the names in ``expr`` (an empty list when nothing is):

    - every metric name is documented (``metrics``) or a recording rule (``rules``);
    - a ``{__name__=~"..."}`` regex matches at least one documented metric;
    - every label matcher of a documented metric uses one of its labels (or a target label);
    - every label in by/without/on/ignoring/group_x lists belongs to a metric of the
      expression (or a target label, or ``extra_labels``); not checked when a recording
      rule is involved, its labels being unknown here.
    """
    ref = references(expr)
    found: list[str] = []
    known: list[Metric] = []
    for name in sorted(ref.metrics):
        metric = lookup(name, metrics)
        if metric is not None:
            known.append(metric)
        elif name not in rules:
            found.append(f"unknown metric {name!r}")
    for pattern in sorted(ref.name_patterns):
        matching = [m for key, m in metrics.items() if re.fullmatch(pattern, key)]
        if not matching:
            found.append(f"__name__=~{pattern!r} matches no documented metric")
        known.extend(matching)
    for selected, label in sorted(ref.matcher_labels, key=str):
        if selected is None:
            continue
        if selected.startswith("=~"):
            candidates = [m for key, m in metrics.items() if re.fullmatch(selected[2:], key)]
        else:
            metric = lookup(selected, metrics)
            candidates = [metric] if metric is not None else []
        for metric in candidates:
            if label not in metric.labels | TARGET_LABELS:
                found.append(f"{metric.name} has no label {label!r} ({sorted(metric.labels)})")
    if not (ref.metrics & rules):
        available = set().union(*(m.labels for m in known)) | TARGET_LABELS | set(extra_labels)
        for label in sorted(ref.grouping_labels - available):
            found.append(f"grouping label {label!r} belongs to no metric of the expression")
    return found
