"""The Helm chart, linted and rendered by the Helm SDK (helm-python-sdk), checked against Kubernetes schemas."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

import tradecache
from tests.deploy.checks import check_pod_spec, config_file, container_environ, parse_with_files, secret_paths
from tests.deploy.tools import (
    ALL_VALUES,
    CHART,
    DASHBOARD,
    REPO,
    RULES,
    by_kind,
    kube_validate,
    load_values,
    manifests,
    one,
    render,
)

VALUE_SETS = {"default": None, "all-options": ALL_VALUES, "nautilus": CHART / "ci" / "nautilus-values.yaml"}


def values_of(name: str) -> dict[str, Any] | None:
    path = VALUE_SETS[name]
    return load_values(path) if path is not None else None


def test_chart_metadata_matches_the_package() -> None:
    with helm.Chart.load(CHART) as chart:
        metadata = chart.metadata
        assert chart.schema is not None
    assert metadata["apiVersion"] == "v2"
    assert metadata["kubeVersion"] == ">=1.29.0-0", "native sidecars need Kubernetes 1.29"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata["appVersion"] == tradecache.__version__ == project["version"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_lints_clean(value_set: str) -> None:
    report = helm.lint(CHART, values_of(value_set), strict=True, kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_manifests_are_valid_kubernetes_objects(value_set: str) -> None:
    docs = manifests(render(values_of(value_set)))
    kinds = sorted(doc["kind"] for doc in docs)
    if value_set in ("default", "nautilus"):  # the nautilus set adds no optional object
        assert kinds == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]
    else:
        assert kinds == [
            "ConfigMap", "ConfigMap", "Deployment", "Pod", "PrometheusRule", "Service", "ServiceAccount",
            "ServiceMonitor",
        ]  # fmt: skip
    for doc in docs:
        kube_validate(doc)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_tradecache_runs_as_a_native_sidecar_of_the_trading_container(value_set: str) -> None:
    values = values_of(value_set) or {}
    docs = manifests(render(values))
    port = values.get("tradecache", {}).get("port", 9464)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]
    sidecar = check_pod_spec(pod["spec"], port)
    assert "checksum/config" in pod["metadata"]["annotations"]

    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": values.get("service", {}).get("port", 9464), "targetPort": port, "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]

    configmap = next(d for d in by_kind(docs, "ConfigMap") if "tradecache.yaml" in d["data"])
    assert pod["spec"]["volumes"][0] == {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}}
    assert config_file(configmap)["http"] == {"listen": f"0.0.0.0:{port}"}
    if value_set == "default":
        assert sidecar["image"] == f"tradecache:{tradecache.__version__}"


def test_trading_container_takes_image_command_args_env_and_resources_from_values() -> None:
    values = load_values(ALL_VALUES)
    pod = one(manifests(render(values)), "Deployment")["spec"]["template"]["spec"]
    (trading,) = pod["containers"]
    wanted = values["trading"]
    assert trading["name"] == wanted["name"]
    assert trading["image"] == f"{wanted['image']['repository']}:{wanted['image']['tag']}"
    assert trading["imagePullPolicy"] == wanted["image"]["pullPolicy"]
    for key in ("command", "args", "env", "envFrom", "ports", "resources", "volumeMounts", "securityContext"):
        assert trading[key] == wanted[key], key
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert trading[key] == wanted[key], key
    sidecar = pod["initContainers"][0]
    assert sidecar["image"] == "registry.internal/trading/tradecache:0.1.0"
    assert sidecar["env"] == values["tradecache"]["env"]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["priorityClassName"] == "trading-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry-internal"}]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_config_is_accepted_by_tradecache(value_set: str, tmp_path: Path) -> None:
    values = values_of(value_set) or {}
    docs = manifests(render(values))
    configmap = next(d for d in by_kind(docs, "ConfigMap") if "tradecache.yaml" in d["data"])
    sidecar = one(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"][0]
    config = parse_with_files(config_file(configmap), tmp_path, container_environ(sidecar))
    assert config.trader_id == (values.get("config", {}).get("trader_id") or "TRADER-001")
    assert config.http.port == values.get("tradecache", {}).get("port", 9464)
    assert config.redis.layout == values.get("config", {}).get("redis", {}).get("layout", "seed")


def test_secrets_are_mounted_from_existing_secrets_and_named_by_the_config() -> None:
    values = load_values(ALL_VALUES)
    docs = manifests(render(values))
    assert by_kind(docs, "Secret") == [], "the chart refers to Secrets, it never makes one"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    config = config_file(next(d for d in by_kind(docs, "ConfigMap") if "tradecache.yaml" in d["data"]))
    paths = secret_paths(config)
    assert paths["redis.password_file"] == "/run/secrets/tradecache/redis-password"
    assert paths["nats.creds_file"] == "/run/secrets/tradecache/nats.creds"
    assert "nats.password_file" not in paths and "nats.token_file" not in paths  # not set in the values
    assert "password" not in config["redis"]

    mount = next(m for m in pod["initContainers"][0]["volumeMounts"] if m["name"] == "secrets")
    assert mount == {"name": "secrets", "mountPath": "/run/secrets/tradecache", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    sources = {s["secret"]["name"]: s["secret"]["items"] for s in volume["projected"]["sources"]}
    assert sources == {
        "redis-auth": [{"key": "redis-password", "path": "redis-password"}],
        "nats-user-creds": [{"key": "user.creds", "path": "nats.creds"}],
    }
    # The default values use no secrets, so there is no secrets volume.
    default_pod = one(manifests(render()), "Deployment")["spec"]["template"]["spec"]
    assert all(v["name"] != "secrets" for v in default_pod["volumes"])


def test_password_and_token_secrets_become_password_file_and_token_file(tmp_path: Path) -> None:
    values = {
        "config": {"nats": {"servers": ["nats://nats:4222"], "user": "trader"}},
        "secrets": {"natsPassword": {"name": "nats-auth", "key": "pw"}},
    }
    docs = manifests(render(values))
    config = config_file(next(d for d in by_kind(docs, "ConfigMap") if "tradecache.yaml" in d["data"]))
    assert secret_paths(config) == {"nats.password_file": "/run/secrets/tradecache/nats-password"}
    assert parse_with_files(config, tmp_path).nats.user == "trader"
    test_pod = one(docs, "Pod")
    env = {e["name"]: e for e in test_pod["spec"]["containers"][0]["env"]}
    assert env["NATS_USER"]["value"] == "trader"
    assert env["NATS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "nats-auth", "key": "pw"}}

    token = manifests(render({"secrets": {"natsToken": {"name": "nats-token", "key": "token"}}}))
    config = config_file(next(d for d in by_kind(token, "ConfigMap") if "tradecache.yaml" in d["data"]))
    assert secret_paths(config) == {"nats.token_file": "/run/secrets/tradecache/nats-token"}
    parse_with_files(config, tmp_path)


def test_monitoring_objects_carry_the_deploy_files() -> None:
    docs = manifests(render(load_values(ALL_VALUES)))
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))

    monitor = one(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "tradecache"} in endpoint["relabelings"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["trading"]}
    service = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    dashboard = next(d for d in by_kind(docs, "ConfigMap") if "tradecache.json" in d["data"])
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Trading"}
    assert json.loads(dashboard["data"]["tradecache.json"]) == json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_chart_copies_of_rules_and_dashboard_are_identical_to_deploy() -> None:
    assert (CHART / "files" / "prometheus-rules.yaml").read_bytes() == RULES.read_bytes()
    assert (CHART / "files" / "tradecache-dashboard.json").read_bytes() == DASHBOARD.read_bytes()


def test_helm_test_hook_pings_tradecache_over_nats() -> None:
    docs = manifests(render(load_values(ALL_VALUES)))
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("natsio/nats-box:")
    script = container["args"][0]
    assert "nats request '$SRV.PING.tradecache'" in script
    env = {e["name"]: e for e in container["env"]}
    assert env["NATS_URL"]["value"] == "tls://nats-0.nats:4222"
    assert env["TRADER_ID"]["value"] == "TRADER-042"
    assert env["NATS_CREDS"]["value"] == "/run/secrets/tradecache/nats.creds"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    default = one(manifests(render()), "Pod")
    default_env = {e["name"]: e.get("value") for e in default["spec"]["containers"][0]["env"]}
    assert default_env["NATS_URL"] == "nats://nats:4222"
    assert manifests(render({"tests": {"enabled": False}})) == [d for d in manifests(render()) if d["kind"] != "Pod"]


def test_notes_explain_how_to_reach_and_test_the_release() -> None:
    notes = render()["tradecache/templates/NOTES.txt"]
    assert "helm test demo -n trading" in notes
    assert "port-forward svc/demo-tradecache 9464" in notes
    assert "placeholder" in notes  # the trading image is still the example one


BAD_VALUES = [
    pytest.param('tradecache:\n  port: "9464"\n', "at '/tradecache/port': got string, want integer", id="port-string"),
    pytest.param("service:\n  port: metrics\n", "at '/service/port': got string, want integer", id="svc-port"),
    pytest.param("replicaCount: 2\n", "additional properties 'replicaCount' not allowed", id="unknown-key"),
    pytest.param("config:\n  trader_id: null\n", "at '/config': missing property 'trader_id'", id="no-trader"),
    pytest.param("config:\n  trader_id: TRADER\n", "at '/config/trader_id'", id="trader-no-tag"),
    pytest.param("config:\n  trader_id: FX-1:orders:X\n", "at '/config/trader_id'", id="trader-colon"),
    pytest.param(
        "config:\n  trader_id: A-1\n  retention:\n    traders:\n      A-1:\n        age: 60\n",
        "at '/config/retention/traders/A-1': additional properties 'age' not allowed",
        id="retention-typo",
    ),
    pytest.param(
        "config:\n  redis:\n    password: hunter2\n",
        "at '/config/redis': additional properties 'password' not allowed",
        id="plain-password",
    ),
    pytest.param("config:\n  http:\n    listen: 0.0.0.0:1\n", "additional properties 'http' not allowed", id="http"),
    pytest.param(
        "tradecache:\n  startupProbe:\n    path: /readyz\n    perodSeconds: 1\n",
        "at '/tradecache/startupProbe': additional properties 'perodSeconds' not allowed",
        id="probe-typo",
    ),
    pytest.param("secrets:\n  redisPassword:\n    name: x\n    key: ''\n", "at '/secrets/redisPassword/key'", id="key"),
    pytest.param("serviceMonitor:\n  interval: 30\n", "at '/serviceMonitor/interval'", id="interval-number"),
]


@pytest.mark.parametrize(("text", "message"), BAD_VALUES)
def test_values_schema_rejects_bad_values_files(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad-values.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(helm.HelmValuesError) as caught:
        render(load_values(path))
    assert "values don't meet the specifications of the schema" in str(caught.value)
    assert message in str(caught.value)


# What the pod needs beyond tradecache's own drain: the trading container stops first, and the
# kubelet's SIGKILL must not cut the drain short.
GRACE_MARGIN_SECONDS = 5


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_grace_period_outlasts_the_whole_drain(value_set: str, tmp_path: Path) -> None:
    """`shutdown.drain_timeout` bounds tradecache's whole shutdown, so the pod's grace period must be
    at least that plus a margin."""
    values = values_of(value_set) or {}
    docs = manifests(render(values))
    configmap = next(d for d in by_kind(docs, "ConfigMap") if "tradecache.yaml" in d["data"])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    config = parse_with_files(config_file(configmap), tmp_path, container_environ(pod["initContainers"][0]))
    assert pod["terminationGracePeriodSeconds"] >= config.shutdown.drain_timeout + GRACE_MARGIN_SECONDS
