#!/usr/bin/env python3
"""Writes the Grafana dashboards in grafana/dashboards/ from the definitions below.

Edit this file, then run ``python3 grafana/generate.py``: the JSON files are its output (a test
fails when they differ). Only the standard library is needed.

Conventions every panel follows: the ``${datasource}`` variable as data source; label filters
as regex matchers on the ``$broker``/``$queue``/``$worker``/``$task`` variables (multi-value,
"All" is ``.*``), ``$broker`` on every celery_* selector (``B``, ``sel()``, and the ``Q``/``W``/
``T`` filter sets); per-queue, per-worker and per-task series grouped by broker too
(``BY_QUEUE``...) with the broker in their legends (``L_QUEUE``...); a description saying what
to look for; a unit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Panel = dict[str, Any]

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39

# Label filters. Every celery_* selector carries B (alone, through sel(), where no other
# variable applies): with several brokers every series carries broker="NAME", with a single
# unnamed one none does, and broker=~".*" ("All") matches series without the label too.
# Task counters carry name, hostname and queue_name; histograms and celery_task_sent_total
# have no hostname; running and periodic metrics only a name.
B = 'broker=~"$broker"'
_Q = 'queue_name=~"$queue"'
_W = 'hostname=~"$worker"'
_T = 'name=~"$task"'
Q = f"{B}, {_Q}"
W = f"{B}, {_W}"
T = f"{B}, {_T}"
TQW = f"{B}, {_T}, {_Q}, {_W}"
TQ = f"{B}, {_T}, {_Q}"
R = "$__rate_interval"


def sel(metric: str, filters: str = B) -> str:
    """``metric{filters}``: a selector, by default filtered on the broker only."""
    return f"{metric}{{{filters}}}"


# Groupings of per-queue, per-worker and per-task series: the broker comes first, so that
# two brokers' queues, workers or tasks of the same name stay apart when "All" brokers are
# shown (without a broker label it changes nothing). Cluster-wide totals do not group.
BY_QUEUE = "broker, queue_name"
BY_WORKER = "broker, hostname"
BY_TASK = "broker, name"
# Legends name the broker after what it qualifies; it renders empty (no label) with a
# single unnamed broker.
L_QUEUE = "{{queue_name}} {{broker}}"
L_WORKER = "{{hostname}} {{broker}}"
L_TASK = "{{name}} {{broker}}"
# "0 when an exporter is scraped, nothing when none is": appended with `or` to counts that
# are empty when nothing is wrong, so they read 0 rather than "No data", while a dashboard
# with no exporter behind it still says "No data".
ZERO = f"sum(0 * {sel('celery_exporter_broker_up')})"
# Tasks that finished, either way (celery_task_failed_total has an extra `exception` label,
# so the two never share a label set once rate() drops the name).
FINISHED = "celery_task_(succeeded|failed)_total"


def finished(filters: str) -> str:
    return f'{{__name__=~"{FINISHED}", {filters}}}'


# --------------------------------------------------------------------------------------------
# Panel builders


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if instant:
        t["format"] = "table"
    return t


def targets(*pairs: tuple[str, str], instant: bool = False) -> list[dict[str, Any]]:
    """Targets A, B, C... from (expr, legend) pairs."""
    return [
        target(expr, legend, chr(ord("A") + i), instant) for i, (expr, legend) in enumerate(pairs)
    ]


def thresholds(base: str, *steps: tuple[float, str]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}]
        + [{"color": color, "value": value} for value, color in steps],
    }


NEUTRAL = thresholds("blue")


def value_map(**texts: tuple[str, str]) -> list[dict[str, Any]]:
    """``value_map(v0=("DOWN", "red"))``: value 0 shown as DOWN in red."""
    options = {
        key.removeprefix("v"): {"text": text, "color": color, "index": i}
        for i, (key, (text, color)) in enumerate(texts.items())
    }
    return [{"type": "value", "options": options}]


def override(name: str, **props: Any) -> dict[str, Any]:
    """Field override by display name (``name``) or by regex (``name`` as ``/regex/``)."""
    matcher = (
        {"id": "byRegexp", "options": name}
        if name.startswith("/")
        else {"id": "byName", "options": name}
    )
    properties = []
    for key, value in props.items():
        prop = {
            "unit": "unit",
            "color": "color",
            "thresholds": "thresholds",
            "mappings": "mappings",
            "decimals": "decimals",
            "min": "min",
            "max": "max",
            "cell": "custom.cellOptions",
            "dash": "custom.lineStyle",
            "width": "custom.width",
            "display": "displayName",
        }[key]
        properties.append({"id": prop, "value": value})
    return {"matcher": matcher, "properties": properties}


def fixed(color: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": color}


DASHED = {"fill": "dash", "dash": [10, 10]}
COLOR_CELL = {"type": "color-background", "mode": "basic"}
COLOR_TEXT = {"type": "color-text"}


def _panel(kind: str, title: str, description: str, w: int, h: int) -> Panel:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
    }


def timeseries(
    title: str,
    description: str,
    tgts: list[dict[str, Any]],
    unit: str,
    *,
    w: int = 12,
    h: int = 8,
    min_: float | None = 0,
    max_: float | None = None,
    bars: bool = False,
    steps: bool = False,
    stack: bool = False,
    threshold_line: tuple[float, str] | None = None,
    overrides: Sequence[dict[str, Any]] = (),
    no_value: str | None = None,
    decimals: int | None = None,
) -> Panel:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineInterpolation": "stepAfter" if steps else "linear",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "gradientMode": "none",
        "showPoints": "never",
        "pointSize": 4,
        "spanNulls": False,
        "axisPlacement": "auto",
        "axisLabel": "",
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "scaleDistribution": {"type": "linear"},
        "barAlignment": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "thresholdsStyle": {"mode": "line+area" if threshold_line else "off"},
    }
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "mappings": [],
        "thresholds": (
            thresholds("transparent", (threshold_line[0], threshold_line[1]))
            if threshold_line
            else thresholds("green")
        ),
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    panel = _panel("timeseries", title, description, w, h)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": list(overrides)}
    panel["options"] = {
        "legend": {
            "showLegend": True,
            "displayMode": "table",
            "placement": "bottom",
            "calcs": ["lastNotNull", "max"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    panel["targets"] = tgts
    return panel


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str,
    steps: dict[str, Any] = NEUTRAL,
    *,
    mappings: list[dict[str, Any]] | None = None,
    no_value: str | None = None,
    decimals: int | None = None,
    w: int = 4,
    h: int = 4,
    legend: str = "",
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": steps,
        "mappings": mappings or [],
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    panel = _panel("stat", title, description, w, h)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        # "last", not "lastNotNull": a series gone now (an emptied queue) must not show the
        # value it had an hour ago.
        "reduceOptions": {"calcs": ["last"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
        "wideLayout": True,
        "showPercentChange": False,
    }
    panel["targets"] = [target(expr, legend)]
    return panel


def table(
    title: str,
    description: str,
    key_labels: dict[str, str],
    columns: Sequence[tuple[str, str, str]],
    *,
    overrides: Sequence[dict[str, Any]] = (),
    w: int = 24,
    h: int = 8,
    no_value: str | None = None,
    unit: str = "short",
    sort_by: str | None = None,
    hide_values: bool = False,
) -> Panel:
    """A table of instant queries merged on their labels.

    ``key_labels``: label -> column title, in order (other labels are hidden). ``columns``:
    (title, unit, expr) per value column. Each query must keep only the key labels.
    ``hide_values``: show the key labels only (a list of label combinations). A label
    the results lack (``broker`` with a single unnamed broker) gets no column.
    """
    tgts = targets(*((expr, "") for _, _, expr in columns), instant=True)
    value_field = {
        (f"Value #{t['refId']}" if len(columns) > 1 else "Value"): title
        for t, (title, _, _) in zip(tgts, columns, strict=True)
    }
    index = {label: i for i, label in enumerate(key_labels)}
    index.update({name: len(index) + i for i, name in enumerate(value_field)})
    transformations: list[dict[str, Any]] = []
    if len(columns) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "organize",
            "options": {
                "excludeByName": {
                    "Time": True,
                    "__name__": True,
                    "instance": True,
                    "job": True,
                    **dict.fromkeys(value_field if hide_values else (), True),
                },
                "indexByName": index,
                "renameByName": {**key_labels, **value_field},
            },
        }
    )
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": thresholds("transparent"),
        "mappings": [],
        "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    column_units = [override(title, unit=u) for title, u, _ in columns if u != unit]
    panel = _panel("table", title, description, w, h)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": column_units + list(overrides)}
    panel["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        "sortBy": [{"displayName": sort_by, "desc": True}] if sort_by else [],
    }
    panel["targets"] = tgts
    panel["transformations"] = transformations
    return panel


def bargauge(
    title: str,
    description: str,
    expr: str,
    legend: str,
    unit: str,
    steps: dict[str, Any],
    *,
    min_: float = 0,
    max_: float | None = None,
    w: int = 12,
    h: int = 8,
    no_value: str | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": min_,
        "color": {"mode": "thresholds"},
        "thresholds": steps,
        "mappings": [],
    }
    if max_ is not None:
        defaults["max"] = max_
    if no_value is not None:
        defaults["noValue"] = no_value
    panel = _panel("bargauge", title, description, w, h)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "auto",
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
    }
    tgt = target(expr, legend, instant=True)
    tgt["format"] = "time_series"
    panel["targets"] = [tgt]
    return panel


# --------------------------------------------------------------------------------------------
# Dashboard assembly


def layout(sections: Iterable[tuple[str, list[Panel]]]) -> list[Panel]:
    """Rows of panels, placed left to right and wrapped at 24 columns; ids in order."""
    panels: list[Panel] = []
    y = 0
    next_id = 1
    for title, members in sections:
        panels.append(
            {
                "type": "row",
                "title": title,
                "id": next_id,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in members:
            pos = panel["gridPos"]
            if x + pos["w"] > 24:
                x, y, line_height = 0, y + line_height, 0
            pos["x"], pos["y"] = x, y
            x += pos["w"]
            line_height = max(line_height, pos["h"])
            panel["id"] = next_id
            next_id += 1
            panels.append(panel)
        y += line_height
    return panels


# name -> (label, selector, label listed, description). Every dashboard has the broker
# variable (every panel filters on it) and the others chained to it: their values are those
# of the chosen brokers.
VARIABLE_QUERIES = {
    "broker": (
        "Broker",
        "celery_exporter_broker_up",
        "broker",
        "Brokers the exporter watches (--broker-url NAME=URL). With a single unnamed broker "
        "there is no broker label and only All is offered; it matches every series.",
    ),
    "queue": ("Queue", sel("celery_queue_messages"), "queue_name", "Queues the exporter samples."),
    "worker": ("Worker", sel("celery_worker_up"), "hostname", "Worker node names (celery@host)."),
    "task": (
        "Task",
        sel("celery_task_received_total"),
        "name",
        "Task names workers received.",
    ),
}


def variables(names: Sequence[str]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "description": "The Prometheus that scrapes celery-metrics-exporter.",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        }
    ]
    for name in ["broker", *names]:
        label, selector, label_name, description = VARIABLE_QUERIES[name]
        query = f"label_values({selector}, {label_name})"
        result.append(
            {
                "name": name,
                "label": label,
                "description": description,
                "type": "query",
                "datasource": DS,
                "definition": query,
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "options": [],
                "hide": 0,
                "skipUrlSync": False,
            }
        )
    return result


def dashboard(
    uid: str,
    title: str,
    description: str,
    sections: list[tuple[str, list[Panel]]],
    filters: Sequence[str],
) -> dict[str, Any]:
    """``filters``: the query variables besides ``broker`` (which every dashboard has), only
    those the panels can filter on (a drop-down that changes nothing would mislead)."""
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": ["celery"],
                "targetBlank": False,
                "title": "Celery dashboards",
                "type": "dashboards",
            }
        ],
        "panels": layout(sections),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["celery"],
        "templating": {"list": variables(filters)},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --------------------------------------------------------------------------------------------
# Shared expressions


def quantile(q: float, histogram: str, filters: str, by: str = "") -> str:
    """A quantile of a task histogram; ``>= 0`` drops the NaN of a window with no task."""
    group = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({group}) "
        f"(rate(celery_task_{histogram}_seconds_bucket{{{filters}}}[{R}]))) >= 0"
    )


def failure_ratio(by: str, filters: str, window: str = R) -> str:
    group = f" by ({by})" if by else ""
    return (
        f"sum{group} (rate(celery_task_failed_total{{{filters}}}[{window}]))\n"
        f"/ (sum{group} (rate({finished(filters)}[{window}])) > 0)"
    )


UP_DOWN = value_map(v0=("DOWN", "red"), v1=("UP", "green"))
HEARTBEAT_AGE = (
    f"time() - max by ({BY_WORKER}) (celery_worker_last_heartbeat_timestamp_seconds{{{W}}})"
)
SATURATION = (
    f"max by ({BY_WORKER}) (celery_worker_busy_processes{{{W}}})\n"
    f"/ max by ({BY_WORKER}) (celery_worker_pool_processes{{{W}}} > 0)"
)


# --------------------------------------------------------------------------------------------
# 1. Overview


def overview() -> dict[str, Any]:
    now = [
        stat(
            "Broker",
            "Is the exporter connected to the broker (to each one, when it watches several) "
            "and consuming events? DOWN: the broker is unreachable (incident 01); the "
            "exporter keeps serving and reconnects by itself. "
            "'No exporter': Prometheus scrapes no celery-metrics-exporter (check the target).",
            f"min by (broker) ({sel('celery_exporter_broker_up')})",
            "none",
            thresholds("red", (1, "green")),
            mappings=UP_DOWN,
            no_value="No exporter",
            legend="{{broker}}",
        ),
        stat(
            "Workers online",
            "Workers heartbeating now (of the selected ones). 0 with a ready backlog means "
            "tasks pile up and nothing will run them (incident 01).",
            f"sum(celery_worker_up{{{W}}}) or {ZERO}",
            "none",
            thresholds("red", (1, "green")),
            decimals=0,
        ),
        stat(
            "Workers down",
            "Workers that stopped heartbeating (killed, OOM, lost network: after 5 missed "
            "heartbeats) or shut down, in the last hour (--worker-purge-after). See the "
            "Workers dashboard for which.",
            f"count(celery_worker_up{{{W}}} == 0) or {ZERO}",
            "none",
            thresholds("green", (1, "red")),
            decimals=0,
        ),
        stat(
            "Ready backlog",
            "Messages waiting in the broker for a worker (ready, not prefetched), summed over "
            "the selected queues. Orange above 100, red above 1000: look at the Queues "
            "dashboard for which queue grows.",
            f"sum(celery_queue_messages{{{Q}}}) or {ZERO}",
            "short",
            thresholds("green", (100, "orange"), (1000, "red")),
            decimals=0,
        ),
        stat(
            "Queues nobody consumes",
            "Queues holding messages that no live worker consumes: they will never drain "
            "(routing mismatch, incidents 03 and 04). The table further down names them.",
            f"count((celery_queue_messages{{{Q}}} > 0)\n"
            f"and (celery_queue_worker_consumers{{{Q}}} == 0)) or {ZERO}",
            "none",
            thresholds("green", (1, "red")),
            decimals=0,
        ),
        stat(
            "Oldest message age",
            "How long the next message of the slowest selected queue has waited (Redis only). "
            "Growing steadily: consumers are missing or too slow. Empty: no message waiting, "
            "or a RabbitMQ broker.",
            f"max(celery_queue_oldest_message_age_seconds{{{Q}}})",
            "s",
            thresholds("green", (60, "orange"), (600, "red")),
            no_value="None waiting",
        ),
        stat(
            "Succeeded /s (5m)",
            "Tasks finishing successfully per second over the last 5 minutes. 0 while the "
            "backlog is above 0 means nothing is being processed (incident 04).",
            f"sum(rate(celery_task_succeeded_total{{{TQW}}}[5m])) or {ZERO}",
            "ops",
        ),
        stat(
            "Failed /s (5m)",
            "Tasks raising an exception per second over the last 5 minutes. See the Tasks "
            "dashboard for which task and which exception.",
            f"sum(rate(celery_task_failed_total{{{TQW}}}[5m])) or {ZERO}",
            "ops",
            thresholds("green", (0.001, "orange")),
        ),
        stat(
            "Failure ratio (5m)",
            "Failed / (succeeded + failed) over the last 5 minutes. Empty when no task finished.",
            failure_ratio("", TQW, "5m"),
            "percentunit",
            thresholds("green", (0.05, "orange"), (0.2, "red")),
            no_value="No tasks",
        ),
        stat(
            "Runtime p95 (5m)",
            "95th percentile of task execution time (successes and failures) over the last 5 "
            "minutes. Compare with your tasks' time limits.",
            quantile(0.95, "runtime", TQ).replace(R, "5m"),
            "s",
            no_value="No tasks",
        ),
        stat(
            "Worker restarts (1h)",
            "worker-online events in the last hour, beyond each worker's first. A worker in a "
            "crash or restart loop (exits after its banner, incident 02) makes this climb; a "
            "broker outage adds one per worker (consumers reconnect).",
            f"sum(increase(celery_worker_online_total{{{W}}}[1h])) or {ZERO}",
            "none",
            thresholds("green", (1, "orange"), (10, "red")),
            decimals=0,
        ),
        stat(
            "Workers without task events",
            "Workers that process tasks but send no task events: started without -E. Task "
            "metrics miss everything they run. Fix: `celery worker -E`, "
            "worker_send_task_events = True, or the exporter's --enable-events-interval.",
            f"count(celery_worker_task_events_enabled{{{W}}} == 0) or {ZERO}",
            "none",
            thresholds("green", (1, "orange")),
            decimals=0,
        ),
    ]
    tasks = [
        timeseries(
            "Task throughput",
            "Tasks per second by outcome. Failed or retried rising while succeeded falls: a "
            "dependency of your tasks is failing. Received above succeeded + failed for long: "
            "workers fall behind.",
            targets(
                (f"sum(rate(celery_task_succeeded_total{{{TQW}}}[{R}]))", "succeeded"),
                (f"sum(rate(celery_task_failed_total{{{TQW}}}[{R}]))", "failed"),
                (f"sum(rate(celery_task_retried_total{{{TQW}}}[{R}]))", "retried"),
                (f"sum(rate(celery_task_received_total{{{TQW}}}[{R}]))", "received"),
            ),
            "ops",
            w=8,
            overrides=[
                override("succeeded", color=fixed("green")),
                override("failed", color=fixed("red")),
                override("retried", color=fixed("orange")),
                override("received", color=fixed("blue"), dash=DASHED),
            ],
        ),
        timeseries(
            "Failure ratio",
            "Failed / (succeeded + failed). A step up after a deploy points at the deploy; a "
            "slow climb at a dependency.",
            targets((failure_ratio("", TQW), "failure ratio")),
            "percentunit",
            w=8,
            max_=1,
            threshold_line=(0.2, "red"),
        ),
        timeseries(
            "Task runtime percentiles",
            "Execution time of the selected tasks (succeeded and failed). p99 near a time "
            "limit: tasks are about to be killed.",
            targets(
                (quantile(0.5, "runtime", TQ), "p50"),
                (quantile(0.95, "runtime", TQ), "p95"),
                (quantile(0.99, "runtime", TQ), "p99"),
            ),
            "s",
            w=8,
        ),
    ]
    queues = [
        timeseries(
            "Ready backlog by queue",
            "Ready messages per queue (Redis: priority sub-queues included). A line that only "
            "goes up: nobody consumes that queue, or consumers are too slow.",
            targets((f"sum by ({BY_QUEUE}) (celery_queue_messages{{{Q}}})", L_QUEUE)),
            "short",
            w=8,
            decimals=0,
        ),
        timeseries(
            "Oldest message age by queue",
            "How long the next message of each queue has waited (Redis only). Should stay "
            "near your acceptable latency; a straight rising line means the queue is stuck.",
            targets(
                (
                    f"max by ({BY_QUEUE}) (celery_queue_oldest_message_age_seconds{{{Q}}})",
                    L_QUEUE,
                )
            ),
            "s",
            w=8,
        ),
        table(
            "Queues with messages and no live consumer",
            "Each row is a queue nobody will drain: messages wait, yet no live worker "
            "consumes it. Usual causes: a route to a queue no worker listens to (-Q), or all "
            "its workers are down. Empty is good.",
            {"queue_name": "Queue", "broker": "Broker"},
            [
                (
                    "Ready messages",
                    "short",
                    f"sum by ({BY_QUEUE}) ((celery_queue_messages{{{Q}}} > 0)"
                    f" and (celery_queue_worker_consumers{{{Q}}} == 0))",
                )
            ],
            w=8,
            no_value="None",
            sort_by="Ready messages",
        ),
    ]
    workers = [
        timeseries(
            "Workers up and down",
            "Live workers, and workers known to be down (kept for --worker-purge-after). "
            "Dips of 'up' with matching bumps of 'down' are restarts or crashes.",
            targets(
                (f"sum(celery_worker_up{{{W}}})", "up"),
                (f"count(celery_worker_up{{{W}}} == 0) or {ZERO}", "down"),
            ),
            "none",
            w=8,
            decimals=0,
            overrides=[
                override("up", color=fixed("green")),
                override("down", color=fixed("red")),
            ],
        ),
        timeseries(
            "Worker restarts",
            "worker-online events per worker (only workers that had one). Regular bars for "
            "the same worker: a restart loop (incident 02); check its exit code and logs.",
            targets(
                (
                    f"sum by ({BY_WORKER}) (increase(celery_worker_online_total{{{W}}}[{R}])) > 0",
                    L_WORKER,
                )
            ),
            "none",
            w=8,
            bars=True,
            no_value="No restarts",
        ),
        timeseries(
            "Busy vs pool processes",
            "Pool processes running a task versus pool size, over live workers. Busy at the "
            "pool size for long: all workers are saturated, add capacity.",
            targets(
                (f"sum(celery_worker_busy_processes{{{W}}})", "busy"),
                (
                    f"sum(celery_worker_pool_processes{{{W}}} and celery_worker_up{{{W}}} == 1)",
                    "pool size",
                ),
            ),
            "none",
            w=8,
            overrides=[override("pool size", dash=DASHED, color=fixed("text"))],
        ),
    ]
    exporter = [
        timeseries(
            "Event lag and silence",
            "Lag: arrival minus sending time of the latest event (worker batching and clock "
            "skew included); growing means the exporter falls behind. Silence: time since "
            "the last event; it grows when no worker sends anything.",
            targets(
                (
                    f"max by (broker) ({sel('celery_exporter_event_lag_seconds')})",
                    "lag {{broker}}",
                ),
                (
                    "time() - max by (broker) "
                    f"({sel('celery_exporter_last_event_timestamp_seconds')} > 0)",
                    "silence {{broker}}",
                ),
            ),
            "s",
            w=5,
        ),
        timeseries(
            "Skipped events",
            "Malformed or unusable event messages skipped, by reason. handler_error is a bug "
            "in the exporter: please report it. Anything else points at a foreign producer "
            "on the event exchange.",
            targets(
                (
                    f"sum by (broker, reason) "
                    f"(rate({sel('celery_exporter_events_skipped_total')}[{R}]))",
                    "{{reason}} {{broker}}",
                )
            ),
            "ops",
            w=5,
        ),
        timeseries(
            "Broker reconnects",
            "Event connections lost and reopened (error: broker went away; watchdog: a "
            "silent half-open connection) and failed connection attempts. Events sent while "
            "disconnected are lost, so counters undercount during these.",
            targets(
                (
                    f"sum by (broker, reason) "
                    f"(increase({sel('celery_exporter_broker_reconnects_total')}[{R}]))",
                    "reconnect ({{reason}}) {{broker}}",
                ),
                (
                    f"sum by (broker) "
                    f"(increase({sel('celery_exporter_broker_connect_failures_total')}[{R}]))",
                    "failed connects {{broker}}",
                ),
            ),
            "none",
            w=5,
            bars=True,
        ),
        stat(
            "Queue sampling",
            "Did the latest sample of the broker's queues succeed (per source, redis or "
            "rabbitmq, and per broker)? DOWN: queue panels show the last good values (see "
            "the sample age next to this); the exporter logs the error once per outage.",
            f"min by (broker, source) ({sel('celery_exporter_source_up')})",
            "none",
            thresholds("red", (1, "green")),
            mappings=UP_DOWN,
            no_value="No queue source",
            legend="{{source}} {{broker}}",
            w=4,
            h=8,
        ),
        timeseries(
            "Queue sample age",
            "Age of the queue numbers: time since each source last sampled the broker. It "
            "should stay below a few sample intervals (5 s); when it grows the queue panels "
            "show old values.",
            targets(
                (
                    "time() - max by (broker, source) "
                    f"({sel('celery_exporter_source_last_success_timestamp_seconds')})",
                    "{{source}} {{broker}} sample age",
                ),
            ),
            "s",
            w=5,
            threshold_line=(60, "red"),
        ),
    ]
    return dashboard(
        "celery-overview",
        "Celery / Overview",
        "Is Celery healthy right now? Broker, workers, backlog, throughput, failures, and "
        "the exporter's own health. Drill down with the Queues, Workers and Tasks dashboards.",
        [
            ("Right now", now),
            ("Tasks", tasks),
            ("Queues", queues),
            ("Workers", workers),
            ("Exporter", exporter),
        ],
        ["queue", "worker", "task"],
    )


# --------------------------------------------------------------------------------------------
# 2. Queues


def queues() -> dict[str, Any]:
    completed = f"sum by ({BY_QUEUE}) (rate({finished(Q)}[5m]))"
    now = [
        table(
            "Queues now",
            "One row per queue. Red 'Live worker consumers' with 'Ready' above 0: a queue "
            "nobody drains (incidents 03, 04). 'Reserved' (Redis) counts messages handed to "
            "workers but not acknowledged (prefetched, ETA, acks_late); 'Broker consumers' "
            "is RabbitMQ's own count. Rates and p95 are over 5 minutes.",
            {"queue_name": "Queue", "broker": "Broker"},
            [
                ("Ready", "short", f"sum by ({BY_QUEUE}) (celery_queue_messages{{{Q}}})"),
                (
                    "Reserved",
                    "short",
                    f"sum by ({BY_QUEUE}) (celery_queue_reserved_messages{{{Q}}})",
                ),
                (
                    "Oldest message",
                    "s",
                    f"max by ({BY_QUEUE}) (celery_queue_oldest_message_age_seconds{{{Q}}})",
                ),
                (
                    "Live worker consumers",
                    "short",
                    f"sum by ({BY_QUEUE}) (celery_queue_worker_consumers{{{Q}}})",
                ),
                (
                    "Broker consumers",
                    "short",
                    f"sum by ({BY_QUEUE}) (celery_queue_broker_consumers{{{Q}}})",
                ),
                ("Completed /s", "ops", completed),
                (
                    "Queue wait p95",
                    "s",
                    quantile(0.95, "queue_wait", Q, BY_QUEUE).replace(R, "5m"),
                ),
            ],
            overrides=[
                override(
                    "Live worker consumers",
                    cell=COLOR_CELL,
                    thresholds=thresholds("red", (1, "green")),
                ),
                override(
                    "Ready",
                    cell=COLOR_TEXT,
                    thresholds=thresholds("text", (100, "orange"), (1000, "red")),
                ),
            ],
            h=9,
            sort_by="Ready",
        )
    ]
    depth = [
        timeseries(
            "Ready messages",
            "Messages waiting in each queue (Redis: priority sub-queues included; RabbitMQ: "
            "ready only). Sustained above 100 with no drain is incident 04's 'queue depth > "
            "100 for 5 min'.",
            targets((f"sum by ({BY_QUEUE}) (celery_queue_messages{{{Q}}})", L_QUEUE)),
            "short",
            decimals=0,
            threshold_line=(100, "orange"),
        ),
        timeseries(
            "Ready messages by priority",
            "Redis: messages per priority sub-queue (priority step; 0 is the bare list, "
            "consumed first). High steps that never drain: low-priority work is starved by a "
            "steady stream of urgent tasks.",
            targets(
                (
                    f"sum by ({BY_QUEUE}, priority) (celery_queue_messages_by_priority{{{Q}}})",
                    f"{L_QUEUE} priority {{{{priority}}}}",
                )
            ),
            "short",
            decimals=0,
        ),
        timeseries(
            "Reserved (unacknowledged) messages",
            "Redis: messages handed to workers and not yet acknowledged: prefetched, ETA or "
            "countdown tasks held by workers, running acks_late tasks. Large while 'ready' is "
            "0: workers hoard tasks (lower the prefetch multiplier). Per queue is absent "
            "above 10,000 unacked; the total stays.",
            targets(
                (
                    f"sum by ({BY_QUEUE}) (celery_queue_reserved_messages{{{Q}}})",
                    L_QUEUE,
                ),
                (f"sum({sel('celery_broker_reserved_messages')})", "all queues"),
            ),
            "short",
            decimals=0,
            overrides=[override("all queues", dash=DASHED, color=fixed("text"))],
        ),
        timeseries(
            "Oldest message age",
            "Redis: how long the next message to be consumed has waited. A line rising one "
            "second per second: the head of the queue does not move.",
            targets(
                (
                    f"max by ({BY_QUEUE}) (celery_queue_oldest_message_age_seconds{{{Q}}})",
                    L_QUEUE,
                )
            ),
            "s",
        ),
    ]
    flow = [
        timeseries(
            "Consumers per queue",
            "Live workers consuming each queue (from their active_queues replies), and on "
            "RabbitMQ the consumers the broker counts. 0 live workers on a queue with "
            "messages: nothing will drain it.",
            targets(
                (
                    f"sum by ({BY_QUEUE}) (celery_queue_worker_consumers{{{Q}}})",
                    f"{L_QUEUE} live workers",
                ),
                (
                    f"sum by ({BY_QUEUE}) (celery_queue_broker_consumers{{{Q}}})",
                    f"{L_QUEUE} broker consumers",
                ),
            ),
            "none",
            decimals=0,
            overrides=[override("/broker consumers$/", dash=DASHED)],
        ),
        timeseries(
            "Completed per queue",
            "Tasks finished (succeeded or failed) per second per queue. 0 for minutes while "
            "the queue has messages is incident 04's 'processing rate 0'. Queue "
            "'(unknown)': producers send no task-sent events and the worker consumes "
            "several queues.",
            targets(
                (f"sum by ({BY_QUEUE}) (rate({finished(Q)}[{R}]))", L_QUEUE),
            ),
            "ops",
        ),
        timeseries(
            "Arrivals per queue",
            "Tasks published (task-sent, needs task_send_sent_event = True in producers) and "
            "delivered to workers (task-received, retries included) per second. Published "
            "above completed for long: the backlog grows.",
            targets(
                (
                    f"sum by ({BY_QUEUE}) (rate(celery_task_sent_total{{{Q}}}[{R}]))",
                    f"{L_QUEUE} published",
                ),
                (
                    f"sum by ({BY_QUEUE}) (rate(celery_task_received_total{{{Q}}}[{R}]))",
                    f"{L_QUEUE} received",
                ),
            ),
            "ops",
            overrides=[override("/received$/", dash=DASHED)],
        ),
        timeseries(
            "Time to drain at the current rate",
            "Ready messages divided by the completion rate (5 min): how long the backlog "
            "would last if nothing new arrived. Empty for a queue where nothing completes "
            "(see 'Completed per queue').",
            targets(
                (
                    f"sum by ({BY_QUEUE}) (celery_queue_messages{{{Q}}})\n/ ({completed} > 0)",
                    L_QUEUE,
                )
            ),
            "s",
        ),
    ]
    wait = [
        timeseries(
            "Queue wait p50",
            "Median time from when a task became due (sent, or its ETA) to when it started. "
            "Without task-sent events it starts at task-received and misses time in the "
            "broker.",
            targets((quantile(0.5, "queue_wait", Q, BY_QUEUE), L_QUEUE)),
            "s",
        ),
        timeseries(
            "Queue wait p95",
            "95th percentile of the wait before a task starts. High p95 with a low p50: "
            "bursts that the pool absorbs slowly, or long tasks blocking prefetched ones.",
            targets((quantile(0.95, "queue_wait", Q, BY_QUEUE), L_QUEUE)),
            "s",
        ),
    ]
    return dashboard(
        "celery-queues",
        "Celery / Queues",
        "Per queue: ready depth (with Redis priorities), reserved messages, oldest message, "
        "consumers, flow in and out, and how long tasks wait before they start.",
        [
            ("Now", now),
            ("Depth", depth),
            ("Consumers and flow", flow),
            ("Waiting time", wait),
        ],
        ["queue"],
    )


# --------------------------------------------------------------------------------------------
# 3. Workers


def workers() -> dict[str, Any]:
    now = [
        stat(
            "Workers online",
            "Selected workers heartbeating now. 0: no worker runs (incident 01).",
            f"sum(celery_worker_up{{{W}}}) or {ZERO}",
            "none",
            thresholds("red", (1, "green")),
            decimals=0,
        ),
        stat(
            "Workers down",
            "Selected workers that stopped heartbeating or shut down in the last hour. "
            "The table below shows which, and their last heartbeat.",
            f"count(celery_worker_up{{{W}}} == 0) or {ZERO}",
            "none",
            thresholds("green", (1, "red")),
            decimals=0,
        ),
        stat(
            "Pool saturation",
            "Busy pool processes over pool size, across live selected workers. Near 100% for "
            "long: tasks wait for a free process; add workers or concurrency.",
            f"sum(celery_worker_busy_processes{{{W}}})\n"
            f"/ (sum(celery_worker_pool_processes{{{W}}} and celery_worker_up{{{W}}} == 1) > 0)",
            "percentunit",
            thresholds("green", (0.8, "orange"), (0.95, "red")),
            no_value="No live worker",
        ),
        stat(
            "Restarts (1h)",
            "worker-online events in the last hour beyond each worker's first start: crash "
            "or restart loops (incident 02), rolling deploys, consumer reconnects after a "
            "broker outage.",
            f"sum(increase(celery_worker_online_total{{{W}}}[1h])) or {ZERO}",
            "none",
            thresholds("green", (1, "orange"), (10, "red")),
            decimals=0,
        ),
        stat(
            "Without task events",
            "Workers processing tasks without sending task events (no -E): their tasks are "
            "missing from every task metric.",
            f"count(celery_worker_task_events_enabled{{{W}}} == 0) or {ZERO}",
            "none",
            thresholds("green", (1, "orange")),
            decimals=0,
        ),
        stat(
            "Largest peak memory",
            "The highest peak RSS of a selected worker's main process (prefork children not "
            "included). Compare with the container's memory limit.",
            f"max(celery_worker_max_rss_bytes{{{W}}})",
            "bytes",
            no_value="Unknown",
        ),
    ]
    table_panel = table(
        "Workers",
        "One row per worker. Up: DOWN means no heartbeat for 5 intervals (killed, OOM, network) "
        "or a warm shutdown. Heartbeat age should stay near the interval (2 s). Task events "
        "OFF: started without -E. Empty cells: not known yet (stats are asked every 30 s).",
        {"hostname": "Worker", "broker": "Broker"},
        [
            ("Up", "none", f"max by ({BY_WORKER}) (celery_worker_up{{{W}}})"),
            ("Heartbeat age", "s", HEARTBEAT_AGE),
            (
                "Heartbeat interval",
                "s",
                f"max by ({BY_WORKER}) (celery_worker_heartbeat_interval_seconds{{{W}}})",
            ),
            ("Active tasks", "short", f"max by ({BY_WORKER}) (celery_worker_active_tasks{{{W}}})"),
            ("Busy", "short", f"max by ({BY_WORKER}) (celery_worker_busy_processes{{{W}}})"),
            ("Pool", "short", f"max by ({BY_WORKER}) (celery_worker_pool_processes{{{W}}})"),
            ("Saturation", "percentunit", SATURATION),
            ("Prefetch", "short", f"max by ({BY_WORKER}) (celery_worker_prefetch_limit{{{W}}})"),
            ("Peak RSS", "bytes", f"max by ({BY_WORKER}) (celery_worker_max_rss_bytes{{{W}}})"),
            (
                "Restarts (1h)",
                "short",
                f"sum by ({BY_WORKER}) (increase(celery_worker_online_total{{{W}}}[1h]))",
            ),
            (
                "Processed /s (5m)",
                "ops",
                f"sum by ({BY_WORKER}) (rate(celery_worker_processed_tasks_total{{{W}}}[5m]))",
            ),
            (
                "Task events",
                "none",
                f"max by ({BY_WORKER}) (celery_worker_task_events_enabled{{{W}}})",
            ),
        ],
        overrides=[
            override(
                "Up",
                mappings=UP_DOWN,
                cell=COLOR_CELL,
                thresholds=thresholds("red", (1, "green")),
            ),
            override(
                "Task events",
                mappings=value_map(v0=("OFF (no -E)", "orange"), v1=("on", "green")),
                cell=COLOR_TEXT,
            ),
            override(
                "Saturation",
                cell={"type": "gauge", "mode": "basic"},
                min=0,
                max=1,
                thresholds=thresholds("green", (0.8, "orange"), (0.95, "red")),
            ),
            override(
                "Restarts (1h)",
                decimals=0,
                cell=COLOR_TEXT,
                thresholds=thresholds("text", (1, "orange"), (10, "red")),
            ),
        ],
        h=10,
    )
    capacity_now = [
        bargauge(
            "Saturation now",
            "Busy pool processes over pool size, per worker. A few workers at 100% while "
            "others idle: uneven routing or prefetching (try -O fair / a lower prefetch).",
            SATURATION,
            L_WORKER,
            "percentunit",
            thresholds("green", (0.8, "orange"), (0.95, "red")),
            max_=1,
            no_value="No pool sizes yet",
        ),
        table(
            "Queues consumed",
            "Which worker consumes which queue (active_queues replies). A queue with messages "
            "that appears in no row for a live worker is never drained (incident 03).",
            {"hostname": "Worker", "queue_name": "Queue", "broker": "Broker"},
            [
                (
                    "Consumes",
                    "none",
                    f"max by ({BY_WORKER}, queue_name) (celery_worker_queue_info{{{W}}})",
                )
            ],
            w=12,
            hide_values=True,
            no_value="No active_queues reply yet",
        ),
    ]
    liveness = [
        timeseries(
            "Up",
            "1 while the worker heartbeats. Drops to 0 at warm shutdown, or 5 heartbeat "
            "intervals after the last heartbeat (killed without goodbye). A comb of 0/1: a "
            "flapping worker.",
            targets((f"max by ({BY_WORKER}) (celery_worker_up{{{W}}})", L_WORKER)),
            "none",
            max_=1,
            steps=True,
            decimals=0,
        ),
        timeseries(
            "Time since last heartbeat",
            "On the exporter's clock. Normal: below a few heartbeat intervals (2 s by "
            "default). A worker busy in a solo pool or blocking the event loop pauses its "
            "heartbeats; past 5 intervals it is declared down.",
            targets((HEARTBEAT_AGE, L_WORKER)),
            "s",
        ),
        timeseries(
            "Online events (starts)",
            "worker-online events per worker: each start, and each consumer reconnect after "
            "a broker outage. Regular bars: a restart loop (incident 02).",
            targets(
                (
                    f"sum by ({BY_WORKER}) (increase(celery_worker_online_total{{{W}}}[{R}])) > 0",
                    L_WORKER,
                )
            ),
            "none",
            bars=True,
            no_value="No starts",
        ),
        timeseries(
            "Offline events (warm shutdowns)",
            "worker-offline events per worker. A worker that went down with no bar here was "
            "killed (SIGKILL, OOM) or lost its network.",
            targets(
                (
                    f"sum by ({BY_WORKER}) (increase(celery_worker_offline_total{{{W}}}[{R}])) > 0",
                    L_WORKER,
                )
            ),
            "none",
            bars=True,
            no_value="No shutdowns",
        ),
    ]
    capacity = [
        timeseries(
            "Busy vs pool processes",
            "Pool processes running a task (solid) and pool size (dashed) per worker. Busy "
            "glued to the pool size: the worker is saturated.",
            targets(
                (
                    f"max by ({BY_WORKER}) (celery_worker_busy_processes{{{W}}})",
                    f"{L_WORKER} busy",
                ),
                (
                    f"max by ({BY_WORKER}) (celery_worker_pool_processes{{{W}}})",
                    f"{L_WORKER} pool",
                ),
            ),
            "none",
            overrides=[override("/ pool$/", dash=DASHED)],
        ),
        timeseries(
            "Active tasks and prefetch",
            "Tasks running on each worker (heartbeat 'active', not capped at the pool size) "
            "and how many messages it may hold unacknowledged (prefetch, dashed). Active "
            "above the pool size: tasks reserved but waiting for a process.",
            targets(
                (
                    f"max by ({BY_WORKER}) (celery_worker_active_tasks{{{W}}})",
                    f"{L_WORKER} active",
                ),
                (
                    f"max by ({BY_WORKER}) (celery_worker_prefetch_limit{{{W}}})",
                    f"{L_WORKER} prefetch",
                ),
            ),
            "none",
            overrides=[override("/ prefetch$/", dash=DASHED)],
        ),
        timeseries(
            "Peak memory (max RSS)",
            "Peak resident memory of each worker's main process; it never goes down while "
            "the process lives, so a sawtooth means restarts. Steady growth: a leak "
            "(consider --max-tasks-per-child / --max-memory-per-child, incident 05).",
            targets((f"max by ({BY_WORKER}) (celery_worker_max_rss_bytes{{{W}}})", L_WORKER)),
            "bytes",
        ),
        timeseries(
            "Processed vs task events",
            "Tasks accepted per second from heartbeats (processed, solid) and tasks finished "
            "per second from task events (dashed). Processed without task events: the "
            "worker runs without -E.",
            targets(
                (
                    f"sum by ({BY_WORKER}) (rate(celery_worker_processed_tasks_total{{{W}}}[{R}]))",
                    f"{L_WORKER} processed",
                ),
                (
                    f"sum by ({BY_WORKER}) (rate({finished(W)}[{R}]))",
                    f"{L_WORKER} finished (events)",
                ),
            ),
            "ops",
            overrides=[override("/events\\)$/", dash=DASHED)],
        ),
    ]
    return dashboard(
        "celery-workers",
        "Celery / Workers",
        "Per worker: liveness and heartbeats, restarts, pool saturation, prefetch, memory, "
        "throughput, and the queues each one consumes.",
        [
            ("Now", [*now, table_panel]),
            ("Capacity and queues", capacity_now),
            ("Liveness", liveness),
            ("Capacity over time", capacity),
        ],
        ["worker"],
    )


# --------------------------------------------------------------------------------------------
# 4. Tasks


def tasks() -> dict[str, Any]:
    events = [
        (f"sum(rate(celery_task_sent_total{{{TQ}}}[{R}]))", "sent"),
        (f"sum(rate(celery_task_received_total{{{TQW}}}[{R}]))", "received"),
        (f"sum(rate(celery_task_started_total{{{TQW}}}[{R}]))", "started"),
        (f"sum(rate(celery_task_succeeded_total{{{TQW}}}[{R}]))", "succeeded"),
        (f"sum(rate(celery_task_failed_total{{{TQW}}}[{R}]))", "failed"),
        (f"sum(rate(celery_task_retried_total{{{TQW}}}[{R}]))", "retried"),
        (f"sum(rate(celery_task_rejected_total{{{TQW}}}[{R}]))", "rejected"),
        (f"sum(rate(celery_task_revoked_total{{{TQW}}}[{R}]))", "revoked"),
    ]
    throughput = [
        timeseries(
            "Task events by type",
            "Every task event per second for the selected tasks. Sent needs "
            "task_send_sent_event = True in producers and has no worker label (the worker "
            "filter does not apply to it). Received counts deliveries, retries included.",
            targets(*events),
            "ops",
            overrides=[
                override("succeeded", color=fixed("green")),
                override("failed", color=fixed("red")),
                override("retried", color=fixed("orange")),
                override("sent", dash=DASHED),
            ],
        ),
        timeseries(
            "Succeeded by task",
            "Successful completions per second per task name.",
            targets(
                (
                    f"sum by ({BY_TASK}) (rate(celery_task_succeeded_total{{{TQW}}}[{R}]))",
                    L_TASK,
                )
            ),
            "ops",
        ),
        timeseries(
            "Failed by task",
            "Failures per second per task name. A task that only fails shows here and not "
            "in 'Succeeded by task'.",
            targets(
                (
                    f"sum by ({BY_TASK}) (rate(celery_task_failed_total{{{TQW}}}[{R}]))",
                    L_TASK,
                )
            ),
            "ops",
        ),
        timeseries(
            "Failure ratio by task",
            "Failed / (succeeded + failed) per task name. 100%: the task always fails, "
            "whatever the volume.",
            targets((failure_ratio(BY_TASK, TQW), L_TASK)),
            "percentunit",
            max_=1,
        ),
        timeseries(
            "Failures by exception",
            "Failures per second by task and exception class. A new exception appearing "
            "right after a deploy points at the deploy; Reject also counts as rejected.",
            targets(
                (
                    f"sum by ({BY_TASK}, exception) (rate(celery_task_failed_total{{{TQW}}}[{R}]))",
                    "{{name}}: {{exception}} {{broker}}",
                )
            ),
            "ops",
        ),
        table(
            "Failures in the time range",
            "Failures over the whole selected time range, by task and exception, largest first.",
            {"name": "Task", "exception": "Exception", "broker": "Broker"},
            [
                (
                    "Failures",
                    "short",
                    f"sum by ({BY_TASK}, exception) "
                    f"(increase(celery_task_failed_total{{{TQW}}}[$__range])) > 0",
                )
            ],
            overrides=[override("Failures", decimals=0)],
            w=12,
            no_value="No failures",
            sort_by="Failures",
        ),
        timeseries(
            "Retried by task",
            "Retries per second per task name. Retries climbing with failures flat: a "
            "dependency is flaky and retries still absorb it.",
            targets(
                (
                    f"sum by ({BY_TASK}) (rate(celery_task_retried_total{{{TQW}}}[{R}]))",
                    L_TASK,
                )
            ),
            "ops",
        ),
        timeseries(
            "Rejected and revoked by task",
            "Rejected (e.g. Reject raised by the task) and revoked (cancelled, expired) "
            "tasks per second. Revoked tasks that never reached a worker "
            "show name '(unknown)' without task-sent events.",
            targets(
                (
                    f"sum by ({BY_TASK}) (rate(celery_task_rejected_total{{{TQW}}}[{R}]))",
                    f"{L_TASK} rejected",
                ),
                (
                    f"sum by ({BY_TASK}) (rate(celery_task_revoked_total{{{TQW}}}[{R}]))",
                    f"{L_TASK} revoked",
                ),
            ),
            "ops",
            overrides=[override("/ revoked$/", dash=DASHED)],
        ),
    ]
    runtime = [
        timeseries(
            "Runtime percentiles by state",
            "p50 / p95 / p99 execution time of the selected tasks, for successes and "
            "failures. Failures much faster than successes: tasks fail at once (bad input, "
            "connection refused); much slower: time limits or timeouts.",
            targets(
                *(
                    (quantile(q, "runtime", TQ, "state"), f"p{round(q * 100)} {{{{state}}}}")
                    for q in (0.5, 0.95, 0.99)
                )
            ),
            "s",
        ),
        timeseries(
            "Runtime p95 by task",
            "95th percentile execution time per task name and state. Compare with each "
            "task's soft/hard time limit.",
            targets(
                (quantile(0.95, "runtime", TQ, f"{BY_TASK}, state"), f"{L_TASK} ({{{{state}}}})")
            ),
            "s",
        ),
        timeseries(
            "Average runtime by task",
            "Mean execution time per task name (sum / count of the runtime histogram).",
            targets(
                (
                    f"sum by ({BY_TASK}) (rate(celery_task_runtime_seconds_sum{{{TQ}}}[{R}]))\n"
                    f"/ (sum by ({BY_TASK}) (rate(celery_task_runtime_seconds_count{{{TQ}}}[{R}]))"
                    f" > 0)",
                    L_TASK,
                )
            ),
            "s",
        ),
        timeseries(
            "Queue wait p95 by task",
            "95th percentile of how long tasks waited between being due and starting. High "
            "for one task only: its queue lacks consumers; for all: workers are saturated.",
            targets((quantile(0.95, "queue_wait", TQ, BY_TASK), L_TASK)),
            "s",
        ),
    ]
    running = [
        timeseries(
            "Running tasks",
            "Tasks started and not finished, on live workers, per task name (recounted "
            "every 5 s). A plateau at the pool size with throughput at 0: tasks hang.",
            targets((f"sum by ({BY_TASK}) (celery_task_running{{{T}}})", L_TASK)),
            "none",
            decimals=0,
            no_value="None running",
        ),
        timeseries(
            "Longest running task",
            "How long the oldest running task of each name has been running (worker clock). "
            "Far above the name's p99 runtime: a stuck task (deadlock, a call without "
            "timeout).",
            targets(
                (
                    f"time() - min by ({BY_TASK}) "
                    f"(celery_task_oldest_running_start_timestamp_seconds{{{T}}})",
                    L_TASK,
                )
            ),
            "s",
            no_value="None running",
        ),
    ]
    since_last = f"time() - max by ({BY_TASK}) (celery_task_last_arrival_timestamp_seconds{{{T}}})"
    learned = f"max by ({BY_TASK}) (celery_task_arrival_interval_seconds{{{T}}})"
    schedule = f"min by ({BY_TASK}) (celery_beat_schedule_interval_seconds{{{T}}})"
    periodic = [
        table(
            "Arrivals and periodic tasks",
            "Per task name: time since the last arrival, the learned interval (median gap of "
            "the last 16 arrivals), their ratio (above 3: a periodic task stopped arriving, "
            "beat died, incident 02), the beat schedule (with the exporter's --app) and "
            "learned/schedule (0.5: it runs twice as often, two beats), and distinct "
            "senders (2 for a periodic task: two beats). Tasks sent on demand are listed "
            "too; their interval is just their recent rhythm.",
            {"name": "Task", "broker": "Broker"},
            [
                ("Since last arrival", "s", since_last),
                ("Learned interval", "s", learned),
                ("Overdue (x interval)", "none", f"({since_last})\n/ ({learned} > 0)"),
                ("Beat schedule", "s", schedule),
                ("Learned / schedule", "none", f"{learned}\n/ ({schedule} > 0)"),
                ("Senders", "none", f"max by ({BY_TASK}) (celery_task_senders{{{T}}})"),
            ],
            overrides=[
                override(
                    "Overdue (x interval)",
                    decimals=1,
                    cell=COLOR_CELL,
                    thresholds=thresholds("green", (2, "orange"), (3, "red")),
                ),
                override(
                    "Learned / schedule",
                    decimals=2,
                    cell=COLOR_CELL,
                    thresholds=thresholds("red", (0.75, "green"), (1.5, "orange")),
                ),
                override(
                    "Senders",
                    decimals=0,
                    cell=COLOR_TEXT,
                    thresholds=thresholds("text", (2, "orange")),
                ),
            ],
            h=9,
            sort_by="Overdue (x interval)",
        ),
        timeseries(
            "Time since last arrival / learned interval",
            "1 right after an arrival, rising until the next. A periodic task whose line "
            "crosses 3 has missed its runs: beat stopped (or crashes in a loop, incident "
            "02).",
            targets((f"({since_last})\n/ ({learned} > 0)", L_TASK)),
            "none",
            threshold_line=(3, "red"),
        ),
        timeseries(
            "Learned interval vs beat schedule",
            "The rhythm tasks actually arrive at (solid) and the beat schedule's interval "
            "(dashed, with the exporter's --app). Learned at half the schedule: two beats "
            "run; well above it: beat misses runs.",
            targets(
                (learned, f"{L_TASK} learned"),
                (schedule, f"{L_TASK} schedule"),
            ),
            "s",
            overrides=[override("/ schedule$/", dash=DASHED)],
        ),
        timeseries(
            "Senders",
            "Distinct producer processes among the last 16 arrivals (task-sent only). For a "
            "periodic task, 2 or more: more than one beat is running, each run happens twice "
            "(incident 05).",
            targets((f"max by ({BY_TASK}) (celery_task_senders{{{T}}})", L_TASK)),
            "none",
            decimals=0,
            threshold_line=(2, "orange"),
            w=24,
        ),
    ]
    return dashboard(
        "celery-tasks",
        "Celery / Tasks",
        "Per task name: event rates, failures by exception, runtime and queue-wait "
        "percentiles, running and stuck tasks, and periodic (beat) task rhythm.",
        [
            ("Throughput and failures", throughput),
            ("Runtime and waiting", runtime),
            ("Running now", running),
            ("Periodic tasks", periodic),
        ],
        ["task", "queue", "worker"],
    )


DASHBOARDS = {
    "celery-overview.json": overview,
    "celery-queues.json": queues,
    "celery-workers.json": workers,
    "celery-tasks.json": tasks,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, build in DASHBOARDS.items():
        (out_dir / filename).write_text(render(build))
        print(f"wrote {out_dir / filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
