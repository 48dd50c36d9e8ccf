"""The plain Kubernetes manifests of deploy/kubernetes (for users without Helm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.checks import check_pod_spec, config_file, parse_with_files, secret_paths
from tests.deploy.tools import DEPLOY, documents, kube_validate, one

KUBERNETES = DEPLOY / "kubernetes"


def objects() -> list[dict[str, Any]]:
    files = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    return documents(p.read_text(encoding="utf-8") for p in files)


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    docs = objects()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Secret", "Service"]
    for doc in docs:
        kube_validate(doc)


def test_kustomization_lists_the_manifests_but_not_the_example_secret() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == ["configmap.yaml", "deployment.yaml", "service.yaml"]
    for name in kustomization["resources"]:
        assert (KUBERNETES / name).is_file()


def test_deployment_runs_tradecache_as_a_native_sidecar(tmp_path: Path) -> None:
    docs = objects()
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    check_pod_spec(pod["spec"], 9464)

    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": 9464, "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    configmap = one(docs, "ConfigMap")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    config = config_file(configmap)
    parsed = parse_with_files(config, tmp_path)
    assert parsed.http.port == 9464
    # drain_timeout bounds the whole shutdown: the grace period must outlast it.
    assert pod["spec"]["terminationGracePeriodSeconds"] >= parsed.shutdown.drain_timeout + 5

    # Each secret file the config names is an item of the mounted Secret.
    secret = one(docs, "Secret")
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    mounted = {f"/run/secrets/tradecache/{item['path']}": item["key"] for item in volumes["secrets"]["secret"]["items"]}
    for path in secret_paths(config).values():
        assert path in mounted, f"{path} is not mounted"
        assert mounted[path] in secret["stringData"]
