"""docs/scaling.md's memory sizing query, evaluated by promtool on the series it names: the
figure the docs promise, for a two-broker exporter (each broker has its own bounds)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.integration.alerts.test_alert_rules import ROOT, promtool


def sizing_query() -> str:
    text = (ROOT / "docs" / "scaling.md").read_text()
    section = text[text.index("## How much memory to give it") :]
    match = re.search(r"```promql\n(.*?)```", section, flags=re.S)
    assert match is not None, "no promql block in 'How much memory to give it'"
    return match.group(1)


def test_the_sizing_query_gives_the_documented_rule(tmp_path: Path) -> None:
    job = 'job="celery-metrics-exporter"'
    lines, held, tracked = 17_500, 10_000, 100  # held and tracked per broker, two brokers
    expected = 2 * (50 * 2**20 + 2048 * lines + 4096 * 2 * held + 512 * 2 * tracked)
    rules = {"groups": [{"name": "sizing", "rules": [
        {"record": "memory_limit_estimate_bytes", "expr": sizing_query()}]}]}  # fmt: skip
    series = [
        (f'scrape_samples_scraped{{{job}, instance="x"}}', lines),
        *(
            (f'{name}{{{job}, instance="x", broker="{broker}"}}', count)
            for broker in ("a", "b")
            for name, count in (
                ("celery_exporter_held_tasks", held),
                ("celery_exporter_tracked_tasks", tracked),
            )
        ),
    ]
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": f"{v}x10"} for s, v in series],
                "promql_expr_test": [
                    {
                        "expr": "memory_limit_estimate_bytes",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'memory_limit_estimate_bytes{job="celery-metrics-'
                                'exporter", instance="x"}',
                                "value": expected,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "sizing.test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", "sizing.test.yml"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected == 340_582_400  # 325 MiB: the figure worked out by hand
