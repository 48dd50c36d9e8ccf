"""redis.layout against a real Redis, and adoption: indexes built by SCAN when another writer filled Redis."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from typing import Any

import msgpack
import nats
import pytest
import redis

from tests.integration.daemon_harness import (
    daemon_config,
    publish_scenario,
    running_daemon,
    wait_for_checkpoint,
)
from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_cache_database import loaded_state, write_through_api
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.adoption import INDEX_SCRIPT
from tradecache.cache.keys import Keys
from tradecache.model import Collection
from tradecache.model.enums import CurrencyType
from tradecache.model.events import StrategyState
from tradecache.model.identifiers import StrategyId, TraderId
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration

SCENARIO = next(p for p in scenario_paths() if p.stem == "currencies_and_instruments_catalog")
FLIP = next(p for p in scenario_paths() if p.stem == "position_flip_long_to_short_netting")
OLD = next(p for p in scenario_paths() if p.stem == "limit_modified_then_filled")
CHF_MAP = {"precision": 2, "iso4217": 756, "name": "Swiss franc", "currency_type": "FIAT"}
CHF = Currency("CHF", 2, 756, "Swiss franc", CurrencyType.FIAT)


def make_db(url: str, trader_id: str, layout: str) -> RedisCacheDatabase:
    config = CacheDatabaseConfig.from_url(url, layout=layout)
    return RedisCacheDatabase(TraderId(trader_id), logging.getLogger("tests"), MsgPackSerializer(), config)


def state(fields: dict[str, bytes]) -> StrategyState:
    return StrategyState(trader_id=TraderId("LAY-1"), strategy_id=StrategyId("S-1"), state=fields, ts_event=1)


def drop_our_keys(client: redis.Redis, trader_id: str) -> None:
    """Leave only the collections, as NautilusTrader's own cache database would have written them."""
    for key in client.scan_iter(match=f"trader-{trader_id}:tradecache:*"):
        client.delete(key)


def test_the_nautilus_layout_writes_what_nautilus_trader_reads_and_both_layouts_read_it(redis_server: Any) -> None:
    client = redis.Redis.from_url(redis_server.url)
    nautilus, seed = make_db(redis_server.url, "LAY-1", "nautilus"), make_db(redis_server.url, "LAY-1", "seed")
    nautilus.flush()
    nautilus.add_currency(CHF)
    nautilus.update_strategy(state({"k": b"\x00v"}))
    assert client.type("trader-LAY-1:currencies:CHF") == b"string"
    assert msgpack.unpackb(client.get("trader-LAY-1:currencies:CHF")) == CHF_MAP
    assert msgpack.unpackb(client.get("trader-LAY-1:strategies:S-1:state")) == {"k": b"\x00v"}
    for db in (nautilus, seed):
        assert db.load_currency("CHF") == CHF
        assert db.load_currencies() == {"CHF": CHF}
        assert db.load_strategy(StrategyId("S-1")) == {"k": b"\x00v"}

    # Switching back to seed replaces the other form (no WRONGTYPE, no stale copy left behind).
    seed.add_currency(CHF)
    seed.update_strategy(state({"k": b"new"}))
    assert client.type("trader-LAY-1:currencies:CHF") == b"hash"
    assert not client.exists("trader-LAY-1:strategies:S-1:state")
    assert nautilus.load_strategy(StrategyId("S-1")) == {"k": b"new"}
    assert nautilus.load_currency("CHF") == CHF
    nautilus.delete_strategy(StrategyId("S-1"))
    assert nautilus.load_strategy(StrategyId("S-1")) == {}
    nautilus.flush()


def test_loads_of_a_redis_without_our_indexes_build_them_once_by_scan(redis_server: Any) -> None:
    scenario = Scenario.load(SCENARIO)
    client = redis.Redis.from_url(redis_server.url)
    writer = make_db(redis_server.url, scenario.trader_id, "seed")
    writer.flush()
    write_through_api(writer, scenario)
    expected = loaded_state(writer)
    drop_our_keys(client, scenario.trader_id)
    keys = Keys(scenario.trader_id)

    reader = make_db(redis_server.url, scenario.trader_id, "nautilus")
    assert not client.exists(keys.index(Collection.INSTRUMENTS))
    assert loaded_state(reader) == expected
    assert client.get(keys.indexed()) == b"1"
    report = reader.build_indexes()
    assert report.skipped
    forced = reader.build_indexes(force=True)
    assert (forced.skipped, forced.added, forced.entities) == (False, 0, sum(len(v) for v in expected.values()))
    reader.flush()
    assert list(client.scan_iter(match=f"trader-{scenario.trader_id}:*")) == []


def test_the_index_script_never_indexes_a_key_deleted_since_the_scan(redis_server: Any) -> None:
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys("GONE-1")
    client.delete(keys.index(Collection.ORDERS))
    client.rpush("trader-GONE-1:orders:O-1", b"x")
    index = keys.index(Collection.ORDERS)
    script = client.register_script(INDEX_SCRIPT)
    added = script(keys=["trader-GONE-1:orders:O-1", index, "trader-GONE-1:orders:O-2", index], args=["O-1", "O-2"])
    assert added == 1
    assert client.zrange(keys.index(Collection.ORDERS), 0, -1) == [b"O-1"]
    client.delete("trader-GONE-1:orders:O-1", keys.index(Collection.ORDERS))


async def test_the_daemon_adopts_a_redis_another_writer_filled_while_it_ingests(
    redis_server: Any, nats_server: Any
) -> None:
    trader = "ADOPT-1"  # its own: the session's stream keeps what each test publishes for its trader
    old, new = (retarget(Scenario.load(path), trader) for path in (OLD, FLIP))
    client = redis.Redis.from_url(redis_server.url)
    writer = make_db(redis_server.url, trader, "seed")
    writer.flush()
    # State written by another writer (as NautilusTrader's cache database would): no indexes, and
    # a currency and a strategy state in NautilusTrader's own forms.
    write_through_api(writer, old)
    before = loaded_state(writer)
    drop_our_keys(client, trader)
    client.set(f"trader-{trader}:strategies:S-9:state", msgpack.packb({"x": b"1"}))
    client.set(f"trader-{trader}:currencies:CHF", msgpack.packb(CHF_MAP))

    config = daemon_config(redis_server.url, nats_server.url, trader, redis={"layout": "nautilus"})
    async with running_daemon(config):
        # New messages arrive while the daemon indexes what was there.
        last = await publish_scenario(nats_server.url, new)
        await wait_for_checkpoint(redis_server.url, trader, last)
        subjects = Subjects("tradecache", trader)
        nc = await nats.connect(nats_server.url)
        try:

            async def load(name: str, body: bytes = b"") -> Any:
                return json.loads((await nc.request(subjects.load(name), body, timeout=10)).data)

            orders = await load("orders")
            positions = await load("positions")
            currency = await load("currency", b'{"code": "CHF"}')
            strategy = await load("strategy", b'{"strategy_id": "S-9"}')
        finally:
            await nc.close()
    assert set(orders) == set(before["orders"]) | set(new.expected["orders"])
    assert set(positions) == set(before["positions"]) | set(new.expected["positions"])
    assert currency["iso4217"] == 756
    assert strategy == {"x": "MQ=="}  # bytes as base64 in JSON
    writer.flush()


def retarget(scenario: Scenario, trader: str) -> Scenario:
    """The scenario for another trader (each payload's top-level `trader_id` replaced)."""
    messages = []
    for kind, type_name, payload in scenario.messages:
        data = msgpack.unpackb(payload, raw=False)
        if "trader_id" in data:
            data["trader_id"] = trader
        messages.append((kind, type_name, msgpack.packb(data, use_bin_type=True)))
    return dataclasses.replace(scenario, trader_id=trader, messages=messages)


def test_reindex_forces_a_scan_and_says_what_it_found(redis_server: Any, nats_server: Any) -> None:
    scenario = Scenario.load(SCENARIO)
    client = redis.Redis.from_url(redis_server.url)
    writer = make_db(redis_server.url, scenario.trader_id, "seed")
    writer.flush()
    write_through_api(writer, scenario)
    drop_our_keys(client, scenario.trader_id)
    daemon = DaemonProcess({"trader_id": scenario.trader_id, "redis": {"url": redis_server.url}})
    command = [sys.executable, "-m", "tradecache", "reindex", "--config", str(daemon.config_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, env=daemon.env)
    assert first.returncode == 0, first.stderr
    entities = len(writer.load_instruments()) + len(writer.load_currencies())
    assert f"{entities} entities, {entities} added to the indexes" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=60, env=daemon.env)
    assert f"{entities} entities, 0 added" in second.stdout
    writer.flush()
