"""The load service as a NATS micro service: discovery, stats, bad requests, Redis outages, paging."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import redis

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.integration.load_helpers import ask
from tests.unit.factories import SERIALIZER, OrderEvents
from tradecache import __version__
from tradecache.daemon.app import Daemon
from tradecache.model import Collection
from tradecache.model.orders import Order
from tradecache.service import ENDPOINTS
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

TRADER = "LOADER-001"
SUBJECTS = Subjects("tradecache", TRADER)


@pytest.fixture
async def daemon(redis_server: Any, nats_server: Any) -> AsyncIterator[Daemon]:
    database(redis_server.url, TRADER).flush()
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)) as running:
        yield running
    database(redis_server.url, TRADER).flush()


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def store_orders(redis_url: str, count: int) -> list[str]:
    """`count` orders written through the Python API (faster than publishing them)."""
    db = database(redis_url, TRADER)
    ids = [f"O-{n:05d}" for n in range(count)]
    with db.batch():
        for client_order_id in ids:
            db.add_order(Order(OrderEvents(client_order_id=client_order_id, trader_id=TRADER).initialized()))
    db.close()
    return ids


async def test_srv_info_lists_every_endpoint_on_its_subject(daemon: Daemon, nc: Any) -> None:
    info = json.loads((await nc.request("$SRV.INFO.tradecache", b"", timeout=5)).data)
    assert info["name"] == "tradecache" and info["version"] == __version__
    assert info["metadata"] == {"trader_id": TRADER}
    subjects = {endpoint["name"]: endpoint["subject"] for endpoint in info["endpoints"]}
    assert subjects == {endpoint.name: SUBJECTS.load(endpoint.name) for endpoint in ENDPOINTS}
    assert len(subjects) == 16
    ping = json.loads((await nc.request("$SRV.PING.tradecache", b"", timeout=5)).data)
    assert ping["id"] == info["id"]


async def test_srv_stats_counts_requests_and_errors(daemon: Daemon, nc: Any) -> None:
    for _ in range(3):
        assert (await ask(nc, SUBJECTS.load("order"), {"client_order_id": "O-1"})).value is None
    assert (await ask(nc, SUBJECTS.load("order"), {"nope": 1})).error_code == 400
    stats = json.loads((await nc.request("$SRV.STATS.tradecache", b"", timeout=5)).data)
    order = next(endpoint for endpoint in stats["endpoints"] if endpoint["name"] == "order")
    assert order["num_requests"] == 4
    assert order["num_errors"] == 1
    assert order["last_error"].startswith("400: unknown key(s) 'nope'")
    assert order["processing_time"] > 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "the request body is not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"{}", "missing 'client_order_id'"),
        (b'{"client_order_id": 7}', "'client_order_id' must be a string, got int"),
        (b'{"client_order_id": ""}', "must be a non-empty id"),
        (b'{"client_order_id": "O-1", "x": 1}', "unknown key(s) 'x'"),
    ],
    ids=["not-json", "not-an-object", "missing-id", "wrong-type", "empty-id", "unknown-key"],
)
async def test_a_bad_one_entity_request_gets_400_with_a_clear_message(
    daemon: Daemon, nc: Any, raw: bytes, message: str
) -> None:
    for as_msgpack in (False, True):
        reply = await ask(nc, SUBJECTS.load("order"), raw=raw, as_msgpack=as_msgpack)
        assert reply.error_code == 400
        assert message in reply.headers["Nats-Service-Error"]
        assert reply.value["error"]["code"] == 400 and message in reply.value["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"limit": 0}, "'limit' must be between 1 and"),
        ({"limit": "10"}, "'limit' must be an integer, got str"),
        ({"limit": True}, "'limit' must be an integer, got bool"),
        ({"cursor": 5}, "'cursor' must be the string"),
        ({"cursor": "!!not-ours"}, "is not a cursor this service gave out"),
        ({"page": 2}, "unknown key(s) 'page'"),
    ],
)
async def test_a_bad_page_request_gets_400(daemon: Daemon, nc: Any, body: dict[str, Any], message: str) -> None:
    reply = await ask(nc, SUBJECTS.load("orders"), body)
    assert reply.error_code == 400 and message in reply.value["error"]["message"]


async def test_paging_returns_every_one_of_5000_orders_exactly_once(daemon: Daemon, nc: Any, redis_server: Any) -> None:
    ids = store_orders(redis_server.url, 5000)
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        body: dict[str, Any] = {"limit": 700} if cursor is None else {"limit": 700, "cursor": cursor}
        reply = await ask(nc, SUBJECTS.load("orders"), body, as_msgpack=True)
        assert reply.error_code is None
        assert len(reply.value) <= 700
        seen.extend(reply.value)
        pages += 1
        cursor = reply.cursor
        if cursor is None:
            break
    assert pages == 8  # 7 full pages and one of 100: the last page carries no cursor
    assert sorted(seen) == ids and len(seen) == len(set(seen))
    # Unpaged, 5,000 snapshots with their events exceed the server's 1 MB max payload.
    too_big = await ask(nc, SUBJECTS.load("orders"))
    assert too_big.error_code == 413
    assert "page the request" in too_big.value["error"]["message"]
    stats = (await ask(nc, SUBJECTS.load("stats"))).value
    assert stats["trader_id"] == TRADER and stats["keys"]["orders"] == 5000
    # A page asked bigger than fits is cut to fit, and its cursor continues right after it.
    again: list[str] = []
    cursor = None
    cut = False
    while True:
        body = {"limit": 5000} if cursor is None else {"limit": 5000, "cursor": cursor}
        reply = await ask(nc, SUBJECTS.load("orders"), body)
        assert reply.error_code is None
        cut = cut or (len(reply.value) < 5000 and reply.cursor is not None)
        again.extend(reply.value)
        cursor = reply.cursor
        if cursor is None:
            break
    assert cut and again == ids


async def test_a_page_built_ahead_is_served_only_while_nothing_was_committed_since(
    daemon: Daemon, nc: Any, redis_server: Any, nats_server: Any
) -> None:
    ids = store_orders(redis_server.url, 300)
    first = await ask(nc, SUBJECTS.load("orders"), {"limit": 100}, as_msgpack=True)
    assert list(first.value) == ids[:100] and daemon.service is not None
    await wait_for(lambda: daemon.service is not None and daemon.service.pages_ahead == 1)  # the next page
    # An event for an order of the page built ahead, committed before that page is asked for.
    js_client = await nats.connect(nats_server.url)
    try:
        payload = SERIALIZER.serialize(OrderEvents(client_order_id="O-00150", trader_id=TRADER).submitted())
        sequence = (await js_client.jetstream().publish(SUBJECTS.inbound_for_name("order"), payload)).seq
    finally:
        await js_client.close()
    await wait_for_checkpoint(redis_server.url, TRADER, sequence)
    second = await ask(nc, SUBJECTS.load("orders"), {"limit": 100, "cursor": first.cursor}, as_msgpack=True)
    assert list(second.value) == ids[100:200]
    assert [event["type"] for event in second.value["O-00150"]["events"]] == ["OrderInitialized", "OrderSubmitted"]
    assert second.value["O-00150"]["status"] == "SUBMITTED"
    # Nothing committed since: the third page comes from the build ahead, the same as built anew.
    await wait_for(lambda: daemon.service is not None and daemon.service.pages_ahead == 1)
    third = await ask(nc, SUBJECTS.load("orders"), {"limit": 100, "cursor": second.cursor}, as_msgpack=True)
    assert daemon.service.pages_ahead == 0 and third.cursor is None
    again = await ask(nc, SUBJECTS.load("orders"), {"limit": 100, "cursor": second.cursor}, as_msgpack=True)
    assert third.value == again.value and list(third.value) == ids[200:]


async def test_a_corrupt_stored_value_gets_500_and_the_service_keeps_answering(
    daemon: Daemon, nc: Any, redis_server: Any
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.rpush(daemon.keys.entity(Collection.ORDERS, "BAD"), b"\xc1junk")
    client.close()
    reply = await ask(nc, SUBJECTS.load("order"), {"client_order_id": "BAD"})
    assert reply.error_code == 500 and "internal error" in reply.value["error"]["message"]
    assert (await ask(nc, SUBJECTS.load("order"), {"client_order_id": "O-1"})).value is None


async def test_redis_down_gets_503_and_the_service_answers_again_when_it_is_back(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    config = daemon_config(redis_server.url, nats_server.url, TRADER, redis={"socket_timeout": 1.0})
    async with running_daemon(config):
        assert (await ask(nc, SUBJECTS.load("order"), {"client_order_id": "O-1"})).value is None
        redis_server.stop()
        try:
            reply = await ask(nc, SUBJECTS.load("order"), {"client_order_id": "O-1"})
            assert reply.error_code == 503 and "Redis is unavailable" in reply.value["error"]["message"]
        finally:
            redis_server.start()

        async def answers() -> bool:
            again = await ask(nc, SUBJECTS.load("order"), {"client_order_id": "O-1"})
            return again.error_code is None and again.value is None

        await wait_for(answers, timeout=20, interval=0.2)


async def test_concurrent_requests_are_served_concurrently(daemon: Daemon, nc: Any) -> None:
    replies = await asyncio.gather(*(ask(nc, SUBJECTS.load("stats")) for _ in range(50)))
    assert all(reply.error_code is None for reply in replies)
