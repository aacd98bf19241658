"""Deployment files in deploy/: what they render to, and that every object is valid.

- ``deploy/kubernetes`` renders with the real ``kubectl kustomize``; every built-in object is
  validated against the Kubernetes 1.30 schemas (``kubernetes-validate``, strict: unknown
  fields fail), ServiceMonitor and PrometheusRule against the Prometheus Operator's models
  (``cloudcoil-models-prometheus-operator``, generated from the operator's CRDs; a round trip
  through the model catches unknown or misspelt fields, which the models alone would ignore);
- the generated files (PrometheusRule, dashboard ConfigMaps) are exactly what
  ``deploy/kubernetes/generate.py`` writes, and carry the same rule groups and dashboards as
  ``alerts/*.yml`` and ``grafana/dashboards/*.json``;
- the Deployment's security settings, probes, resources and broker Secret reference;
- the image override documented in deploy/README.md works through a kustomize overlay;
- ``deploy/examples``: the sidecar Deployment passes the same schema check, and
  ``docker-compose.yml`` validates against the Compose specification's models
  (``compose-spec``), with every mounted host path present in the repository.

A missing ``kubectl`` fails the tests with the command to install it: never a skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from compose_spec import ComposeSpecification
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[3]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
EXAMPLES = ROOT / "deploy" / "examples"
K8S_VERSION = "1.30.0"
NAME = "celery-metrics-exporter"
IMAGE = "ghcr.io/example/celery-metrics-exporter"
# kubectl apply (client side) stores the object in an annotation limited to 256 KiB.
LAST_APPLIED_LIMIT = 262_144

CRD_MODELS: dict[str, type[BaseModel]] = {
    "ServiceMonitor": monitoring_v1.ServiceMonitor,
    "PrometheusRule": monitoring_v1.PrometheusRule,
}


@cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", KUSTOMIZE_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found: run `bash tests/setup/system-packages.sh kubernetes-client` "
            "(or `make test`)"
        )
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(KUSTOMIZE_DIR)


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _normalized(value: Any) -> Any:
    """Lists compared as multisets: the Compose models turn unique-item arrays into sets."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_normalized(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _round_trip_problems(model: type[BaseModel], obj: dict[str, Any]) -> list[str]:
    """Paths present in ``obj`` that the model dropped or changed (unknown or misspelt keys)."""
    dumped = model.model_validate(obj).model_dump(mode="json", by_alias=True, exclude_unset=True)
    problems: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in a:
                if key not in b:
                    problems.append(f"{path}/{key}: not in the schema")
                else:
                    walk(a[key], b[key], f"{path}/{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(_normalized(a), _normalized(b), strict=True)):
                walk(x, y, f"{path}/{i}")
        elif _normalized(a) != _normalized(b):
            problems.append(f"{path}: {a!r} became {b!r}")

    walk(obj, dumped, "")
    return problems


def validate_object(obj: dict[str, Any]) -> None:
    """Kubernetes schema for built-in kinds, the Prometheus Operator's for its CRDs."""
    model = CRD_MODELS.get(obj["kind"])
    if model is not None:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert _round_trip_problems(model, obj) == []
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --- generated files -----------------------------------------------------------------------


def test_generated_files_are_what_generate_py_writes() -> None:
    for path, text in _generator().outputs().items():
        assert path.exists(), f"{path.name} missing: run python3 deploy/kubernetes/generate.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python3 deploy/kubernetes/generate.py"
        )


def test_prometheus_rules_carry_exactly_the_groups_in_alerts() -> None:
    sources = sorted((ROOT / "alerts").glob("*.yml"))
    assert sources
    for source in sources:
        generated = KUSTOMIZE_DIR / _generator().rule_output(source)
        (rule,) = load_all(generated)
        assert rule["kind"] == "PrometheusRule"
        expected = yaml.safe_load(source.read_text(encoding="utf-8"))["groups"]
        assert rule["spec"]["groups"] == expected, f"{generated.name} != {source}"
    generated_files = {p.name for p in KUSTOMIZE_DIR.glob("prometheusrule*.yaml")}
    assert generated_files == {_generator().rule_output(s) for s in sources}


def test_dashboard_configmaps_carry_each_dashboard_for_the_sidecar() -> None:
    maps = load_all(KUSTOMIZE_DIR / "dashboards.yaml")
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert [name for cm in maps for name in cm["data"]] == [d.name for d in dashboards]
    for cm, dashboard in zip(maps, dashboards, strict=True):
        assert cm["kind"] == "ConfigMap"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["data"][dashboard.name] == dashboard.read_text(encoding="utf-8")
        json.loads(cm["data"][dashboard.name])
        assert len(json.dumps(cm)) < LAST_APPLIED_LIMIT - 16_384, "too big for kubectl apply"


# --- rendered kustomization ----------------------------------------------------------------


def test_renders_the_expected_objects(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(obj["kind"] for obj in rendered)
    dashboards = len(list((ROOT / "grafana" / "dashboards").glob("*.json")))
    assert kinds == sorted(
        ["Deployment", "PodDisruptionBudget", "Service", "ServiceMonitor", "PrometheusRule"]
        + ["ConfigMap"] * dashboards
    )
    # The broker Secret holds credentials: never part of the default build.
    assert not any(obj["kind"] == "Secret" for obj in rendered)


def test_every_rendered_object_is_valid(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        validate_object(obj)


def test_schema_checks_reject_mistakes(rendered: list[dict[str, Any]]) -> None:
    """The validators used above do fail on a misspelt field or a wrong type."""
    deployment = json.loads(json.dumps(_one(rendered, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    monitor = json.loads(json.dumps(_one(rendered, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert _round_trip_problems(monitoring_v1.ServiceMonitor, monitor)
    rule = json.loads(json.dumps(_one(rendered, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["expr"] = {"not": "a string"}
    with pytest.raises(ValueError):
        validate_object(rule)


def test_deployment_security_probes_resources(rendered: list[dict[str, Any]]) -> None:
    pod = _one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == f"{IMAGE}:0.1.0"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9808, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert resources["limits"]["memory"] == "256Mi"


def test_two_replicas_on_two_nodes_one_disrupted_at_a_time(
    rendered: list[dict[str, Any]],
) -> None:
    """Two replicas (the rules take the largest of them, docs/scaling.md), spread over nodes
    where possible, rolled and drained one at a time."""
    spec = _one(rendered, "Deployment")["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    budget = _one(rendered, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


def test_broker_url_comes_from_the_secret(rendered: list[dict[str, Any]]) -> None:
    (container,) = _one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["CELERY_EXPORTER_BROKER_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": NAME, "key": "broker-url"}
    # The example Secret matches the reference, and is valid (not rendered by default).
    (secret,) = load_all(KUSTOMIZE_DIR / "secret.example.yaml")
    validate_object(secret)
    assert secret["metadata"]["name"] == ref["name"]
    assert ref["key"] in secret["stringData"]


def test_service_monitor_scrapes_the_service(rendered: list[dict[str, Any]]) -> None:
    service = _one(rendered, "Service")
    monitor = _one(rendered, "ServiceMonitor")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9808, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= (
        _one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"


def _embedded_kustomize_is_v2() -> bool:
    """kubectl up to 1.20 (Debian 12's) embeds kustomize v2: directories go under `bases:`."""
    out = subprocess.run(
        [_kubectl(), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return "kustomizeVersion" not in json.loads(out)


def test_overlay_overrides_image_namespace_and_labels(tmp_path: Path) -> None:
    """The overlay shown in deploy/README.md."""
    base_key = "bases" if _embedded_kustomize_is_v2() else "resources"
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "monitoring",
                base_key: [os.path.relpath(KUSTOMIZE_DIR, tmp_path)],
                "commonLabels": {"release": "kube-prometheus-stack"},
                "images": [
                    {"name": IMAGE, "newName": "registry.example.com/cme", "newTag": "1.2.3"}
                ],
            }
        ),
        encoding="utf-8",
    )
    objects = kustomize(tmp_path)
    assert {obj["metadata"]["namespace"] for obj in objects} == {"monitoring"}
    assert all(obj["metadata"]["labels"]["release"] == "kube-prometheus-stack" for obj in objects)
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/cme:1.2.3"
    for obj in objects:
        validate_object(obj)


# --- examples ------------------------------------------------------------------------------


def test_sidecar_example_is_valid_and_shares_the_broker_secret() -> None:
    objects = load_all(EXAMPLES / "sidecar-pod.yaml")
    for obj in objects:
        validate_object(obj)
    (deployment,) = objects
    assert deployment["spec"]["replicas"] == 1
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"worker", "exporter"}
    assert "-E" in containers["worker"]["args"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for c in containers.values()
        for e in c["env"]
        if "valueFrom" in e
    ]
    assert len(refs) == 2
    assert refs[0] == refs[1]
    exporter = containers["exporter"]
    assert exporter["image"].startswith(f"{IMAGE}:")
    assert exporter["env"][0]["name"] == "CELERY_EXPORTER_BROKER_URL"
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/readyz"
    sc = exporter["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _without_extensions(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("x-")}


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert _round_trip_problems(ComposeSpecification, _without_extensions(compose)) == []
    typo = json.loads(json.dumps(_without_extensions(compose)))
    typo["services"]["exporter"]["imgae"] = typo["services"]["exporter"].pop("image")
    assert _round_trip_problems(ComposeSpecification, typo)


def test_compose_services_and_mounted_paths(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "worker", "traffic", "exporter", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("image"), f"{name} has no image"
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            if host.startswith("."):
                assert (EXAMPLES / host).resolve().exists(), f"{name}: {host} does not exist"
    assert services["exporter"]["ports"] == ["9808:9808"]
    assert services["exporter"]["environment"]["CELERY_EXPORTER_BROKER_URL"].startswith("redis://")
    assert services["worker"]["volumes"] == ["../demo:/app:ro"]
    # The exporter runs as in Kubernetes: non-root, read-only, no capabilities.
    exporter = services["exporter"]
    assert exporter["user"] == "10001:10001"
    assert exporter["read_only"] is True
    assert exporter["cap_drop"] == ["ALL"]
    assert exporter["security_opt"] == ["no-new-privileges:true"]
    # Prometheus scrapes the exporter and loads the rule file that is mounted.
    prometheus = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text(encoding="utf-8"))
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["exporter:9808"]
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert set(prometheus["rule_files"]) <= mounted
    # Grafana's provisioning points at where the dashboards are mounted.
    provider = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "celery.yaml").read_text("utf-8")
    )
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert provider["providers"][0]["options"]["path"] in grafana_mounts
