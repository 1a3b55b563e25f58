"""deploy/ parses, the Kubernetes manifests validate against their schemas, compose is wired consistently.

``uv run python tests/contract/test_deploy.py`` rewrites the policies ConfigMap from the shipped policy file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30"
SERVICES = ("invoice-svc", "payment-svc", "dunning-svc", "notify-svc")


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


K8S_DOCS = _k8s_docs()


@pytest.mark.parametrize(("name", "doc"), K8S_DOCS, ids=[n for n, _ in K8S_DOCS])
def test_kubernetes_manifest_validates_against_its_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_catches_a_broken_manifest() -> None:
    deployment = copy.deepcopy(next(d for _, d in K8S_DOCS if d["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_probes_and_a_service(service: str) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in K8S_DOCS}
    assert ("Deployment", service) in kinds
    assert ("Service", service) in kinds
    deployment = next(
        d for _, d in K8S_DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == service
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_dunning_runs_several_replicas_and_a_migration_job_exists() -> None:
    dunning = next(
        d for _, d in K8S_DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == "dunning-svc"
    )
    assert dunning["spec"]["replicas"] >= 2
    assert any(d["kind"] == "Job" for _, d in K8S_DOCS)
    config_maps = {d["metadata"]["name"] for _, d in K8S_DOCS if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"] for _, d in K8S_DOCS if d["kind"] == "Secret"}
    assert {"ar-policies", "ar-templates"} <= config_maps
    assert secrets


def test_compose_has_kraft_kafka_postgres_and_the_four_services() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "postgres" in services
    init_sql = (DEPLOY / "postgres" / "init.sql").read_text()
    for service in SERVICES:
        assert service in services
        dockerfile = DEPLOY.parent / services[service]["build"]["dockerfile"]
        assert dockerfile.exists(), dockerfile
        assert f"--package {service}" in dockerfile.read_text()
        db = "ar_" + service.removesuffix("-svc")
        assert f"CREATE DATABASE {db};" in init_sql
        prefix = service.removesuffix("-svc").upper()
        assert services[service]["environment"][f"{prefix}_DATABASE__URL"].endswith("/" + db)


def _service_env_names() -> set[str]:
    names: set[str] = set()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for svc in compose["services"].values():
        names |= set((svc.get("environment") or {}).keys())
    for _, doc in K8S_DOCS:
        if doc["kind"] == "Secret":
            names |= set(doc.get("stringData", {}))
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                names |= {e["name"] for e in container.get("env", [])}
    return {n for n in names if n.split("_")[0] in ("INVOICE", "PAYMENT", "DUNNING", "NOTIFY")}


def test_every_service_variable_in_deploy_is_a_real_setting() -> None:
    from tests.contract.test_readme import settings_rows

    known = {name for name, _, _ in settings_rows()}
    assert _service_env_names() - known == set()


POLICIES = DEPLOY.parent / "services" / "dunning-svc" / "src" / "dunning_svc" / "policies.yaml"
POLICIES_CONFIGMAP = DEPLOY / "k8s" / "policies-configmap.yaml"


def policies_configmap() -> str:
    body = "".join(f"    {line}" if line.strip() else "\n" for line in POLICIES.read_text().splitlines(True))
    return (
        "# Generated from services/dunning-svc/src/dunning_svc/policies.yaml by tests/contract/test_deploy.py;\n"
        "# edit the policies here for your deployment (dunning-svc reads DUNNING_POLICIES_FILE).\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ar-policies\n  namespace: ar-dunning\n"
        "data:\n  policies.yaml: |\n" + body
    )


def test_the_policies_configmap_ships_the_default_policies() -> None:
    shipped = yaml.safe_load(POLICIES.read_text())
    configmap = yaml.safe_load(POLICIES_CONFIGMAP.read_text())
    assert yaml.safe_load(configmap["data"]["policies.yaml"]) == shipped, (
        "regenerate: see the module docstring"
    )


if __name__ == "__main__":
    POLICIES_CONFIGMAP.write_text(policies_configmap())
