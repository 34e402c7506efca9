"""deploy/kubernetes renders (as `kubectl apply -k` would) and every object validates against the
Kubernetes API schemas (kubernetes-validate, strict: unknown fields are errors); and the pieces fit
(probes on the right paths and ports, PDBs and the HPA select what exists, every container sized)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from roomfeed.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
CLUSTER_SCOPED = {"Namespace"}


def render(folder: Path = DEPLOY) -> list[dict[str, Any]]:
    """The kustomization's resources with its namespace and image set (what `kubectl apply -k` sends)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        for obj in yaml.safe_load_all((folder / name).read_text()):
            if obj is None:
                continue
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
            for container in _containers(obj):
                container["image"] = images.get(container["image"], container["image"])
            objects.append(obj)
    return objects


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    template = obj.get("spec", {}).get("template")
    return template["spec"] if template else None


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return list(spec["containers"]) if spec else []


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


def test_every_object_validates_against_the_kubernetes_schemas(objects: list[dict[str, Any]]) -> None:
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "Namespace",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_a_wrong_field_is_caught() -> None:
    broken = render()
    api = _named(broken, "Deployment", "roomfeed-api")
    api["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


def test_api_worker_trainer_and_migration_are_wired(objects: list[dict[str, Any]]) -> None:
    api = _named(objects, "Deployment", "roomfeed-api")
    (container,) = _containers(api)
    assert container["args"][:2] == ["roomfeed", "serve"] and "--no-migrate" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["image"] == "registry.example.com/roomfeed:0.1.0"
    worker = _containers(_named(objects, "Deployment", "roomfeed-worker"))[0]
    trainer = _containers(_named(objects, "Deployment", "roomfeed-trainer"))[0]
    migrate = _containers(_named(objects, "Job", "roomfeed-migrate"))[0]
    assert worker["args"][:2] == ["roomfeed", "worker"] and "--metrics-port" in worker["args"]
    assert trainer["args"][:2] == ["roomfeed", "train"] and "--metrics-port" in trainer["args"]
    assert migrate["args"] == ["roomfeed", "migrate"]
    for c in (container, worker, trainer, migrate):
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], c["name"]
        refs = {next(iter(ref.values()))["name"] for ref in c["envFrom"]}
        assert refs == {"roomfeed-config", "roomfeed-secrets"}
    # Metrics on by default, on the port the scrape annotation names.
    for deployment, c in (("roomfeed-worker", worker), ("roomfeed-trainer", trainer)):
        port = c["args"][c["args"].index("--metrics-port") + 1]
        annotations = _named(objects, "Deployment", deployment)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == port
    config = _named(objects, "ConfigMap", "roomfeed-config")["data"]
    assert int(config["ROOMFEED_KAFKA_MIN_INSYNC_REPLICAS"]) < int(
        config["ROOMFEED_KAFKA_REPLICATION_FACTOR"]
    )


def test_disruption_budgets_and_autoscaler_select_what_exists(objects: list[dict[str, Any]]) -> None:
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        wanted = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            name
            for name, d in deployments.items()
            if wanted.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, pdb["metadata"]["name"]
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < deployments[matched[0]]["spec"]["replicas"]
    hpa = _named(objects, "HorizontalPodAutoscaler", "roomfeed-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["minReplicas"] >= deployments["roomfeed-api"]["spec"]["replicas"]
