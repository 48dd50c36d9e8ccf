"""Retention (issue 12) against real servers, with ingest running: closed orders with their
commands and closed positions removed after their age, account states trimmed, nothing open
touched, no dedupe or index residue, a late event for a purged order refused as purged."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from typing import Any

import nats
import pytest
import redis
import redis.asyncio

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.unit.factories import SERIALIZER, OrderEvents, account_state, currency_pair, new_event_id, next_ts
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall
from tradecache.cache.retention import RetentionPolicy, sweep
from tradecache.daemon.retention import SweepExecutor
from tradecache.errors import LeaseLost
from tradecache.model.enums import AccountType, OrderSide, OrderType
from tradecache.model.events import OrderInitialized, SubmitOrder, SubmitOrderList
from tradecache.model.identifiers import AccountId, ClientOrderId, OrderListId, PositionId, StrategyId, TraderId
from tradecache.model.ledger import Collection
from tradecache.model.messages import Message
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration


def unique_trader(name: str) -> str:
    """A trader of its own for each run: the session's streams and consumers outlive a Redis line."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_server(redis_line_server: Any) -> Any:
    """This module's Redis: a local one of each line (tests/lines.py), as the scripts call TIME
    and sha1hex, whose rules differ by version."""
    return redis_line_server

RETENTION = {"closed_orders_after": 1, "closed_positions_after": 1, "account_states": 3, "sweep_interval": 0.25}


class Feed:
    """Publishes one trader's messages (model objects) and remembers the last stream sequence."""

    def __init__(self, js: Any, trader: str) -> None:
        self.js = js
        self.trader = trader
        self.subjects = Subjects("tradecache", trader)
        self.last = 0

    async def send(self, kind: str, *messages: Message | bytes) -> None:
        for message in messages:
            payload = message if isinstance(message, bytes) else SERIALIZER.serialize(message)
            self.last = int((await self.js.publish(self.subjects.inbound_for_name(kind), payload)).seq)

    def orders(self, client_order_id: str) -> OrderEvents:
        return OrderEvents(client_order_id, trader_id=self.trader)

    def command(self, init: OrderInitialized) -> SubmitOrder:
        return SubmitOrder(
            trader_id=TraderId(self.trader), strategy_id=StrategyId("Tester-001"), order=init,
            command_id=new_event_id(), ts_init=next_ts(), client_id=None, position_id=None,
        )  # fmt: skip

    async def open_order(self, client_order_id: str, *, command: bool = True) -> OrderEvents:
        events = self.orders(client_order_id)
        init = events.initialized(OrderType.MARKET)
        if command:
            await self.send("command", self.command(init))
        await self.send("order", init, events.submitted(), events.accepted(venue_order_id=f"V-{client_order_id}"))
        return events

    async def closed_order(self, client_order_id: str, *, command: bool = True) -> None:
        events = await self.open_order(client_order_id, command=command)
        await self.send("order", events.canceled(venue_order_id=f"V-{client_order_id}"))

    async def position_fill(self, client_order_id: str, side: OrderSide, position_id: str) -> None:
        events = self.orders(client_order_id)
        await self.send("order", events.initialized(OrderType.MARKET, side), events.submitted())
        await self.send("order", events.accepted(venue_order_id=f"V-{client_order_id}"))
        fill = events.filled(
            side=side, order_type=OrderType.MARKET, position_id=position_id, venue_order_id=f"V-{client_order_id}"
        )
        await self.send("order", fill)


def counted(daemon: Any, kind: str) -> float:
    return daemon.metrics.registry.get_sample_value("tradecache_retention_removed_total", {"kind": kind}) or 0.0


def members(client: redis.Redis, key: str) -> set[str]:
    return {item.decode() for item in client.zrange(key, 0, -1)}


def seen_residue(client: redis.Redis, keys: Keys, collection: Collection) -> int:
    """Seen fields beyond what the stored entities hold: must be 0 (an entity removed whole)."""
    stored = 0
    for entity in members(client, keys.index(collection)):
        key = keys.entity(collection, entity)
        stored += client.llen(key) if client.type(key) == b"list" else 1
    return int(client.hlen(keys.seen(collection))) - stored


async def test_retention_removes_exactly_what_it_should_while_ingest_runs(redis_server: Any, nats_server: Any) -> None:
    trader = unique_trader("RETAIN")
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(trader)
    db = database(redis_server.url, trader)
    db.flush()
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    config = daemon_config(redis_server.url, nats_server.url, trader, retention=RETENTION)
    background_open: list[str] = []
    background_closed: list[str] = []

    async def keep_ingesting(stop: asyncio.Event) -> None:
        """Orders opening and closing all along, so that sweeps run while ingest commits."""
        n = 0
        while not stop.is_set():
            n += 1
            if n % 3:
                await feed.closed_order(f"BG-C-{n}")
                background_closed.append(f"BG-C-{n}")
            else:
                await feed.open_order(f"BG-O-{n}")
                background_open.append(f"BG-O-{n}")
            await asyncio.sleep(0.01)

    try:
        async with running_daemon(config) as daemon:
            await feed.send("instrument", currency_pair())
            for n in range(5):
                await feed.open_order(f"O-OPEN-{n}")
                await feed.closed_order(f"O-DONE-{n}")
            # An order list: one order closes at once, the other stays open for now.
            lc, ld = feed.orders("L-C"), feed.orders("L-D")
            listed = tuple(
                dataclasses.replace(events.initialized(OrderType.MARKET), order_list_id=OrderListId("OL-1"))
                for events in (lc, ld)
            )
            order_list = SubmitOrderList(
                trader_id=TraderId(trader), strategy_id=StrategyId("Tester-001"), order_list_id=OrderListId("OL-1"),
                orders=listed, command_id=new_event_id(), ts_init=next_ts(), client_id=None, position_id=None,
            )  # fmt: skip
            await feed.send("command", order_list)
            await feed.send("order", listed[0], lc.submitted(), lc.rejected())
            await feed.send("order", listed[1], ld.submitted(), ld.accepted(venue_order_id="V-L-D"))
            # A NETTING position that closes, and one that closes and reopens at once.
            await feed.position_fill("P-B1", OrderSide.BUY, "P-NET")
            await feed.position_fill("P-S1", OrderSide.SELL, "P-NET")
            for coid, side in (("P-B2", OrderSide.BUY), ("P-S2", OrderSide.SELL), ("P-B3", OrderSide.BUY)):
                await feed.position_fill(coid, side, "P-FLIP")
            for n in range(10):
                state = account_state(AccountType.CASH, [("USD", f"{1000 + n}.00", "0.00")], base_currency="USD")
                await feed.send("account", state)
            stop = asyncio.Event()
            ingesting = asyncio.create_task(keep_ingesting(stop))
            await asyncio.sleep(3.0)  # sweeps run while orders keep arriving
            stop.set()
            await ingesting
            await wait_for_checkpoint(redis_server.url, trader, feed.last)
            # Everything closed is older than the age after a second more; the next sweeps remove it.
            await wait_for(lambda: client.zcard(keys.closed(Collection.ORDERS)) == 0, timeout=10)
            await wait_for(lambda: client.zcard(keys.closed(Collection.POSITIONS)) == 0, timeout=10)
            closed_orders = 5 + 1 + 2 + 3 + len(background_closed)  # O-DONE, L-C, P-B1/P-S1, P-B2..B3, BG
            # (counted when a sweep ends)
            await wait_for(lambda: counted(daemon, "orders") == closed_orders, timeout=10)
            await wait_for(lambda: counted(daemon, "account_states") == 7, timeout=10)
            assert counted(daemon, "submit_order_commands") == 5 + len(background_closed)
            assert counted(daemon, "positions") == 1  # P-NET: flat for longer than the age
            assert counted(daemon, "position_fills") == 2  # P-FLIP's closed cycle (it opened again)
            assert counted(daemon, "account_states") == 7
            assert counted(daemon, "submit_order_list_commands") == 0  # L-D is still open

            opened = {f"O-OPEN-{n}" for n in range(5)} | {"L-D"} | set(background_open)
            assert members(client, keys.index(Collection.ORDERS)) == opened
            assert all(client.llen(keys.entity(Collection.ORDERS, coid)) == 3 for coid in opened)
            assert members(client, keys.index(Collection.SUBMIT_ORDER)) == opened - {"L-D"}
            assert members(client, keys.index(Collection.SUBMIT_ORDER_LIST)) == {"OL-1"}
            assert members(client, keys.index(Collection.POSITIONS)) == {"P-FLIP"}
            assert client.llen(keys.entity(Collection.POSITIONS, "P-FLIP")) == 1
            flip = db.load_position(PositionId("P-FLIP"))
            assert flip is not None and flip.is_open and str(flip.quantity) == "100"
            assert client.exists(keys.entity(Collection.POSITIONS, "P-NET")) == 0
            for collection in Collection:
                if collection not in (Collection.CURRENCIES, Collection.INSTRUMENTS, Collection.STRATEGIES):
                    assert seen_residue(client, keys, collection) == 0, collection
            account = db.load_account(AccountId("SIM-001"))
            assert account is not None and account.event_count == 3
            assert str(account.balance_total()) == "1009.00 USD"

            # The last open order of the list closes: it goes, and the list command with it.
            await feed.send("order", ld.canceled(venue_order_id="V-L-D"))
            # P-NET's id is reused (NETTING): the position reopens from this fill alone.
            await feed.position_fill("P-B4", OrderSide.BUY, "P-NET")
            await wait_for(lambda: counted(daemon, "submit_order_list_commands") == 1, timeout=10)
            assert client.exists(keys.entity(Collection.SUBMIT_ORDER_LIST, "OL-1")) == 0
            assert client.hlen(keys.seen(Collection.SUBMIT_ORDER_LIST)) == 0
            position = db.load_position(PositionId("P-NET"))
            assert position is not None and position.is_open and position.event_count == 1
            assert daemon.is_ready()
    finally:
        await nc.close()
    db.flush()


async def test_a_late_event_for_a_purged_order_is_dead_lettered_as_purged(redis_server: Any, nats_server: Any) -> None:
    trader = unique_trader("RETAIN")
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(trader)
    db = database(redis_server.url, trader)
    db.flush()
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    config = daemon_config(redis_server.url, nats_server.url, trader, retention=RETENTION)
    try:
        async with running_daemon(config) as daemon:
            events = await feed.open_order("O-LATE", command=False)
            init = events.initialized(OrderType.MARKET)
            canceled = events.canceled(venue_order_id="V-O-LATE")
            await feed.send("order", canceled)
            await wait_for_checkpoint(redis_server.url, trader, feed.last)
            await wait_for(lambda: client.zscore(keys.purged(Collection.ORDERS), "O-LATE") is not None, timeout=10)
            assert client.exists(keys.entity(Collection.ORDERS, "O-LATE")) == 0
            # The same cancel again (a producer's late retry) and an OrderInitialized for the id.
            await feed.send("order", canceled, init)
            await wait_for_checkpoint(redis_server.url, trader, feed.last)
            registry = daemon.metrics.registry
            # Metrics are recorded just after the commit the checkpoint shows.
            unknown = {"reason": "unknown_order"}
            await wait_for(lambda: registry.get_sample_value("tradecache_dead_letters_total", unknown) == 2)
        subscription = await nc.jetstream().pull_subscribe(feed.subjects.dead, durable=None, stream="TRADECACHE_DEAD")
        letters = await subscription.fetch(2, timeout=5)
    finally:
        await nc.close()
    for letter in letters:
        assert letter.headers["Tradecache-Reason"] == "unknown_order"
        assert "removed by retention at" in letter.headers["Tradecache-Error"]
    assert db.load_order(ClientOrderId("O-LATE")) is None
    assert client.zscore(keys.purged(Collection.ORDERS), "O-LATE") is not None  # until the age passes again
    db.flush()


async def test_retention_is_off_by_default(redis_server: Any, nats_server: Any) -> None:
    trader = unique_trader("RETAIN")
    db = database(redis_server.url, trader)
    db.flush()
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    config = daemon_config(redis_server.url, nats_server.url, trader)
    try:
        async with running_daemon(config) as daemon:
            await feed.closed_order("O-KEPT")
            await wait_for_checkpoint(redis_server.url, trader, feed.last)
            await asyncio.sleep(1.5)
            assert counted(daemon, "orders") == 0
    finally:
        await nc.close()
    assert db.load_order(ClientOrderId("O-KEPT")) is not None
    assert db.load_submit_order_command(ClientOrderId("O-KEPT")) is not None
    db.flush()


async def test_a_sweep_without_the_lease_removes_nothing(redis_server: Any) -> None:
    trader = unique_trader("RETAIN")
    db = database(redis_server.url, trader)
    db.flush()
    events = OrderEvents("O-1", trader_id=trader)
    from tradecache.model.orders import Order

    order = Order(events.initialized())
    db.add_order(order)
    order.apply(events.denied())
    db.update_order(order)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    keys = Keys(trader)
    await client.set(keys.lease(), "someone-else's token")
    await asyncio.sleep(1.05)
    executor = SweepExecutor(client, keys)
    try:
        with pytest.raises(LeaseLost):
            await executor.run(sweep(RetentionPolicy(closed_orders_after=1), keys, "my token"))
    finally:
        with contextlib.suppress(Exception):
            await client.delete(keys.lease())
        await client.aclose()
    assert db.load_order(ClientOrderId("O-1")) is not None
    report = db.apply_retention(RetentionPolicy(closed_orders_after=1))  # the Python API: no lease
    assert report.orders == 1 and db.load_order(ClientOrderId("O-1")) is None
    db.flush()


def test_the_python_api_sweeps_what_it_wrote(redis_server: Any) -> None:
    trader = unique_trader("RETAIN")
    db = database(redis_server.url, trader)
    db.flush()
    from tradecache.model.orders import Order

    for n in range(4):
        events = OrderEvents(f"O-{n}", trader_id=trader)
        order = Order(events.initialized())
        db.add_order(order)
        if n % 2:
            order.apply(events.denied())
            db.update_order(order)
    started = time.monotonic()
    assert db.apply_retention(RetentionPolicy(closed_orders_after=60)).orders == 0  # not old enough
    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    report = db.apply_retention(RetentionPolicy(closed_orders_after=1))
    assert (report.orders, report.skipped) == (2, 0)
    assert set(db.load_orders()) == {"O-0", "O-2"}
    db.flush()


async def test_an_opening_half_still_held_goes_with_its_purged_order(redis_server: Any) -> None:
    """A flip's opening half waits in the trader's pending hash for a PositionOpened; when none
    ever comes, retention removes it with the order that made it, and only that one."""
    trader = unique_trader("RETAIN")
    db = database(redis_server.url, trader)
    db.flush()
    from tradecache.model.orders import Order

    for coid, closed in (("O-FLIPPED", True), ("O-OPEN", False)):
        events = OrderEvents(coid, trader_id=trader)
        order = Order(events.initialized())
        db.add_order(order)
        if closed:
            order.apply(events.denied())
            db.update_order(order)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    keys = Keys(trader)
    try:
        call = ScriptCall()
        for coid in ("O-FLIPPED", "O-OPEN", "O-NEVER-STORED"):
            call.hold_opening(keys, coid, f"the opening half of {coid}".encode())
        call.checkpoint(keys, 1)
        await Store(client, keys, SERIALIZER).commit(call)
        assert await client.hlen(keys.pending_openings()) == 3
        await asyncio.sleep(1.05)
        report = db.apply_retention(RetentionPolicy(closed_orders_after=1))
        assert (report.orders, report.skipped) == (1, 0)
        held = {field.decode() for field in await client.hkeys(keys.pending_openings())}
        assert held == {"O-OPEN", "O-NEVER-STORED"}  # an order not closed, or not stored, keeps its own
    finally:
        await client.aclose()
    db.flush()
