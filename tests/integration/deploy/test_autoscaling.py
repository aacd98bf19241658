"""Autoscaling on the exporter's numbers (docs/autoscaling.md, deploy/examples/keda/).

The manifests pass KEDA's CRD schema (cloudcoil-models-keda, generated from KEDA's CRDs) and
Kubernetes' own; the mixin's celery:queue_desired_workers and the ScaledObject's query are
evaluated by a real Prometheus scraping the exporter while a real worker runs: a backlog
raises the figure, and it falls back to the minimum once the work is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

from tests.integration.deploy.test_kubernetes import K8S_VERSION, _round_trip_problems
from tests.support.exporter import REPO_ROOT, ExporterProcess
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import wait_for
from tests.support.workers import CeleryWorker, Producer

KEDA_DIR = REPO_ROOT / "deploy" / "examples" / "keda"
RULES = REPO_ROOT / "alerts" / "celery.rules.yml"
QUEUE = 'queue_name="celery"'


def load(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((KEDA_DIR / name).read_text())
    return obj


def trigger() -> dict[str, str]:
    (prometheus,) = load("scaledobject.yaml")["spec"]["triggers"]
    assert prometheus["type"] == "prometheus"
    metadata: dict[str, str] = prometheus["metadata"]
    return metadata


def test_manifests_pass_keda_and_kubernetes_schemas() -> None:
    scaled = load("scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert _round_trip_problems(keda.ScaledObject, scaled) == []
    # The twin: a misspelt field is caught.
    typo = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 20}}
    assert _round_trip_problems(keda.ScaledObject, typo) == ["/spec/maxReplicas: not in the schema"]
    hpa = load("hpa.yaml")
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    # Both scale the same Deployment; the HPA reads the recording rule through the adapter.
    assert hpa["spec"]["scaleTargetRef"] == scaled["spec"]["scaleTargetRef"]
    (rule,) = load("prometheus-adapter-values.yaml")["rules"]["external"]
    assert rule["seriesQuery"] == "celery:queue_desired_workers"
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == rule["name"]["as"]
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = [rule.get("record") for group in groups for rule in group["rules"]]
    assert "celery:queue_desired_workers" in recorded


def test_desired_workers_rises_with_a_backlog_and_falls_to_the_minimum(
    tmp_path: Path,
    redis_url: str,
    exporter_factory: Callable[..., ExporterProcess],
    worker_factory: Callable[..., CeleryWorker],
    producer_factory: Callable[..., Producer],
) -> None:
    exporter = exporter_factory(redis_url, "--sample-interval", "1", "--inspect-interval", "2")
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        PrometheusServer.scrape_config([f"127.0.0.1:{exporter.port}"]),
        rule_files=[RULES],
    )
    keda_query = trigger()["query"]
    per_worker = 2
    release = tmp_path / "release"

    def figures() -> tuple[float | None, float | None, float | None, float | None]:
        return (
            prometheus.query_value(f"celery:queue_load{{{QUEUE}}}"),
            prometheus.query_value(f"celery:queue_worker_capacity{{{QUEUE}}}"),
            prometheus.query_value(f"celery:queue_desired_workers{{{QUEUE}}}"),
            prometheus.query_value(keda_query),
        )

    def until(expected: tuple[float, float, float, float]) -> Callable[[], bool]:
        return lambda: figures() == expected

    with prometheus:
        prometheus.wait_targets_up(60)
        worker = worker_factory(
            redis_url, "scale@test", queues=("celery",), pool="threads",
            concurrency=per_worker, heartbeat_interval=1,
        )  # fmt: skip
        worker.wait_ready()
        exporter.wait_worker_queues("scale@test")
        # Idle: the minimum (1), the worker's pool measured.
        wait_for(until((0, per_worker, 1, 0)), 60, message=lambda: f"idle: {figures()}")
        # 10 tasks: 2 running, the rest prefetched by the worker or ready in Redis.
        producer = producer_factory(redis_url)
        tasks = 10
        for _ in range(tasks):
            producer.send("tests.wait_for_file", args=(str(release), 600))
        desired = math.ceil(tasks / per_worker)
        wait_for(
            until((tasks, per_worker, desired, tasks)), 60,
            message=lambda: f"backlog: (load, capacity, desired, keda) = {figures()}",
        )  # fmt: skip
        # KEDA's figure: ceil(query / threshold) with the threshold at the pool size.
        assert math.ceil(tasks / per_worker) == desired
        release.touch()
        wait_for(until((0, per_worker, 1, 0)), 60, message=lambda: f"drained: {figures()}")
