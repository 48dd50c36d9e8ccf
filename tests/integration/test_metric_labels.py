"""Metric labels stay honest through a real daemon: a producer publishing junk cannot take a known
value's series (today's `OrderCanceled` stays `OrderCanceled`), and the registry does not grow."""

from __future__ import annotations

import asyncio
import secrets
import urllib.request
from typing import Any

import msgpack
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for_checkpoint
from tests.unit.factories import OrderEvents
from tradecache.client import Publisher
from tradecache.serialization.msgpack import MESSAGE_TYPES
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

JUNK_TYPES = 400


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def test_junk_message_types_and_kinds_share_other_and_known_ones_keep_their_series(
    redis_server: Any, nats_server: Any
) -> None:
    trader = f"LABELS-{secrets.token_hex(3)}"
    subjects = Subjects("tradecache", trader)
    database(redis_server.url, trader).flush()
    nc = await nats.connect(nats_server.url)
    try:
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
            js = nc.jetstream()
            for n in range(JUNK_TYPES):  # first, so that they would take every free label slot
                junk = msgpack.packb({"type": f"Junk{n}", "trader_id": trader})
                await js.publish_async(subjects.inbound_for_name("order"), junk)
            await js.publish_async(f"tradecache.in.{trader}.widget", b"\x80")  # a kind no subject has
            make = OrderEvents("O-LABELS", trader_id=trader)
            events = [make.initialized(), make.submitted(), make.accepted(), make.canceled()]
            await Publisher(js, trader).publish_many(events)
            last = (await js.publish(subjects.inbound_for_name("order"), b"\xc1")).seq  # malformed
            await wait_for_checkpoint(redis_server.url, trader, last)
            text = await asyncio.to_thread(scrape, daemon.health.port)
    finally:
        await nc.close()
        database(redis_server.url, trader).flush()
    events_total = [
        sample
        for family in text_string_to_metric_families(text)
        if family.name == "tradecache_events"
        for sample in family.samples
        if sample.name == "tradecache_events_total"
    ]

    def count(**labels: str) -> float:
        return sum(s.value for s in events_total if all(s.labels.get(k) == v for k, v in labels.items()))

    for type_name in ("OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderCanceled"):
        assert count(kind="order", type=type_name, outcome="written") == 1, type_name
    assert count(kind="order", type="other", outcome="dead_lettered") == JUNK_TYPES
    assert count(kind="other", outcome="dead_lettered") == 1  # the `widget` subject
    assert count(kind="order", type="unknown", outcome="dead_lettered") == 1  # not msgpack: type unreadable
    assert {s.labels["type"] for s in events_total} <= MESSAGE_TYPES | {"unknown", "other"}
