"""Metrics scraped over HTTP from a running daemon and parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_harness import (
    daemon_config,
    database,
    publish_scenario,
    running_daemon,
    wait_for,
    wait_for_checkpoint,
)
from tests.vectors.scenarios import Scenario, moved_to, scenario_paths

pytestmark = pytest.mark.integration

# SPEC section 4: every metric, with its type and labels.
SPEC_METRICS = {
    "tradecache_events": ("counter", {"kind", "type", "outcome"}),
    "tradecache_write_duration_seconds": ("histogram", {"kind"}),
    "tradecache_event_lag_seconds": ("histogram", {"kind"}),
    "tradecache_batch_size": ("histogram", set()),
    "tradecache_keys": ("gauge", {"collection"}),
    "tradecache_load_requests": ("counter", {"endpoint", "outcome"}),
    "tradecache_load_duration_seconds": ("histogram", {"endpoint"}),
    "tradecache_consumer_pending_messages": ("gauge", set()),
    "tradecache_position_divergence": ("counter", set()),
    "tradecache_redis_up": ("gauge", set()),
    "tradecache_nats_connected": ("gauge", set()),
    "tradecache_build_info": ("gauge", {"version"}),
}


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        body: bytes = response.read()
        return body.decode()


async def test_every_spec_metric_is_exported_and_counts_what_happened(redis_server: Any, nats_server: Any) -> None:
    # A trader of its own: the vector tests publish this scenario's trader on the same NATS, and a
    # daemon of that trader would take their messages (and checkpoint) for this test's.
    loaded = Scenario.load(next(p for p in scenario_paths() if p.stem == "duplicate_event_delivery"))
    scenario = moved_to(loaded, f"METRICS-{uuid.uuid4().hex[:8]}")
    database(redis_server.url, scenario.trader_id).flush()
    config = daemon_config(redis_server.url, nats_server.url, scenario.trader_id)
    async with running_daemon(config) as daemon:
        last = await publish_scenario(nats_server.url, scenario)
        await wait_for_checkpoint(redis_server.url, scenario.trader_id, last)
        await wait_for(
            lambda: (daemon.metrics.registry.get_sample_value("tradecache_keys", {"collection": "orders"}) or 0) > 0
        )
        text = await asyncio.to_thread(scrape, daemon.health.port)
        assert daemon.ingestor is not None
        commits = daemon.ingestor.commits
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, (kind, labels) in SPEC_METRICS.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, f"{sample.name} has labels {sample.labels}"

    def value(name: str, **labels: str) -> float:
        return sum(
            s.value for family in families.values() for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )  # fmt: skip

    # The scenario delivers an OrderAccepted, an OrderFilled and an AccountState twice.
    assert value("tradecache_events_total", outcome="duplicate") == 3
    written = value("tradecache_events_total", outcome="written")
    assert written == len(scenario.messages) - 3
    assert value("tradecache_keys", collection="orders") == len(scenario.expected["orders"])
    assert value("tradecache_keys", collection="accounts") == len(scenario.expected["accounts"])
    assert value("tradecache_redis_up") == 1
    assert value("tradecache_nats_connected") == 1
    assert value("tradecache_batch_size_count") >= 1
    assert value("tradecache_event_lag_seconds_count", kind="order") > 0
    # Once per commit (every commit here carried events), under `mixed` when it carried several kinds.
    assert commits >= 1
    assert value("tradecache_write_duration_seconds_count") == commits
    assert value("tradecache_position_divergence_total") == 0
