"""The load service's limits, against a real daemon, Redis and NATS: a hostile or careless client
gets a quick, short, specific answer, and costs the sidecar no more than its limits allow."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
import nats
import pytest
import redis

from tests.integration.daemon_harness import daemon_config, database, running_daemon
from tests.integration.load_helpers import ask
from tests.unit.factories import SERIALIZER, OrderEvents, currency_pair
from tradecache.client import CacheClient
from tradecache.daemon.app import Daemon
from tradecache.load_command import LoadRequest, run_load
from tradecache.model import Collection
from tradecache.model.instruments import Instrument
from tradecache.model.orders import Order
from tradecache.serialization.deep import json_value
from tradecache.service.limits import MAX_ERROR_CHARS
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

TRADER = f"LIMITS-{secrets.token_hex(3)}"
SUBJECTS = Subjects("tradecache", TRADER)
DEPTH = 1000


@pytest.fixture(autouse=True)
def empty_trader(redis_server: Any) -> Iterator[None]:
    database(redis_server.url, TRADER).flush()
    yield
    database(redis_server.url, TRADER).flush()


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def store_orders(redis_url: str, count: int) -> list[str]:
    db = database(redis_url, TRADER)
    ids = [f"O-{n:05d}" for n in range(count)]
    with db.batch():
        for client_order_id in ids:
            make = OrderEvents(client_order_id=client_order_id, trader_id=TRADER)
            order = Order(make.initialized())
            db.add_order(order)
            for event in (make.submitted(), make.accepted()):
                order.apply(event)
                db.update_order(order)
    db.close()
    return ids


def sample(daemon: Daemon, name: str, **labels: str) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per Redis command since the last CONFIG RESETSTAT (`INFO commandstats`)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


# -- requests in flight ----------------------------------------------------------------------


async def test_requests_beyond_max_in_flight_are_answered_busy_at_once_and_counted(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    store_orders(redis_server.url, 2000)
    config = daemon_config(redis_server.url, nats_server.url, TRADER, load={"max_in_flight": 2, "max_page_builds": 1})
    async with running_daemon(config) as daemon:
        replies = await asyncio.gather(*(ask(nc, SUBJECTS.load("orders"), {"limit": 1000}) for _ in range(12)))
        codes = [reply.error_code for reply in replies]
        busy = [reply for reply in replies if reply.error_code == 429]
        assert busy and codes.count(None) >= 2, codes  # two admitted (one building, one waiting)
        assert set(codes) <= {None, 429}, codes
        for reply in busy:
            assert reply.headers["Nats-Service-Error"].startswith("busy: 2 load requests in flight")
            assert reply.value == {"error": {"code": 429, "message": reply.headers["Nats-Service-Error"]}}
        assert sample(daemon, "tradecache_load_shed_total", endpoint="orders", reason="busy") == len(busy)
        ok = sample(daemon, "tradecache_load_requests_total", endpoint="orders", outcome="ok")
        assert ok == codes.count(None)
        stats = json.loads((await nc.request("$SRV.STATS.tradecache", b"", timeout=5)).data)
        orders = next(endpoint for endpoint in stats["endpoints"] if endpoint["name"] == "orders")
        assert orders["num_requests"] == 12 and orders["num_errors"] == len(busy)


async def test_cache_client_waits_out_a_busy_sidecar(redis_server: Any, nats_server: Any, nc: Any) -> None:
    ids = store_orders(redis_server.url, 1500)
    config = daemon_config(redis_server.url, nats_server.url, TRADER, load={"max_in_flight": 1, "max_page_builds": 1})
    async with running_daemon(config) as daemon:
        client = CacheClient(nc, TRADER, timeout=30)
        collections = await asyncio.gather(*(client.collection("orders", 500) for _ in range(4)))
        assert all(sorted(items) == ids for items in collections)
        assert sample(daemon, "tradecache_load_shed_total", endpoint="orders", reason="busy") > 0


# -- request bodies, replies that echo them, reply subjects ------------------------------------


async def test_a_request_body_over_the_cap_is_refused_without_being_read(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    store_orders(redis_server.url, 1)
    config = daemon_config(redis_server.url, nats_server.url, TRADER, load={"max_request_bytes": 1024})
    async with running_daemon(config) as daemon:
        body = b'{"client_order_id": "O-00000"}'
        at_cap = body + b" " * (1024 - len(body))
        assert (await ask(nc, SUBJECTS.load("order"), raw=at_cap)).value["status"] == "ACCEPTED"
        big = b'{"client_order_id": "' + b"O" * 5000 + b'"}'
        reply = await ask(nc, SUBJECTS.load("order"), raw=big)
        assert reply.error_code == 400
        assert reply.value["error"]["message"] == (
            f"the request body has {len(big)} bytes, more than the 1024 a load request may have "
            "(load.max_request_bytes)"
        )
        assert sample(daemon, "tradecache_load_requests_total", endpoint="order", outcome="error") == 1


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("order", {"client_order_id": "x" * 10_000 + " "}),
        ("order", {"client_order_id": "O-1", "k" * 10_000: 1}),
        ("orders", {"cursor": "!" * 10_000}),
    ],
    ids=["padded-id", "unknown-key", "bad-cursor"],
)
async def test_an_error_reply_quotes_only_a_short_prefix_of_the_request(
    redis_server: Any, nats_server: Any, nc: Any, endpoint: str, body: dict[str, Any]
) -> None:
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)):
        raw = json.dumps(body).encode()
        reply = await nc.request(SUBJECTS.load(endpoint), raw, timeout=10)
        headers = reply.headers or {}
        assert headers["Nats-Service-Error-Code"] == "400"
        message = json.loads(reply.data)["error"]["message"]
        assert len(message) <= MAX_ERROR_CHARS and len(headers["Nats-Service-Error"]) <= MAX_ERROR_CHARS
        assert len(reply.data) < 2 * MAX_ERROR_CHARS


async def test_requests_without_a_reply_subject_are_dropped_unexecuted_and_counted(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    store_orders(redis_server.url, 50)
    client = redis.Redis.from_url(redis_server.url)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)) as daemon:
        client.config_resetstat()
        for _ in range(40):
            await nc.publish(SUBJECTS.load("orders"), b"")  # no reply subject: nobody would read the answer
        # The endpoint handles its requests in order: once this one is answered, the 40 were handled.
        # (All 50 orders: the last page, so no next page is built ahead and read too.)
        assert (await ask(nc, SUBJECTS.load("orders"), {"limit": 50})).error_code is None
        calls = command_calls(client)
    client.close()
    assert sample(daemon, "tradecache_load_shed_total", endpoint="orders", reason="no_reply") == 40
    assert sample(daemon, "tradecache_load_requests_total", endpoint="orders", outcome="ok") == 1
    # The one answered request: its ids, then its 50 orders' lists (pipelined, cache/lists.py).
    assert calls.get("zrangebylex") == 1 and calls.get("lrange") == 50 and "evalsha" not in calls, calls


# -- collections too big for one reply ------------------------------------------------------------


async def test_an_unpaged_collection_too_big_for_a_reply_is_refused_from_its_index_size_before_any_read(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    # 4,000 ids in the index: no order item is smaller than ~380 bytes, 4,000 of them exceed 1 MB.
    client = redis.Redis.from_url(redis_server.url)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)) as daemon:
        client.zadd(daemon.keys.index(Collection.ORDERS), {f"O-{n:05d}": 0 for n in range(4000)})
        client.config_resetstat()
        reply = await ask(nc, SUBJECTS.load("orders"))
        calls = command_calls(client)
    client.close()
    assert reply.error_code == 413
    assert reply.value["error"]["message"].startswith("4000 items exceed the NATS max payload")
    assert "page the request" in reply.value["error"]["message"]
    assert calls.get("zcard", 0) >= 1
    assert "zrangebylex" not in calls and "evalsha" not in calls and "lrange" not in calls, calls


async def test_an_unpaged_collection_is_built_within_one_reply_and_refused_when_it_overflows(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    ids = store_orders(redis_server.url, 1500)  # ~1,500 x 1.9 KB in JSON: more than 1 MB
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)):
        reply = await ask(nc, SUBJECTS.load("orders"))
        assert reply.error_code == 413
        assert reply.value["error"]["message"].startswith("more than")
        pages = await CacheClient(nc, TRADER).collection("orders", 10_000)  # cut to fit, continued by cursor
        assert sorted(pages) == ids


def store_order_of(redis_url: str, client_order_id: str, updates: int) -> None:
    """An accepted order, then `updates` OrderUpdated events (allowed in every status)."""
    db = database(redis_url, TRADER)
    make = OrderEvents(client_order_id=client_order_id, trader_id=TRADER)
    order = Order(make.initialized())
    with db.batch():
        db.add_order(order)
        for event in (make.submitted(), make.accepted(), *(make.updated(str(100 + n)) for n in range(updates))):
            order.apply(event)
            db.update_order(order)
    db.close()


async def test_a_page_whose_first_item_alone_is_too_large_says_which_and_how_to_go_on(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    # O-1 holds 4,000 events (~1.6 MB of JSON): no reply can carry it. A paging client used to
    # be answered 413 at it, again and again; the error now carries the cursor after it.
    store_order_of(redis_server.url, "O-0", 0)
    store_order_of(redis_server.url, "O-1", 4000)
    store_order_of(redis_server.url, "O-2", 0)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)):
        first = await ask(nc, SUBJECTS.load("orders"), {"limit": 10})
        assert list(first.value) == ["O-0"] and first.cursor is not None  # cut before O-1
        stuck = await ask(nc, SUBJECTS.load("orders"), {"limit": 10, "cursor": first.cursor})
        assert stuck.error_code == 413
        message = stuck.value["error"]["message"]
        assert "O-1" in message and "alone exceeds the NATS max payload" in message, message
        assert "continues after it" in message and "max_payload" in message and len(message) <= MAX_ERROR_CHARS
        assert stuck.cursor is not None
        after = await ask(nc, SUBJECTS.load("orders"), {"limit": 10, "cursor": stuck.cursor})
        assert list(after.value) == ["O-2"] and after.cursor is None
        single = await ask(nc, SUBJECTS.load("order"), {"client_order_id": "O-1"})
        assert single.error_code == 413 and single.cursor is None
        assert "max_payload" in single.value["error"]["message"]
        # Unpaged: the cut collection is refused whole, with no cursor to follow.
        unpaged = await ask(nc, SUBJECTS.load("orders"))
        assert unpaged.error_code == 413 and unpaged.cursor is None


# -- formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "accept", "as_msgpack"),
    [
        ("Accept", "APPLICATION/MSGPACK", True),
        ("accept", " Application/MsgPack ", True),
        ("ACCEPT", "application/msgpack; q=1", True),
        ("Accept", "text/plain, APPLICATION/X-MSGPACK;q=0.5", True),
        ("Accept", "application/msgpack;q=0, application/json", False),
    ],
)
async def test_accept_is_matched_in_any_case_and_with_parameters(
    redis_server: Any, nats_server: Any, nc: Any, header: str, accept: str, as_msgpack: bool
) -> None:
    store_orders(redis_server.url, 1)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)):
        reply = await nc.request(
            SUBJECTS.load("order"), b'{"client_order_id": "O-00000"}', timeout=10, headers={header: accept}
        )
        item = msgpack.unpackb(reply.data, raw=False) if as_msgpack else json.loads(reply.data)
        assert item["status"] == "ACCEPTED"
        if as_msgpack:
            with pytest.raises(ValueError):
                json.loads(reply.data)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, dict) and value:
        value = next(iter(value.values()))
        depth += 1
    return depth


def store_deep_order_and_instrument(redis_url: str) -> None:
    """An order whose fill's `info`, and an instrument whose `info`, nest DEPTH maps deep."""
    db = database(redis_url, TRADER)
    make = OrderEvents(client_order_id="O-DEEP", trader_id=TRADER)
    order = Order(make.initialized())
    db.add_order(order)
    for event in (make.submitted(), make.accepted(), make.filled("100", info=nested(DEPTH))):
        order.apply(event)
        db.update_order(order)
    data = {**SERIALIZER.to_map(currency_pair("DEEP/USD.SIM")), "info": nested(DEPTH)}
    instrument = SERIALIZER.from_map(data)
    assert isinstance(instrument, Instrument)
    db.add_instrument(instrument)
    db.close()


async def test_json_and_msgpack_replies_hold_data_nested_1000_deep(
    redis_server: Any, nats_server: Any, nc: Any
) -> None:
    store_deep_order_and_instrument(redis_server.url)
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)) as daemon:
        for as_msgpack in (False, True):
            headers = {"Accept": "application/msgpack"} if as_msgpack else None
            for endpoint, body in (("orders", b""), ("order", b'{"client_order_id": "O-DEEP"}')):
                reply = await nc.request(SUBJECTS.load(endpoint), body, timeout=10, headers=headers)
                assert "Nats-Service-Error-Code" not in (reply.headers or {}), reply.headers
                value = msgpack.unpackb(reply.data, raw=False) if as_msgpack else json_value(reply.data)
                order = value["O-DEEP"] if endpoint == "orders" else value
                assert order["status"] == "FILLED" and depth_of(order["events"][-1]["info"]) == DEPTH
            for endpoint, body in (("instruments", b""), ("instrument", b'{"instrument_id": "DEEP/USD.SIM"}')):
                reply = await nc.request(SUBJECTS.load(endpoint), body, timeout=10, headers=headers)
                assert "Nats-Service-Error-Code" not in (reply.headers or {}), reply.headers
                value = msgpack.unpackb(reply.data, raw=False) if as_msgpack else json_value(reply.data)
                instrument = value["DEEP/USD.SIM"] if endpoint == "instruments" else value
                assert depth_of(instrument["info"]) == DEPTH
        assert sample(daemon, "tradecache_load_requests_total", endpoint="orders", outcome="error") == 0
        out = io.StringIO()
        assert await run_load(daemon.config, LoadRequest("orders", timeout=10), out=out) == 0
        printed = json_value(out.getvalue())
        assert depth_of(printed["O-DEEP"]["events"][-1]["info"]) == DEPTH
