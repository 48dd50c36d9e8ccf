"""Every metric and label the alert rules and the dashboard use is one a real daemon exports,
and the `helm test` hook's check accepts the daemon's real $SRV.PING reply."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.tools import DASHBOARD, RULES, by_kind, manifests, render
from tests.integration.daemon_harness import daemon_config, running_daemon, wait_for
from tradecache.model.messages import Kind
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

TRADER = "DEPLOY-METRICS"
METRIC = re.compile(r"\btradecache_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")  # any metric name with a label selector
SYNTHETIC = {"up": {"job", "instance"}}  # made by Prometheus for each target
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
# Labels Prometheus adds to every series (job, instance), le of histogram buckets, and the target
# labels of deploy/prometheus/scrape-config.yaml and the chart's ServiceMonitor.
ADDED_LABELS = {"job", "instance", "le", "namespace", "pod", "trader_id"}


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def ping_replies(nats_url: str) -> list[bytes]:
    """What `nats request '$SRV.PING.tradecache' '' --replies=0` collects: every instance's reply."""
    client = await nats.connect(nats_url)
    try:
        inbox = client.new_inbox()
        subscription = await client.subscribe(inbox)
        await client.publish("$SRV.PING.tradecache", b"", reply=inbox)
        replies: list[bytes] = []
        with_more = True
        while with_more:
            try:
                message = await subscription.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                with_more = False
            else:
                replies.append(message.data)
        return replies
    finally:
        await client.close()


@pytest.fixture(scope="module")
def exported(redis_server: Any, nats_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """/metrics of a real daemon after one dead letter, parsed; and its $SRV.PING replies."""

    async def session() -> tuple[str, list[bytes]]:
        config = daemon_config(redis_server.url, nats_server.url, TRADER)
        async with running_daemon(config) as daemon:
            client = await nats.connect(nats_server.url)
            try:
                await client.jetstream().publish(Subjects("tradecache", TRADER).inbound_for(Kind.ORDER), b"not msgpack")
            finally:
                await client.close()
            await wait_for(
                lambda: (daemon.metrics.registry.get_sample_value("tradecache_batch_size_count") or 0) >= 1, timeout=15
            )
            text = await asyncio.to_thread(scrape, daemon.health.port)
            replies = await ping_replies(nats_server.url)
        return text, replies

    text, replies = asyncio.run(session())
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {"labels": labels, "replies": replies}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_metrics_and_labels_used_are_exported_by_the_daemon(source: str, exported: dict[str, Any]) -> None:
    labels: dict[str, set[str]] = exported["labels"]
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    assert expressions
    for expr in expressions:
        names = set(METRIC.findall(expr)) | set(SELECTOR.findall(expr))
        assert names, f"no metric in {expr!r}"
        known_names = labels | SYNTHETIC
        missing = names - set(known_names)
        assert not missing, f"{expr!r} uses {sorted(missing)}, not exported (exported: {sorted(labels)})"
        known = set().union(*(known_names[name] for name in names)) | ADDED_LABELS
        used = set(MATCHER.findall(expr))
        for group in GROUPING.findall(expr):
            used |= {label.strip() for label in group.split(",") if label.strip()}
        unknown = used - known
        assert not unknown, f"{expr!r} uses labels {sorted(unknown)} that {sorted(names)} do not have"


def test_dead_lettered_events_have_kind_and_type_labels(exported: dict[str, Any]) -> None:
    assert exported["labels"]["tradecache_events_total"] == {"kind", "type", "outcome"}
    assert exported["labels"]["tradecache_dead_letters_total"] == {"reason"}


def test_helm_test_hook_accepts_the_real_ping_reply_of_its_trader_only(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    replies: list[bytes] = exported["replies"]
    assert replies, "no tradecache instance answered $SRV.PING.tradecache"
    # A stand-in for the nats CLI that prints the replies the real daemon gave, one per line.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "replies").write_bytes(b"".join(reply + b"\n" for reply in replies))
    fake = bin_dir / "nats"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/args\ncat {tmp_path}/replies\n", encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)

    def hook(trader_id: str) -> subprocess.CompletedProcess[str]:
        (pod,) = by_kind(manifests(render({"config": {"trader_id": trader_id}})), "Pod")
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
        return subprocess.run(
            [*container["command"], container["args"][0]], env=env, capture_output=True, text=True, timeout=10,
            check=False,
        )  # fmt: skip

    assert hook(TRADER).returncode == 0
    assert (tmp_path / "args").read_text(encoding="utf-8").split("\n")[:3] == ["request", "$SRV.PING.tradecache", ""]
    assert hook("OTHER-TRADER").returncode != 0
