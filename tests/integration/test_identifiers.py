"""Identifiers that cannot collide (issue 12): crafted ids, another trader under our key prefix,
and a trader id the configuration refuses, against real servers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
import redis
import yaml

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.unit.factories import SERIALIZER, OrderEvents
from tradecache.cache.keys import Keys
from tradecache.model.identifiers import ClientOrderId
from tradecache.model.ledger import Collection
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration


def packed_order(events: OrderEvents, client_order_id: str) -> bytes:
    """An OrderInitialized for `client_order_id` as a node publishes it (the model refuses crafted
    ids, so the map is edited after encoding, as a hostile producer would)."""
    data = SERIALIZER.to_map(events.initialized())
    data["client_order_id"] = client_order_id
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def plant_other_trader(client: redis.Redis, other: str) -> dict[str, bytes]:
    """Keys a writer for trader `other` (an id with ':', as NautilusTrader accepts) leaves: an
    order and tradecache's index of it. Returns them, to check they stay untouched."""
    order = SERIALIZER.serialize(OrderEvents("O-1", trader_id="OTHER-1").initialized())
    planted = {
        f"trader-{other}:orders:O-1": order,
        f"trader-{other}:tradecache:index:orders": b"O-1",
    }
    client.rpush(f"trader-{other}:orders:O-1", order)
    client.zadd(f"trader-{other}:tradecache:index:orders", {"O-1": 0})
    return planted


async def test_a_crafted_order_id_is_dead_lettered_and_another_traders_keys_stay_untouched(
    redis_server: Any, nats_server: Any
) -> None:
    trader = "CRAFT-118"
    client = redis.Redis.from_url(redis_server.url)
    db = database(redis_server.url, trader)
    db.flush()
    planted = plant_other_trader(client, f"{trader}:orders:X")
    subjects = Subjects("tradecache", trader)
    events = OrderEvents("O-GOOD", trader_id=trader)
    crafted = [
        "X:tradecache:index:orders",  # would append to the other trader's index (WRONGTYPE before)
        "X:orders:O-1",  # would append to the other trader's order
        "O-1\nforged log line",
    ]
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
            for client_order_id in crafted:
                await js.publish(subjects.inbound_for_name("order"), packed_order(events, client_order_id))
            # A ':' alone is fine (a venue's client order id may hold one), and so is the next order.
            await js.publish(subjects.inbound_for_name("order"), packed_order(events, "x:web_1"))
            last = await js.publish(subjects.inbound_for_name("order"), SERIALIZER.serialize(events.initialized()))
            await wait_for_checkpoint(redis_server.url, trader, last.seq)
            counted = daemon.metrics.registry.get_sample_value
            # Metrics are recorded just after the commit the checkpoint shows.
            invalid = {"reason": "invalid_field"}
            await wait_for(lambda: counted("tradecache_dead_letters_total", invalid) == len(crafted))
            assert daemon.is_ready()
        dead = await js.pull_subscribe(subjects.dead, durable=None, stream="TRADECACHE_DEAD")
        letters = await dead.fetch(len(crafted), timeout=5)
    finally:
        await nc.close()
    for letter in letters:
        assert letter.headers["Tradecache-Reason"] == "invalid_field"
        assert "client_order_id" in letter.headers["Tradecache-Error"]
    assert "'index' as a ':'-separated part" in letters[0].headers["Tradecache-Error"]
    assert {key: client.type(key) for key in planted} == {
        f"trader-{trader}:orders:X:orders:O-1": b"list",
        f"trader-{trader}:orders:X:tradecache:index:orders": b"zset",
    }
    assert client.llen(f"trader-{trader}:orders:X:orders:O-1") == 1
    assert db.load_order(ClientOrderId("x:web_1")) is not None
    assert db.load_order(ClientOrderId("O-GOOD")) is not None
    assert set(db.load_orders()) == {"x:web_1", "O-GOOD"}
    db.flush()
    assert client.llen(f"trader-{trader}:orders:X:orders:O-1") == 1  # flush() kept the other trader's keys
    client.delete(*planted)


async def test_the_load_service_never_returns_another_traders_order(redis_server: Any, nats_server: Any) -> None:
    trader = "LOADS-118"
    client = redis.Redis.from_url(redis_server.url)
    db = database(redis_server.url, trader)
    db.flush()
    planted = plant_other_trader(client, f"{trader}:orders:X")
    # Our own order, written by the daemon, and the marker dropped so that the start adopts by SCAN.
    subjects = Subjects("tradecache", trader)
    events = OrderEvents("O-MINE", trader_id=trader)
    nc = await nats.connect(nats_server.url)
    try:
        config = daemon_config(redis_server.url, nats_server.url, trader)
        async with running_daemon(config):
            last = await nc.jetstream().publish(
                subjects.inbound_for_name("order"), SERIALIZER.serialize(events.initialized())
            )
            await wait_for_checkpoint(redis_server.url, trader, last.seq)
        client.delete(Keys(trader).indexed(), Keys(trader).index(Collection.ORDERS))
        async with running_daemon(config):

            async def load(name: str, body: dict[str, Any] | None = None) -> Any:
                reply = await nc.request(subjects.load(name), json.dumps(body or {}).encode(), timeout=10)
                return json.loads(reply.data)

            orders = await load("orders")
            theirs = await load("order", {"client_order_id": "X:orders:O-1"})
    finally:
        await nc.close()
    assert set(orders) == {"O-MINE"}
    assert theirs is None
    assert db.load_order("X:orders:O-1") is None  # type: ignore[arg-type]  # a plain str, as a caller may pass
    assert set(db.load_orders()) == {"O-MINE"}
    db.flush()
    client.delete(*planted)


def test_tradecache_run_refuses_a_trader_id_with_a_colon_and_writes_nothing(
    tmp_path: Path, redis_server: Any, nats_server: Any
) -> None:
    trader = "FX-118:orders:X"
    config = {
        "trader_id": trader,
        "redis": {"url": redis_server.url},
        "nats": {"servers": [nats_server.url]},
        "http": {"listen": "127.0.0.1:0"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "tradecache", "run", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "trader_id: must be NAME-TAG" in result.stderr and repr(trader) in result.stderr
    assert "Traceback" not in result.stderr
    client = redis.Redis.from_url(redis_server.url)
    assert list(client.scan_iter(match="trader-FX-118:orders:X*")) == []


def test_the_python_api_refuses_a_trader_id_with_a_colon(redis_server: Any) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        database(redis_server.url, "FX-118:orders:X")


def test_a_crafted_currency_code_is_refused_when_decoded() -> None:
    data = {"type": "Currency", "code": "X:tradecache:lease", "precision": 2, "iso4217": 0, "name": "x",
            "currency_type": "CRYPTO"}  # fmt: skip
    with pytest.raises(Exception, match="'tradecache' as a ':'-separated part"):
        SERIALIZER.deserialize(msgpack.packb(data))
    assert dataclasses.is_dataclass(SERIALIZER.deserialize(msgpack.packb({**data, "code": "USDT"})))


async def test_a_trader_id_with_dots_works_end_to_end_beside_the_trader_it_extends(
    redis_server: Any, nats_server: Any
) -> None:
    """SPEC section 7 allows `.` in a trader id. `DOTS-1.DESK-2` gets a consumer name JetStream
    accepts, stores and loads its own order; `DOTS-1`, whose filter `<prefix>.in.DOTS-1.>` also
    matches the longer id's subjects, dead-letters them as `wrong_subject` and stores nothing of
    them (the longer id's own sidecar stores them: nothing is lost)."""
    short, dotted = "DOTS-1", "DOTS-1.DESK-2"
    for trader in (short, dotted):
        database(redis_server.url, trader).flush()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        short_config = daemon_config(redis_server.url, nats_server.url, short)
        dotted_config = daemon_config(redis_server.url, nats_server.url, dotted)
        assert dotted_config.nats.consumer_name.startswith("tradecache-DOTS-1_DESK-2-")
        async with running_daemon(short_config) as short_daemon, running_daemon(dotted_config):
            mine = await js.publish(
                Subjects("tradecache", short).inbound_for_name("order"),
                SERIALIZER.serialize(OrderEvents("O-SHORT", trader_id=short).initialized()),
            )
            theirs = await js.publish(
                Subjects("tradecache", dotted).inbound_for_name("order"),
                SERIALIZER.serialize(OrderEvents("O-DOTTED", trader_id=dotted).initialized()),
            )
            await wait_for_checkpoint(redis_server.url, short, max(mine.seq, theirs.seq))
            await wait_for_checkpoint(redis_server.url, dotted, theirs.seq)
            reply = await nc.request(
                Subjects("tradecache", dotted).load("order"),
                json.dumps({"client_order_id": "O-DOTTED"}).encode(),
                timeout=10,
            )
            counted = short_daemon.metrics.registry.get_sample_value
            assert counted("tradecache_dead_letters_total", {"reason": "wrong_subject"}) == 1
    finally:
        await nc.close()
    loaded = json.loads(reply.data)
    assert loaded["status"] == "INITIALIZED" and loaded["event_count"] == 1
    assert set(database(redis_server.url, dotted).load_orders()) == {"O-DOTTED"}
    assert set(database(redis_server.url, short).load_orders()) == {"O-SHORT"}
    for trader in (short, dotted):
        database(redis_server.url, trader).flush()
