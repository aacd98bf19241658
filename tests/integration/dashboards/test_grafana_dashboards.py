"""The Grafana dashboards in grafana/: importable, parseable, and about metrics that exist.

- structure Grafana needs (schemaVersion, unique uids, the ``datasource`` variable used by every
  panel and target, no deprecated "graph" panel, a title, description and unit on each panel);
- every PromQL expression parses, checked by a real Prometheus (one for the module);
- every metric named is documented in docs/metrics.md or recorded in alerts/*.yml, and every
  label used exists on that metric: a typo fails here instead of drawing an empty panel;
- every celery_* selector is filtered on the ``$broker`` variable, and per-queue, per-worker
  and per-task series keep the broker apart (an exporter may watch several brokers);
- the JSON files are exactly what the mixin (mixin/dashboards/) renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.mixin import mixin_render
from tests.support.prometheus import PrometheusServer
from tests.support.promql import (
    BROKER_LABEL,
    NOT_PER_BROKER,
    REPO_ROOT,
    TARGET_LABELS,
    Metric,
    documented_metrics,
    lookup,
    problems,
    recording_rules,
    references,
    selectors,
)
from tests.support.servers import ServerBinaryMissing

GRAFANA = REPO_ROOT / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
EXPECTED_UIDS = {
    "celery-overview.json": "celery-overview",
    "celery-queues.json": "celery-queues",
    "celery-workers.json": "celery-workers",
    "celery-tasks.json": "celery-tasks",
}
DASHBOARD_FILES = sorted(EXPECTED_UIDS)
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge"}
UNITS = {"s", "bytes", "ops", "reqps", "percentunit", "percent", "short", "none"}
# The query variables of each dashboard: those its panels can filter on; broker everywhere.
EXPECTED_VARIABLES = {
    "celery-overview.json": {"broker", "queue", "worker", "task"},
    "celery-queues.json": {"broker", "queue"},
    "celery-workers.json": {"broker", "worker"},
    "celery-tasks.json": {"broker", "queue", "worker", "task"},
}
# broker from a metric every broker exports; the others chained to it (only the values of
# the chosen brokers).
VARIABLE_QUERIES = {
    "broker": "label_values(celery_exporter_broker_up, broker)",
    "queue": 'label_values(celery_queue_messages{broker=~"$broker"}, queue_name)',
    "worker": 'label_values(celery_worker_up{broker=~"$broker"}, hostname)',
    "task": 'label_values(celery_task_received_total{broker=~"$broker"}, name)',
}
# The matcher every celery_* selector carries. "All" is ".*", which also matches series
# without a broker label (a single unnamed broker), so one matcher serves both cases.
BROKER_MATCHER = (BROKER_LABEL, "=~", "$broker")
# Labels that name a queue, a worker or a task: grouping by one of them keeps the broker too,
# so that two brokers' queues (workers, tasks) of the same name are not summed into one.
PER_BROKER_KEYS = {"queue_name", "hostname", "name"}
# Grafana's built-in variables, replaced by a value of the right kind.
BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
# $name, ${name}, ${name:format}, [[name]] (not $1: a regex back-reference in a string)
_VARIABLE = re.compile(r"\$\{([a-zA-Z_]\w*)(?::\w+)?\}|\$([a-zA-Z_]\w*)|\[\[([a-zA-Z_]\w*)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_]\w*)\s*\)\s*$")
_LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")


# --------------------------------------------------------------------------------------------
# Reading dashboards


def load(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARD_DIR / filename).read_text())
    return loaded


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p.get("type") != "row"]


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, target, expr) for every query of every panel."""
    for panel in data_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('title')!r} target {target.get('refId')}"
            yield where, target, str(target.get("expr", ""))


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "")) if isinstance(query, dict) else str(query or "")


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v.get("type") == "query"]


def substitute(expr: str) -> str:
    """Grafana variables replaced as Grafana would: builtins by durations, others by ``.*``."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g is not None)
        return BUILTINS.get(name, ".*")

    return _VARIABLE.sub(value, expr)


def variables_in(text: str) -> set[str]:
    return {next(g for g in m.groups() if g is not None) for m in _VARIABLE.finditer(text)}


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) for every value in a JSON document."""
    yield path, node
    if isinstance(node, dict):
        for key, child in node.items():
            yield from walk(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from walk(child, f"{path}[{i}]")


@pytest.fixture(scope="module")
def metrics() -> dict[str, Metric]:
    return documented_metrics()


@pytest.fixture(scope="module")
def rules() -> set[str]:
    return recording_rules()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    try:
        server = PrometheusServer(
            tmp_path_factory.mktemp("prometheus"), "global:\n  scrape_interval: 15s\n"
        )
    except ServerBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Structure


def test_the_four_dashboards_exist_with_their_uids() -> None:
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == DASHBOARD_FILES
    uids = {name: load(name)["uid"] for name in DASHBOARD_FILES}
    assert uids == EXPECTED_UIDS
    titles = [load(name)["title"] for name in DASHBOARD_FILES]
    assert len(set(titles)) == len(titles), titles


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_dashboard_top_level(filename: str) -> None:
    dashboard = load(filename)
    assert dashboard["schemaVersion"] >= 39
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"].startswith("Celery")
    assert dashboard["description"]
    assert dashboard["tags"] == ["celery"]
    # Importable anywhere: no database id, no export-time inputs to fill in.
    assert dashboard.get("id") is None
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert "DS_PROMETHEUS" not in json.dumps(dashboard)


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_template_variables(filename: str) -> None:
    variables = {v["name"]: v for v in load(filename)["templating"]["list"]}
    assert len(variables) == len(load(filename)["templating"]["list"]), "duplicate names"
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    assert {v["name"] for v in query_variables(load(filename))} == EXPECTED_VARIABLES[filename]
    for name in EXPECTED_VARIABLES[filename]:
        variable, query = variables[name], VARIABLE_QUERIES[name]
        assert variable["type"] == "query", name
        assert variable["datasource"] == DS_REF, name
        assert variable_query(variable) == query, name
        assert "definition" not in variable, name  # not in Grafana's schema
        assert variable["multi"] is True and variable["includeAll"] is True, name
        # "All" as one regex, not an alternation of every value (a huge query on big fleets).
        assert variable["allValue"] == ".*", name
        assert variable["refresh"] in (1, 2), name
    # The broker variable comes first (right after the data source): the others depend on it.
    names = [v["name"] for v in load(filename)["templating"]["list"]]
    assert names[:2] == ["datasource", "broker"], names


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_every_data_source_is_the_variable(filename: str) -> None:
    dashboard = load(filename)
    for panel in data_panels(dashboard):
        assert panel.get("datasource") == DS_REF, panel.get("title")
        assert panel.get("targets"), f"panel {panel.get('title')!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == DS_REF, (panel["title"], target)
            assert target.get("expr", "").strip(), (panel["title"], target)
    # And nowhere else a fixed data source (only Grafana's built-in annotation is allowed).
    for path, node in walk(dashboard):
        if path.endswith(".datasource") and isinstance(node, dict):
            builtin = node == {"type": "grafana", "uid": "-- Grafana --"}
            assert node == DS_REF or (builtin and path.startswith(".annotations")), path


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_panels(filename: str) -> None:
    dashboard = load(filename)
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"duplicate panel ids: {ids}"
    for panel in panels:
        title = panel.get("title")
        assert title, panel
        assert panel["type"] in PANEL_TYPES, f"{title!r}: type {panel['type']!r}"
        if panel["type"] == "row":
            continue
        assert len(panel.get("description", "")) >= 30, f"{title!r}: no useful description"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit") in UNITS, f"{title!r}: unit {defaults.get('unit')!r}"
        for override in panel["fieldConfig"].get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, (title, prop)
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"{title!r}: duplicate refIds"


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_layout_has_no_overlaps(filename: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load(filename)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_variables_are_defined_used_and_matched_as_regexes(filename: str) -> None:
    dashboard = load(filename)
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used: set[str] = set()
    for where, _target, expr in panel_targets(dashboard):
        names = variables_in(expr)
        unknown = names - defined - set(BUILTINS)
        assert not unknown, f"{where}: undefined variables {unknown} in {expr!r}"
        used |= names
        # Multi-value variables expand to a regex (a|b): only =~ and !~ can take it.
        bad = re.findall(r'[a-zA-Z_]\w*\s*!?=\s*"[^"]*\$', expr)
        assert not bad, f"{where}: use =~ with a variable: {bad}"
    for name in EXPECTED_VARIABLES[filename]:
        assert name in used, f"variable ${name} is defined but no panel uses it"


def broker_problems(expr: str) -> list[str]:
    """What keeps ``expr`` from following one broker (empty when nothing does): a celery_*
    selector without ``broker=~"$broker"``, a grouping by queue, worker or task name
    without ``broker``."""
    found: list[str] = []
    for selector in selectors(expr):
        selected = (selector.selected or "").removeprefix("=~")
        if not selected.startswith("celery_") or selected.startswith(NOT_PER_BROKER):
            continue
        if BROKER_MATCHER not in selector.matchers:
            found.append(f'{selector.selected} has no broker=~"$broker" matcher')
    for match in re.finditer(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels = {x.strip() for x in match.group(2).split(",")}
        if labels & PER_BROKER_KEYS and BROKER_LABEL not in labels:
            found.append(f"{match.group(0)} keeps no broker")
    return found


def test_broker_problems_are_found() -> None:
    """The check below can fail: a selector or a grouping that forgets the broker."""
    assert (
        broker_problems('sum by (broker, queue_name) (celery_queue_messages{broker=~"$broker"})')
        == []
    )
    assert broker_problems("time() - process_start_time_seconds") == []
    assert broker_problems("celery_exporter_build_info") == []
    assert broker_problems('sum(0 * celery_exporter_broker_up{broker=~"$broker"})') == []
    assert broker_problems('celery_worker_up{hostname=~"$worker"}') == [
        'celery_worker_up has no broker=~"$broker" matcher'
    ]
    assert broker_problems("min(celery_exporter_broker_up)") == [
        'celery_exporter_broker_up has no broker=~"$broker" matcher'
    ]
    # A fixed broker is not the variable; a regex on __name__ is checked like a name.
    assert broker_problems('celery_worker_up{broker="a"}') != []
    assert broker_problems('rate({__name__=~"celery_task_(succeeded|failed)_total"}[5m])') != []
    # One selector of two without it is enough to fail.
    (found,) = broker_problems(
        'celery_worker_up{broker=~"$broker"} and celery_worker_up{hostname=~"$worker"}'
    )
    assert "celery_worker_up" in found
    (found,) = broker_problems('sum by (queue_name) (celery_queue_messages{broker=~"$broker"})')
    assert "keeps no broker" in found


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_every_celery_selector_follows_the_broker_variable(filename: str) -> None:
    dashboard = load(filename)
    failures: list[str] = []
    checked = 0
    for where, _target, expr in panel_targets(dashboard):
        failures += [f"{where}: {p}" for p in broker_problems(expr)]
        checked += sum(1 for s in selectors(expr) if "celery_" in (s.selected or ""))
    for variable in query_variables(dashboard):
        match = _LABEL_VALUES.match(variable_query(variable))
        assert match and match.group(1)
        if variable["name"] == "broker":
            continue  # its own values
        failures += [f"${variable['name']}: {p}" for p in broker_problems(match.group(1))]
        checked += 1
    assert checked > 20
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_tables_of_queues_workers_and_tasks_have_a_broker_column(filename: str) -> None:
    for panel in data_panels(load(filename)):
        if panel["type"] != "table":
            continue
        for transformation in panel.get("transformations", []):
            renamed = transformation.get("options", {}).get("renameByName", {})
            if PER_BROKER_KEYS & set(renamed):
                assert renamed.get(BROKER_LABEL) == "Broker", panel["title"]


# --------------------------------------------------------------------------------------------
# PromQL: parses, and names only what exists


def test_a_syntax_error_is_reported_as_bad_data(prometheus: PrometheusServer) -> None:
    """The check below can fail: Prometheus rejects broken PromQL with 400 bad_data."""
    status, body = prometheus.query_response("sum(rate(celery_worker_up[5m])")
    assert (status, body["errorType"]) == (400, "bad_data"), body
    status, body = prometheus.query_response("rate(celery_worker_up)")  # wrong argument type
    assert (status, body["errorType"]) == (400, "bad_data"), body


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_every_expression_parses(filename: str, prometheus: PrometheusServer) -> None:
    dashboard = load(filename)
    failures: list[str] = []
    checked = 0
    for where, _target, expr in panel_targets(dashboard):
        status, body = prometheus.query_response(substitute(expr))
        checked += 1
        if status != 200 or body.get("status") != "success":
            failures.append(f"{where}: {body.get('error')}\n    {substitute(expr)}")
            continue
        # Prometheus's own formatting of the expression must name the same things: the
        # lexical extraction used below does not depend on how the expression is written.
        status, formatted = prometheus.api_response(
            "/api/v1/format_query", {"query": substitute(expr)}
        )
        assert status == 200, formatted
        ours, theirs = references(substitute(expr)), references(formatted["data"])
        assert (ours.metrics, ours.name_patterns, ours.grouping_labels) == (
            theirs.metrics,
            theirs.name_patterns,
            theirs.grouping_labels,
        ), f"{where}: extraction differs on {formatted['data']!r}"
    for variable in query_variables(dashboard):
        match = _LABEL_VALUES.match(variable_query(variable))
        assert match and match.group(1), f"${variable['name']}: not label_values(metric, label)"
        status, body = prometheus.query_response(substitute(match.group(1)))
        checked += 1
        if status != 200:
            failures.append(f"variable ${variable['name']}: {body.get('error')}")
    assert checked > 10
    assert not failures, "PromQL that Prometheus rejects:\n" + "\n".join(failures)


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_every_metric_and_label_exists(
    filename: str, metrics: dict[str, Metric], rules: set[str]
) -> None:
    dashboard = load(filename)
    failures: list[str] = []
    for where, target, expr in panel_targets(dashboard):
        plain = substitute(expr)
        ref = references(plain)
        assert ref.metrics or ref.name_patterns, f"{where}: no metric in {expr!r}"
        failures += [f"{where}: {p}" for p in problems(plain, metrics, rules)]
        # Legend labels must survive the query: the by-labels when it aggregates, else
        # labels of its metrics.
        legend = set(_LEGEND_LABEL.findall(target.get("legendFormat", "")))
        if ref.grouping_labels:
            allowed = ref.grouping_labels
        else:
            known = [lookup(name, metrics) for name in ref.metrics]
            allowed = set().union(*(m.labels for m in known if m is not None)) | TARGET_LABELS
        failures += [f"{where}: legend label {x!r} is not in the result" for x in legend - allowed]
    for variable in query_variables(dashboard):
        match = _LABEL_VALUES.match(variable_query(variable))
        assert match and match.group(1)
        selector, label = match.groups()
        failures += [f"${variable['name']}: {p}" for p in problems(selector, metrics, rules)]
        for name in references(selector).metrics:
            metric = lookup(name, metrics)
            if metric is not None and label not in metric.labels:
                failures.append(f"${variable['name']}: {name} has no label {label!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("filename", DASHBOARD_FILES)
def test_table_columns_are_labels_the_queries_keep(filename: str) -> None:
    for panel in data_panels(load(filename)):
        if panel["type"] != "table":
            continue
        kept: set[str] = set()
        for target in panel["targets"]:
            kept |= references(substitute(target["expr"])).grouping_labels
        for transformation in panel.get("transformations", []):
            renamed = transformation.get("options", {}).get("renameByName", {})
            labels = {k for k in renamed if not k.startswith("Value")}
            assert labels <= kept, f"{panel['title']!r}: columns {labels - kept} never filled"


# --------------------------------------------------------------------------------------------
# The extraction itself, on expressions chosen to trip a naive one


@pytest.mark.parametrize(
    ("expr", "names", "matchers", "grouping"),
    [
        (
            'histogram_quantile(0.95, sum by (le, queue_name) (rate(x_bucket{queue_name=~"a|b"}'
            "[5m])))",
            {"x_bucket"},
            {("x_bucket", "queue_name")},
            {"le", "queue_name"},
        ),
        # Strings holding braces, quotes, "#" and metric-like words; by after the aggregation.
        (
            'sum(rate(a_total{msg="b{c} # d_total", e!~"f\\"g"}[5m:1m] offset 1h)) by (h)',
            {"a_total"},
            {("a_total", "msg"), ("a_total", "e")},
            {"h"},
        ),
        # Vector matching lists, bool, numbers that look like identifiers (1e3, 0x1F, Inf).
        (
            "a / on(i, j) group_left(k) b > bool 1e3 * 0x1F + Inf - NaN",
            {"a", "b"},
            set(),
            {"i", "j", "k"},
        ),
        # Keywords and functions in any case and spacing; a comment; recording rule names.
        (
            "SUM WITHOUT (x) (Rate (c:d:rate5m [1h])) # e_total\n or vector(0)",
            {"c:d:rate5m"},
            set(),
            {"x"},
        ),
        # __name__ matchers: exact names, and regexes kept as patterns.
        (
            '{__name__="up", job="p"} + sum by (q) (rate({__name__=~"r_(s|t)_total", q!=""}[1m]))',
            {"up"},
            {("up", "job"), ("=~r_(s|t)_total", "q")},
            {"q"},
        ),
        # label_replace's label names are strings; @ modifiers; unary minus; time().
        (
            'label_replace(-m @ end(), "dst", "$1", "src", "(.*)") + time() - n @ 1609746000',
            {"m", "n"},
            set(),
            set(),
        ),
        # Variables already substituted by Grafana's regex.
        (
            'count(celery_worker_up{hostname=~".*"} == 0) or sum(0 * celery_exporter_broker_up)',
            {"celery_worker_up", "celery_exporter_broker_up"},
            {("celery_worker_up", "hostname")},
            set(),
        ),
    ],
)
def test_reference_extraction(
    expr: str, names: set[str], matchers: set[tuple[str, str]], grouping: set[str]
) -> None:
    ref = references(expr)
    assert ref.metrics == names
    assert ref.matcher_labels == matchers
    assert ref.grouping_labels == grouping


def test_problems_catch_typos(metrics: dict[str, Metric]) -> None:
    """The name checks can fail: each typo is reported, a correct expression is not."""
    assert (
        problems('sum by (queue_name) (celery_queue_messages{queue_name=~".*"})', metrics, set())
        == []
    )
    assert problems("celery_worker_upp", metrics, set()) == ["unknown metric 'celery_worker_upp'"]
    assert problems("celery:made_up:rate5m", metrics, {"celery:made_up:rate5m"}) == []
    (found,) = problems('celery_queue_messages{queue=~".*"}', metrics, set())
    assert "has no label 'queue'" in found
    (found,) = problems("sum by (queue) (celery_queue_messages)", metrics, set())
    assert "grouping label 'queue'" in found
    (found,) = problems('rate({__name__=~"celery_task_finished_total"}[5m])', metrics, set())
    assert "matches no documented metric" in found
    # Histogram series and the documented prefix family.
    assert (
        problems("celery_task_runtime_seconds_count + process_cpu_seconds_total", metrics, set())
        == []
    )
    # The bare histogram name is its native form (no `le`).
    assert problems("celery_task_runtime_seconds", metrics, set()) == []
    (found,) = problems('celery_task_runtime_seconds{le="1.0"}', metrics, set())
    assert "has no label 'le'" in found


def test_documented_metrics_are_read_from_the_docs(metrics: dict[str, Metric]) -> None:
    assert metrics["celery_worker_up"].labels == {"broker", "hostname"}
    assert metrics["celery_task_failed_total"].labels >= {"name", "queue_name", "exception"}
    assert metrics["celery_task_queue_wait_seconds_bucket"].labels == {
        "broker",
        "le",
        "name",
        "queue_name",
    }
    assert metrics["celery_workers_online"].labels == {"broker"}
    assert "broker" not in metrics["celery_exporter_build_info"].labels
    assert len(metrics) > 40
    # The broker label is documented once, above the tables, with the same exceptions.
    docs = " ".join((REPO_ROOT / "docs" / "metrics.md").read_text().split())
    assert 'every series below also carries `broker="NAME"`, except' in docs
    assert "except `celery_exporter_build_info` and the `process_*`" in docs


# --------------------------------------------------------------------------------------------
# Generated files and provisioning


def test_json_files_are_what_the_mixin_renders() -> None:
    rendered = {
        path.removeprefix("grafana/dashboards/"): text
        for path, text in mixin_render.render().items()
        if path.startswith("grafana/dashboards/")
    }
    assert sorted(rendered) == DASHBOARD_FILES
    for filename, text in rendered.items():
        assert (DASHBOARD_DIR / filename).read_text() == text, (
            f"grafana/dashboards/{filename} differs from the mixin's rendering: edit "
            "mixin/dashboards/*.libsonnet and run `make mixin`"
        )


def _yaml_value(text: str, key: str) -> list[str]:
    return [v.strip().strip("'\"") for v in re.findall(rf"^\s*-?\s*{key}:\s*(.+?)\s*$", text, re.M)]


def test_provisioning_files() -> None:
    providers = (GRAFANA / "provisioning" / "dashboards" / "celery.yaml").read_text()
    assert _yaml_value(providers, "apiVersion") == ["1"]
    assert _yaml_value(providers, "type") == ["file"]
    (path,) = _yaml_value(providers, "path")
    assert path.startswith("/")
    datasources = (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    assert _yaml_value(datasources, "apiVersion") == ["1"]
    assert _yaml_value(datasources, "type") == ["prometheus"]
    assert "\t" not in providers + datasources
    readme = (GRAFANA / "README.md").read_text()
    assert path in readme, "the README should say where to mount the dashboards"
    for filename in DASHBOARD_FILES:
        assert filename in readme
