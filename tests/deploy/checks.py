"""Checks shared by the Helm chart's tests and the plain manifests' tests: one pod, one sidecar, one config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tradecache.config import Config, parse_config

SIDECAR = "tradecache"
SECURE_CONTAINER = {
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
PATH_KEYS = ("_file", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def sidecar_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    sidecars: list[dict[str, Any]] = [c for c in pod_spec.get("initContainers", []) if c["name"] == SIDECAR]
    assert len(sidecars) == 1, "tradecache must be an init container"
    return sidecars[0]


def check_pod_spec(pod_spec: dict[str, Any], port: int) -> dict[str, Any]:
    """tradecache as a native sidecar with probes and a locked-down security context; returns the sidecar."""
    sidecar = sidecar_of(pod_spec)
    assert sidecar["restartPolicy"] == "Always", "a native sidecar is an init container with restartPolicy Always"
    assert sidecar["args"] == ["--config", "/etc/tradecache/tradecache.yaml"]
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    probes = {name: sidecar[name] for name in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert probes["startupProbe"]["httpGet"]["path"] in {"/healthz", "/readyz"}
    assert probes["startupProbe"]["httpGet"]["port"] == port
    for key, value in SECURE_CONTAINER.items():
        assert sidecar["securityContext"][key] == value, f"sidecar securityContext.{key}"
    assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts["/etc/tradecache"]["readOnly"] is True
    assert "/tmp" in mounts, "a writable /tmp next to the read-only root filesystem"

    assert pod_spec["containers"], "the trading workload is the main container"
    for container in pod_spec["containers"]:
        for key, value in SECURE_CONTAINER.items():
            assert container["securityContext"][key] == value, f"{container['name']} securityContext.{key}"
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Service links would add TRADECACHE_PORT etc., which tradecache refuses as unknown config keys.
    assert pod_spec["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    config_volume = volumes[mounts["/etc/tradecache"]["name"]]
    assert "configMap" in config_volume
    return sidecar


def config_file(configmap: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(configmap["data"]["tradecache.yaml"])
    assert isinstance(data, dict)
    return data


def secret_paths(config: dict[str, Any]) -> dict[str, str]:
    """Every file path in the config, keyed by its dotted key."""
    found: dict[str, str] = {}
    for section, values in config.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, str) and key.endswith(PATH_KEYS):
                    found[f"{section}.{key}"] = value
    return found


def parse_with_files(config: dict[str, Any], tmp_path: Path, environ: dict[str, str] | None = None) -> Config:
    """tradecache's own parser on a rendered config, each file it names replaced by a temporary one."""
    data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for dotted, path in secret_paths(config).items():
        section, key = dotted.split(".")
        local = tmp_path / path.strip("/").replace("/", "__")
        local.write_text("not-a-real-secret\n", encoding="utf-8")
        data[section][key] = str(local)
    return parse_config(data, environ or {})


def container_environ(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
