"""Paths and helpers shared by the deployment tests: tools, the chart, YAML documents, Kubernetes schemas."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tradecache"
DEPLOY = REPO / "deploy"
ALL_VALUES = CHART / "ci" / "all-values.yaml"
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "tradecache.json"

# Native sidecars need 1.29 (the chart's kubeVersion); also check the newest schemas we have.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_GROUPS = ("monitoring.coreos.com/",)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def find_tool(name: str, how: str) -> str:
    """The path of a command-line tool: PATH first, then the venv's bin. Missing is a failure, never a skip."""
    found = shutil.which(name)
    if found is None:
        candidate = Path(sys.prefix) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    if found is None:
        where = " (CI=true: the deployment checks must run)" if in_ci() else ""
        pytest.fail(f"{name} not found on PATH or in {Path(sys.prefix) / 'bin'}{where}; {how}", pytrace=False)
    return found


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def render(values: Mapping[str, Any] | None = None, name: str = "demo", namespace: str = "trading") -> dict[str, str]:
    """The chart rendered offline by the Helm SDK: template path -> manifest text."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(dict(values) if values is not None else None, name=name, namespace=namespace)


def documents(texts: Iterable[str]) -> list[dict[str, Any]]:
    """Every non-empty YAML document of the given manifests."""
    found: list[dict[str, Any]] = []
    for text in texts:
        for document in yaml.safe_load_all(text):
            if document:
                assert isinstance(document, dict), document
                found.append(document)
    return found


def manifests(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    return documents(text for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml")))


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def kube_validate(doc: dict[str, Any]) -> None:
    """Validate one object against the strict Kubernetes schemas of every version in KUBE_VERSIONS.

    Custom resources (prometheus-operator's) have no schema there; `check_custom_resource` covers them.
    """
    if doc["apiVersion"].startswith(CRD_GROUPS):
        check_custom_resource(doc)
        return
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{name} is not valid for Kubernetes {version}: {path}: {exc.message}", pytrace=False)


def check_custom_resource(doc: dict[str, Any]) -> None:
    """The parts of a ServiceMonitor / PrometheusRule that prometheus-operator requires."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", doc["apiVersion"]
    assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}, set(spec)
        assert spec["selector"]["matchLabels"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}, set(endpoint)
            for relabeling in endpoint.get("relabelings", []):
                assert set(relabeling) <= {"action", "sourceLabels", "targetLabel", "replacement", "regex"}
    elif doc["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}, set(rule)
    else:
        pytest.fail(f"unexpected custom resource {doc['kind']}")
