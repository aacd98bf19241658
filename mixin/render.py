#!/usr/bin/env python3
"""Renders the mixin into the files the project ships: alerts/*.yml and grafana/dashboards/*.json.

``make mixin`` runs it; a test fails when the committed files differ from its output. Needs the
``jsonnet`` package (a dev dependency); users of the rendered files need nothing.

``--config`` renders with a jsonnet object merged into ``_config`` (the tests' non-default
rendering), ``--out DIR`` writes under DIR instead of the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _jsonnet
import yaml

MIXIN = Path(__file__).resolve().parent
ROOT = MIXIN.parent

# rendered file -> (mixin fields whose groups it holds, header comment)
RULE_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    "alerts/celery.rules.yml": (
        ("prometheusRules", "prometheusAlerts"),
        "Prometheus rules for celery-metrics-exporter: recording rules, then alerts.\n"
        "Each alert names what is wrong and where, and links to its entry in docs/runbook.md.\n"
        "Thresholds, `for:`, selectors and the runbook base are _config of the mixin;\n"
        "docs/runbook.md says how to tune each one.",
    ),
    "alerts/deprecated-names.rules.yml": (
        ("deprecatedNameRules",),
        "Old metric names this exporter renamed, kept alive for one deprecation period (until\n"
        "0.3.0) as recording rules: load this file next to celery.rules.yml while your own\n"
        "dashboards, alerts or queries still use an old name, then move them to the new name.\n"
        "The exporter itself only serves the new names (they pass `promtool check metrics`).",
    ),
    "alerts/migration-danihodovic.rules.yml": (
        ("migrationDanihodovicRules",),
        "Optional: re-create the metric names of danihodovic/celery-exporter from ours, so that\n"
        "its dashboards and alerts keep working after switching. Load this file next to\n"
        "celery.rules.yml only while you migrate; docs/migration.md lists the mapping.\n"
        "Names it shares with us (celery_task_*_total, celery_worker_up) need no rule.",
    ),
}
GENERATED = (
    "Generated from mixin/ by `make mixin` (mixin/render.py): edit mixin/*.libsonnet, not this."
)
RULE_KEYS = ("record", "alert", "expr", "for", "labels", "annotations")
ANNOTATION_KEYS = ("summary", "description", "runbook_url")


def evaluate(config: str = "{}") -> dict[str, Any]:
    """The mixin's fields, with ``config`` (a jsonnet object) merged into ``_config``."""
    snippet = (
        "local m = (import 'mixin.libsonnet') + { _config+:: " + config + " };\n"
        "{ [f]: m[f] for f in std.objectFieldsAll(m) if f != '_config' }"
    )
    result: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet("render", snippet, jpathdir=str(MIXIN))
    )
    return result


def dashboard_lib(name: str, *args: Any) -> Any:
    """A field of the dashboards' vocabulary (mixin/dashboards/lib.libsonnet) with the default
    _config, or the result of calling it with ``args`` (JSON values): tests evaluate the
    shared expressions (``quantile``, ``mean``) on their own."""
    call = f"({', '.join(json.dumps(a) for a in args)})" if args else ""
    snippet = (
        "local m = import 'mixin.libsonnet';\n"
        f"(import 'dashboards/lib.libsonnet')(m._config).{name}{call}"
    )
    return json.loads(_jsonnet.evaluate_snippet("lib", snippet, jpathdir=str(MIXIN)))


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    keys = [k for k in order if k in mapping] + sorted(k for k in mapping if k not in order)
    return {k: mapping[k] for k in keys}


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rules_yaml(groups: list[dict[str, Any]], header: str) -> str:
    tidy = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            rule = _ordered(rule, RULE_KEYS)
            if "annotations" in rule:
                rule["annotations"] = _ordered(rule["annotations"], ANNOTATION_KEYS)
            rules.append(rule)
        tidy.append({**group, "rules": rules})
    body = yaml.dump(
        {"groups": tidy}, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )
    comments = "".join(f"# {line}\n" for line in [*header.splitlines(), GENERATED])
    return comments + body


def render(config: str = "{}") -> dict[str, str]:
    """Relative path -> file text, for every file the mixin renders."""
    mixin = evaluate(config)
    files = {
        path: rules_yaml([g for f in fields for g in mixin[f]["groups"]], header)
        for path, (fields, header) in RULE_FILES.items()
    }
    for name, dashboard in mixin.get("grafanaDashboards", {}).items():
        files[f"grafana/dashboards/{name}"] = (
            json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"
        )
    return files


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="{}", help="jsonnet object merged into _config")
    parser.add_argument("--out", type=Path, default=ROOT, help="directory to write under")
    args = parser.parse_args(argv)
    for relative, text in render(args.config).items():
        path = args.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
