"""The Python clients (`Publisher`, `CacheClient`) and `tradecache load`, against a running sidecar."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for_checkpoint
from tests.unit.test_display import columns
from tests.vectors.scenarios import Scenario, scenario_paths
from tradecache.client import CacheClient, LoadError, Publisher
from tradecache.daemon.app import Daemon
from tradecache.model.events import StrategyState
from tradecache.model.identifiers import AccountId, ClientOrderId, OrderListId, PositionId, StrategyId, TraderId
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.snapshots import account_snapshot, order_snapshot, position_snapshot

pytestmark = pytest.mark.integration

PATHS = scenario_paths()
SERIALIZER = MsgPackSerializer(timestamps_as_str=True)


async def publish_with_client(nats_url: str, scenario: Scenario) -> int:
    """Every scenario message decoded into the model and published by `Publisher`."""
    nc = await nats.connect(nats_url)
    try:
        publisher = Publisher(nc.jetstream(), scenario.trader_id)
        last = 0
        for _kind, _type, payload in scenario.messages:
            last = (await publisher.publish(SERIALIZER.deserialize(payload))).seq
        return last
    finally:
        await nc.close()


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
async def test_published_by_publisher_and_loaded_by_cache_client_equal_the_models_replay(
    path: Path, redis_server: Any, nats_server: Any
) -> None:
    scenario = Scenario.load(path)
    db = database(redis_server.url, scenario.trader_id)
    db.flush()
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, scenario.trader_id)):
        last = await publish_with_client(nats_server.url, scenario)
        await wait_for_checkpoint(redis_server.url, scenario.trader_id, last)
        nc = await nats.connect(nats_server.url)
        try:
            cache = CacheClient(nc, scenario.trader_id)
            orders = await cache.load_orders()
            # The model's own replay of what was stored: the Python API's loads.
            assert orders.keys() == {k.value for k in db.load_orders()}
            for client_order_id, order in orders.items():
                replayed = db.load_order(ClientOrderId(client_order_id))
                assert replayed is not None
                assert order.events == replayed.events
                assert (order.status, order.quantity, order.filled_qty) == (
                    replayed.status,
                    replayed.quantity,
                    replayed.filled_qty,
                )
                assert order_snapshot(order) == scenario.expected["orders"][client_order_id]
                single = await cache.load_order(client_order_id)
                assert single is not None and single.events == order.events
            positions = await cache.load_positions()
            assert {k: position_snapshot(p) for k, p in positions.items()} == scenario.expected["positions"]
            for position_id in positions:
                single_position = await cache.load_position(position_id)
                expected_position = db.load_position(PositionId(position_id))
                assert single_position is not None and expected_position is not None
                assert single_position.events == expected_position.events
            accounts = await cache.load_accounts()
            assert {k: account_snapshot(a) for k, a in accounts.items()} == scenario.expected["accounts"]
            for account_id in accounts:
                single_account = await cache.load_account(account_id)
                assert single_account is not None
                assert single_account.events == db.load_account(AccountId(account_id)).events  # type: ignore[union-attr]
            assert sorted(await cache.load_instruments()) == scenario.expected["instruments"]
            assert sorted(await cache.load_currencies()) == scenario.expected["currencies"]
            commands = await cache.load_submit_order_commands()
            assert sorted(commands) == sorted(scenario.expected["submit_order_commands"])
            for key, command in commands.items():
                assert command == db.load_submit_order_command(ClientOrderId(key))
                assert await cache.load_submit_order_command(key) == command
            lists = await cache.load_submit_order_list_commands()
            assert sorted(lists) == sorted(scenario.expected["submit_order_list_commands"])
            for key, order_list in lists.items():
                assert order_list == db.load_submit_order_list_command(OrderListId(key))
            assert await cache.load_order("NO-SUCH-ORDER") is None
            assert await cache.load_position("NO-SUCH-POSITION") is None
        finally:
            await nc.close()
    db.flush()


TRADER = "CLIENT-001"


@pytest.fixture
async def daemon(redis_server: Any, nats_server: Any) -> AsyncIterator[Daemon]:
    database(redis_server.url, TRADER).flush()
    async with running_daemon(daemon_config(redis_server.url, nats_server.url, TRADER)) as running:
        yield running
    database(redis_server.url, TRADER).flush()


def as_our_trader(payload: bytes) -> Any:
    """A vector message moved to TRADER with a fresh event id (JetStream's duplicate window
    remembers the ids other tests published)."""
    message = SERIALIZER.deserialize(payload)
    if hasattr(message, "trader_id"):
        message.trader_id = TraderId(TRADER)
    if hasattr(message, "event_id"):
        message.event_id = str(uuid.uuid4())
    return message


async def test_publisher_sets_the_message_id_so_jetstream_drops_a_republish(daemon: Daemon, nats_server: Any) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    message = as_our_trader(next(p for k, _t, p in scenario.messages if k == "order_event"))
    nc = await nats.connect(nats_server.url)
    try:
        publisher = Publisher(nc.jetstream(), TRADER)
        assert publisher.subject_of(message) == f"tradecache.in.{TRADER}.order"
        first = await publisher.publish(message)
        again = await publisher.publish(message)
        assert not first.duplicate and again.duplicate and again.seq == first.seq
        assert await publisher.publish_many([message, message]) == 2
    finally:
        await nc.close()


async def test_strategy_state_and_errors_through_the_client(
    daemon: Daemon, nats_server: Any, redis_server: Any
) -> None:
    db = database(redis_server.url, TRADER)
    db.update_strategy(
        StrategyState(trader_id=TraderId(TRADER), strategy_id=StrategyId("S-001"), state={"a": b"\x00\xff"}, ts_event=1)
    )
    nc = await nats.connect(nats_server.url)
    try:
        cache = CacheClient(nc, TRADER)
        assert await cache.load_strategy("S-001") == {"a": b"\x00\xff"}
        assert await cache.load_strategy("S-NONE") == {}
        with pytest.raises(LoadError) as refused:
            await cache.request("order", {"client_order_id": 5})
        assert refused.value.code == 400 and "must be a string" in refused.value.message
        stats = await cache.stats()
        assert stats["trader_id"] == TRADER and stats["keys"]["strategies"] >= 0
    finally:
        await nc.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradecache", "load", *args], capture_output=True, text=True, timeout=60
    )


async def test_the_load_command_prints_json_and_exits_0_1_or_2(daemon: Daemon, nats_server: Any) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    nc = await nats.connect(nats_server.url)
    publisher = Publisher(nc.jetstream(), TRADER)
    last = 0
    for _kind, _type, payload in scenario.messages:
        last = (await publisher.publish(as_our_trader(payload))).seq
    await nc.close()
    await wait_for_checkpoint(daemon.config.redis.url, TRADER, last)
    (client_order_id,) = scenario.expected["orders"]
    target = ("--nats", nats_server.url, "--trader", TRADER)

    found = await asyncio.to_thread(run_cli, "order", client_order_id, *target)
    assert found.returncode == 0, found.stderr
    order = json.loads(found.stdout)
    assert order["status"] == scenario.expected["orders"][client_order_id]["status"]
    assert found.stdout.startswith("{\n  ")  # pretty

    orders = await asyncio.to_thread(run_cli, "orders", *target)
    assert orders.returncode == 0 and list(json.loads(orders.stdout)) == [client_order_id]

    missing = await asyncio.to_thread(run_cli, "order", "NO-SUCH", *target)
    assert missing.returncode == 1 and missing.stdout.strip() == "null"
    assert missing.stderr == f"tradecache: load order: not found: trader {TRADER} has no order NO-SUCH stored\n"

    unknown = await asyncio.to_thread(run_cli, "orderz", *target)
    assert unknown.returncode == 2 and "unknown load 'orderz'" in unknown.stderr
    no_id = await asyncio.to_thread(run_cli, "order", *target)
    assert no_id.returncode == 2 and "needs an id (client_order_id)" in no_id.stderr
    nobody = await asyncio.to_thread(run_cli, "order", "O-1", "--nats", nats_server.url, "--trader", "NOBODY-001")
    assert nobody.returncode == 2
    assert nobody.stderr == (
        "tradecache: load order: no sidecar answers for trader NOBODY-001 on tradecache.load.NOBODY-001.*: "
        "is it running, is the trader id right?\n"
    )
    unreachable = await asyncio.to_thread(run_cli, "stats", "--nats", "nats://127.0.0.1:1", "--trader", TRADER)
    assert unreachable.returncode == 2 and "cannot connect to NATS" in unreachable.stderr


async def test_the_load_command_shows_a_vector_scenario_as_tables_and_is_quiet_when_asked(
    daemon: Daemon, nats_server: Any
) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "limit_partial_fills_then_cancel"))
    nc = await nats.connect(nats_server.url)
    publisher = Publisher(nc.jetstream(), TRADER)
    last = 0
    for _kind, _type, payload in scenario.messages:
        last = (await publisher.publish(as_our_trader(payload))).seq
    await nc.close()
    await wait_for_checkpoint(daemon.config.redis.url, TRADER, last)
    target = ("--nats", nats_server.url, "--trader", TRADER)
    (order_id,), (position_id,) = scenario.expected["orders"], scenario.expected["positions"]

    orders = await asyncio.to_thread(run_cli, "orders", "--table", *target)
    assert orders.returncode == 0, orders.stderr
    # Earlier tests' orders of TRADER may be listed too (the stream still holds them).
    (order,) = [row for row in columns(orders.stdout) if row["ORDER"] == order_id]
    assert (order["ORDER"], order["STATUS"], order["PRICE"], order["AVG PX"]) == (order_id, "CANCELED", "91250.00",
                                                                                  "91249.69")  # fmt: skip
    assert order["UPDATED"] == "2025-11-27T17:01:08.781965951Z"

    position = await asyncio.to_thread(run_cli, "position", position_id, "-o", "table", *target)
    assert position.returncode == 0, position.stderr
    (row,) = columns(position.stdout)
    assert (row["SIDE"], row["QTY"], row["AVG OPEN"], row["REALIZED PNL"]) == ("LONG", "0.515000", "91249.69",
                                                                               "-46.99359250 USDT")  # fmt: skip
    assert row["OPENED"] == "2025-11-27T17:01:07.787028734Z" and row["CLOSED"] == "-"

    accounts = await asyncio.to_thread(run_cli, "accounts", "-o", "table", *target)
    (account_id,) = scenario.expected["accounts"]
    assert [(r["TOTAL"], r["FREE"]) for r in columns(accounts.stdout) if r["ACCOUNT"] == account_id] == [
        ("0.61500000 BTC", "0.61500000 BTC"), ("102959.41390750 USDT", "102959.41390750 USDT")
    ]  # fmt: skip

    quiet = await asyncio.to_thread(run_cli, "order", order_id, "--quiet", *target)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    quiet_missing = await asyncio.to_thread(run_cli, "order", "NO-SUCH", "-q", "--table", *target)
    assert (quiet_missing.returncode, quiet_missing.stdout, quiet_missing.stderr) == (1, "", "")
    missing = await asyncio.to_thread(run_cli, "position", "NO-SUCH", "--table", *target)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == f"tradecache: load position: not found: trader {TRADER} has no position NO-SUCH stored\n"
    no_table = await asyncio.to_thread(run_cli, "stats", "--table", *target)
    assert no_table.returncode == 2 and "'-o table' shows order, orders, position" in no_table.stderr
