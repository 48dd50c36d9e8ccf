"""Alert rules (promtool check and unit tests) and the Grafana dashboard's structure."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DASHBOARD, RULES, RULES_TEST, find_tool

ALERTS = {
    "TradecacheDown", "TradecacheNotReady", "TradecacheConsumerLagGrowing", "TradecacheDeadLetters",
    "TradecacheWriteLatencyHigh", "TradecachePositionDivergence", "TradecacheRedisDown", "TradecacheNatsDisconnected",
    "TradecacheIngestStalled", "TradecacheRedeliveries", "TradecacheAcksStuck", "TradecacheStandbyLong",
}  # fmt: skip
PANELS = {
    "Events/s by kind and outcome", "Redis commit latency p50 / p99", "Event lag p50 / p99 by kind",
    "Keys per collection", "Consumer pending messages", "Dead letters by reason", "Dead letters by kind and type",
    "Load requests/s by endpoint and outcome", "Load latency p50 / p99 by endpoint", "Redis up", "NATS connected",
    "Redis up / NATS connected", "Position divergence", "Ingest stalled / lease held / standby",
    "Consumer ack pending, redelivered, stuck acks",
}  # fmt: skip


@pytest.fixture(scope="module")
def promtool() -> str:
    return find_tool("promtool", "scripts/setup takes it from Debian's prometheus package into .venv/bin")


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules(promtool: str) -> None:
    output = run(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_promtool_unit_tests_pass(promtool: str) -> None:
    output = run(promtool, "test", "rules", str(RULES_TEST))
    assert "SUCCESS" in output and "FAILED" not in output


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yaml"]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fired == ALERTS, f"never shown firing: {ALERTS - fired}"
    assert quiet == ALERTS, f"never shown not firing: {ALERTS - quiet}"


def test_rules_select_the_tradecache_job() -> None:
    for rule in rules():
        assert 'job="tradecache"' in rule["expr"], rule["alert"]


def test_dashboard_has_the_panels_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "tradecache" and dashboard["id"] is None
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    assert titles >= PANELS, f"missing: {PANELS - titles}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
