"""Conflicting duplicates (issue 12): the same event or command id with other content is
dead-lettered `conflicting_duplicate`, whether memory or the store's seen-hash recognises the id;
an identical repeat stays a silent duplicate; data of earlier versions (seen value `1`) keeps
working."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import nats
import pytest
import redis

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.unit.factories import SERIALIZER, OrderEvents, account_state
from tradecache.cache.keys import Keys
from tradecache.model.accounts import replay_account
from tradecache.model.enums import AccountType
from tradecache.model.events import SubmitOrder
from tradecache.model.identifiers import AccountId, ClientOrderId, StrategyId, TraderId
from tradecache.model.ledger import Collection
from tradecache.model.messages import Message
from tradecache.model.orders import Order
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration


def unique_trader(name: str) -> str:
    """A trader of its own for each run: the session's streams and consumers outlive a Redis line."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_server(redis_line_server: Any) -> Any:
    """This module's Redis: a local one of each line (tests/lines.py): the script's digests and
    refusals, on each version."""
    return redis_line_server


class Feed:
    """Publishes model objects (or raw bytes) for one trader, without Nats-Msg-Id (JetStream keeps repeats)."""

    def __init__(self, js: Any, trader: str) -> None:
        self.js = js
        self.subjects = Subjects("tradecache", trader)

    async def send(self, kind: str, message: Message | bytes) -> int:
        payload = message if isinstance(message, bytes) else SERIALIZER.serialize(message)
        ack = await self.js.publish(self.subjects.inbound_for_name(kind), payload)
        return int(ack.seq)


def counted(daemon: Any, name: str, labels: dict[str, str]) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


async def dead_letters(js: Any, trader: str, count: int) -> list[Any]:
    subscription = await js.pull_subscribe(Subjects("tradecache", trader).dead, durable=None, stream="TRADECACHE_DEAD")
    return list(await subscription.fetch(count, timeout=5))


async def recorded(daemon: Any, name: str, labels: dict[str, str], expected: float) -> None:
    """Wait for a metric to reach `expected`: the daemon records a batch's metrics just after the
    commit that the checkpoint shows, so reading them the moment the checkpoint moves can be early."""
    await wait_for(lambda: counted(daemon, name, labels) == expected, timeout=5)


async def test_an_order_event_repeated_with_other_content_is_dead_lettered_and_an_identical_one_is_a_duplicate(
    redis_server: Any, nats_server: Any
) -> None:
    trader = unique_trader("CONFLICT")
    db = database(redis_server.url, trader)
    db.flush()
    events = OrderEvents("O-1", trader_id=trader)
    init, submitted = events.initialized(), events.submitted()
    changed = dataclasses.replace(submitted, ts_event=submitted.ts_event + 1)  # same event id
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    try:
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
            for message in (init, submitted, submitted, changed):
                last = await feed.send("order", message)
            await wait_for_checkpoint(redis_server.url, trader, last)
            await recorded(daemon, "tradecache_dead_letters_total", {"reason": "conflicting_duplicate"}, 1)
            outcome = {"kind": "order", "type": "OrderSubmitted", "outcome": "duplicate"}
            await recorded(daemon, "tradecache_events_total", outcome, 1)
            assert daemon.is_ready()
        letters = await dead_letters(nc.jetstream(), trader, 1)
    finally:
        await nc.close()
    assert letters[0].headers["Tradecache-Reason"] == "conflicting_duplicate"
    error = letters[0].headers["Tradecache-Error"]
    assert "OrderSubmitted for orders 'O-1'" in error and submitted.event_id in error and "other content" in error
    assert letters[0].data == SERIALIZER.serialize(changed)
    order = db.load_order(ClientOrderId("O-1"))
    assert order is not None and order.events == [init, submitted]
    db.flush()


async def test_a_command_repeated_with_other_content_is_caught_by_the_store(
    redis_server: Any, nats_server: Any
) -> None:
    trader = unique_trader("CONFLICT")
    db = database(redis_server.url, trader)
    db.flush()
    init = OrderEvents("O-7", trader_id=trader).initialized()
    command = SubmitOrder(
        trader_id=TraderId(trader), strategy_id=StrategyId("Tester-001"), order=init, command_id=init.event_id,
        ts_init=init.ts_init, client_id=None, position_id=None,
    )  # fmt: skip
    changed = dataclasses.replace(command, ts_init=command.ts_init + 1)
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    try:
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
            for message in (command, command, changed):
                last = await feed.send("command", message)
            await wait_for_checkpoint(redis_server.url, trader, last)
            await recorded(daemon, "tradecache_dead_letters_total", {"reason": "conflicting_duplicate"}, 1)
            duplicate = {"kind": "command", "type": "SubmitOrder", "outcome": "duplicate"}
            await recorded(daemon, "tradecache_events_total", duplicate, 1)
        letters = await dead_letters(nc.jetstream(), trader, 1)
    finally:
        await nc.close()
    assert "SubmitOrder for commands:submit_order 'O-7'" in letters[0].headers["Tradecache-Error"]
    assert db.load_submit_order_command(ClientOrderId("O-7")) == command
    db.flush()


async def test_an_event_another_writer_stored_is_compared_by_the_store_and_after_a_restart(
    redis_server: Any, nats_server: Any
) -> None:
    trader = unique_trader("CONFLICT")
    db = database(redis_server.url, trader)
    db.flush()
    first = account_state(AccountType.CASH, [("USD", "1000.00", "0.00")], base_currency="USD")
    second = account_state(AccountType.CASH, [("USD", "900.00", "0.00")], base_currency="USD")
    changed = dataclasses.replace(second, ts_event=second.ts_event + 1)
    config = daemon_config(redis_server.url, nats_server.url, trader)
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    try:
        async with running_daemon(config) as daemon:
            await wait_for_checkpoint(redis_server.url, trader, await feed.send("account", first))
            # Another writer stores the second state: the daemon's memory has never seen its id.
            db.update_account(replay_account([first, second]))
            await wait_for_checkpoint(redis_server.url, trader, await feed.send("account", changed))
            await recorded(daemon, "tradecache_dead_letters_total", {"reason": "conflicting_duplicate"}, 1)
            await wait_for_checkpoint(redis_server.url, trader, await feed.send("account", second))
            duplicate = {"kind": "account", "type": "AccountState", "outcome": "duplicate"}
            await recorded(daemon, "tradecache_events_total", duplicate, 1)
        async with running_daemon(config) as daemon:  # a restart: memory is read back from Redis
            last = await feed.send("account", changed)
            await feed.send("account", second)
            await wait_for_checkpoint(redis_server.url, trader, last + 1)
            await recorded(daemon, "tradecache_dead_letters_total", {"reason": "conflicting_duplicate"}, 1)
            duplicate = {"kind": "account", "type": "AccountState", "outcome": "duplicate"}
            await recorded(daemon, "tradecache_events_total", duplicate, 1)
        letters = await dead_letters(nc.jetstream(), trader, 2)
    finally:
        await nc.close()
    assert [letter.data for letter in letters] == [SERIALIZER.serialize(changed)] * 2
    account = db.load_account(AccountId("SIM-001"))
    assert account is not None and account.events == [first, second]
    db.flush()


async def test_data_of_earlier_versions_without_a_digest_treats_a_repeat_as_a_duplicate(
    redis_server: Any, nats_server: Any
) -> None:
    trader = unique_trader("CONFLICT")
    db = database(redis_server.url, trader)
    db.flush()
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(trader)
    init = OrderEvents("O-OLD", trader_id=trader).initialized()
    # As tradecache stored it before digests: the seen value is "1".
    client.rpush(keys.entity(Collection.ORDERS, "O-OLD"), SERIALIZER.serialize(init))
    client.hset(keys.seen(Collection.ORDERS), f"5:O-OLD{init.event_id}", "1")
    client.zadd(keys.index(Collection.ORDERS), {"O-OLD": 0})
    changed = dataclasses.replace(init, ts_event=init.ts_event + 1)
    nc = await nats.connect(nats_server.url)
    feed = Feed(nc.jetstream(), trader)
    try:
        async with running_daemon(daemon_config(redis_server.url, nats_server.url, trader)) as daemon:
            await wait_for_checkpoint(redis_server.url, trader, await feed.send("order", changed))
            duplicate = {"kind": "order", "type": "OrderInitialized", "outcome": "duplicate"}
            await recorded(daemon, "tradecache_events_total", duplicate, 1)
            assert counted(daemon, "tradecache_dead_letters_total", {"reason": "conflicting_duplicate"}) == 0
    finally:
        await nc.close()
    assert client.hget(keys.seen(Collection.ORDERS), f"5:O-OLD{init.event_id}") == b"1"
    assert client.llen(keys.entity(Collection.ORDERS, "O-OLD")) == 1
    db.flush()


def test_the_python_api_leaves_a_conflicting_duplicate_out_and_writes_the_rest(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    trader = unique_trader("CONFLICT")
    db = database(redis_server.url, trader)
    db.flush()
    events = OrderEvents("O-API", trader_id=trader)
    order = Order(events.initialized())
    db.add_order(order)
    submitted = events.submitted()
    order.apply(submitted)
    db.update_order(order)
    db.update_order(order)  # identical: a silent duplicate
    order.events[-1] = dataclasses.replace(submitted, ts_event=submitted.ts_event + 1)
    other = Order(OrderEvents("O-API-2", trader_id=trader).initialized())
    with caplog.at_level(logging.ERROR, logger="tests"), db.batch():
        db.update_order(order)  # conflicting: left out, logged
        db.add_order(other)  # written all the same
    stored = db.load_order(ClientOrderId("O-API"))
    assert stored is not None and stored.events[-1] == submitted and stored.event_count == 2
    assert db.load_order(ClientOrderId("O-API-2")) is not None
    assert "conflicting duplicate" in caplog.text and "orders 'O-API'" in caplog.text
    db.flush()
