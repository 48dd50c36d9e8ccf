"""RedisCacheDatabase against a real redis-server started by the tests.

Every write and load here runs the Lua scripts of cache/plan.py, whose behaviour (errors raised
inside a script, script caching) differs between Redis versions: the module runs once per Redis
line (`redis_line_server`, tests/lines.py)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import RedisServer
from tests.unit.factories import OrderEvents
from tests.vectors.scenarios import Scenario, replay_into_store, scenario_paths
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.keys import Keys
from tradecache.cache.plan import APPLY_SCRIPT, ScriptCall, plan_writes
from tradecache.errors import EventRejected, StoreUnavailable
from tradecache.model import Collection, Ledger, Write, WriteOp
from tradecache.model.accounts import Account
from tradecache.model.events import AccountState, StrategyState, SubmitOrder, SubmitOrderList
from tradecache.model.identifiers import (
    AccountId,
    ClientOrderId,
    InstrumentId,
    OrderListId,
    PositionId,
    StrategyId,
    TraderId,
)
from tradecache.model.instruments import Instrument
from tradecache.model.ledger import Mark
from tradecache.model.orders import Order
from tradecache.model.positions import Position
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.snapshots import account_snapshot, order_snapshot, position_snapshot

pytestmark = pytest.mark.integration

PATHS = scenario_paths()
LOG = logging.getLogger("tests.cache")


def make_db(url: str, trader_id: str) -> RedisCacheDatabase:
    config = CacheDatabaseConfig.from_url(url)
    return RedisCacheDatabase(TraderId(trader_id), LOG, MsgPackSerializer(timestamps_as_str=True), config)


def write_through_api(db: RedisCacheDatabase, scenario: Scenario) -> None:
    """Store a scenario the way a node calls the API: add_* for new entities, update_* after."""
    positions: dict[str, Position] = {}
    accounts: dict[str, Account] = {}
    orders_seen: set[str] = set()
    # The ledger says what a node would store after each message; our objects stand in for the node's.
    serializer = MsgPackSerializer()
    fresh = Ledger(TraderId(scenario.trader_id))
    for _kind, _type, payload in scenario.messages:
        try:
            outcome = fresh.apply(serializer.deserialize(payload))
        except EventRejected:
            continue
        for write in outcome.writes:
            value: Any = write.value
            if write.collection == Collection.ORDERS:
                order = fresh.orders[write.key]
                if write.key in orders_seen:
                    db.update_order(order)
                else:
                    orders_seen.add(write.key)
                    db.add_order(order)
            elif write.collection == Collection.POSITIONS:
                position = positions.get(write.key)
                if position is None:
                    instrument = fresh.instruments[value.instrument_id.value]
                    positions[write.key] = Position(instrument, value)
                    db.add_position(positions[write.key])
                else:
                    position.apply(value)
                    db.update_position(position)
            elif write.collection == Collection.ACCOUNTS:
                assert isinstance(value, AccountState)
                if write.key in accounts:
                    accounts[write.key].apply(value)
                    db.update_account(accounts[write.key])
                else:
                    accounts[write.key] = Account(value)
                    db.add_account(accounts[write.key])
            elif write.collection == Collection.INSTRUMENTS:
                db.add_instrument(value)
            elif write.collection == Collection.CURRENCIES:
                db.add_currency(value)
            elif write.collection == Collection.SUBMIT_ORDER:
                db.add_submit_order_command(value)
            elif write.collection == Collection.SUBMIT_ORDER_LIST:
                db.add_submit_order_list_command(value)


def loaded_state(db: RedisCacheDatabase) -> dict[str, Any]:
    return {
        "orders": {k.value: order_snapshot(v) for k, v in db.load_orders().items()},
        "positions": {k.value: position_snapshot(v) for k, v in db.load_positions().items()},
        "accounts": {k.value: account_snapshot(v) for k, v in db.load_accounts().items()},
        "instruments": sorted(k.value for k in db.load_instruments()),
        "currencies": sorted(db.load_currencies()),
        "submit_order_commands": {
            k.value: {
                "command_id": c.command_id,
                "strategy_id": c.strategy_id.value,
                "position_id": None if c.position_id is None else c.position_id.value,
            }
            for k, c in db.load_submit_order_commands().items()
        },
        "submit_order_list_commands": {
            k.value: {"command_id": c.command_id, "client_order_ids": [o.value for o in c.client_order_ids]}
            for k, c in db.load_submit_order_list_commands().items()
        },
    }


@pytest.fixture
def redis_server(redis_line_server: RedisServer) -> RedisServer:
    """This module's Redis: a local one of each line, instead of the session's default."""
    return redis_line_server


@pytest.fixture
def db(redis_server: Any) -> Any:
    database = make_db(redis_server.url, "TESTER-001")
    database.flush()
    yield database
    database.flush()
    database.close()


def test_a_config_that_is_not_a_cache_database_config_raises_type_error() -> None:
    with pytest.raises(TypeError, match="CacheDatabaseConfig"):
        RedisCacheDatabase(TraderId("A-1"), LOG, MsgPackSerializer(), config={"host": "x"})  # type: ignore[arg-type]


def test_every_load_returns_none_or_empty_when_nothing_is_stored(db: RedisCacheDatabase) -> None:
    assert db.load_currency("USD") is None
    assert db.load_instrument(InstrumentId("EUR/USD.SIM")) is None
    assert db.load_account(AccountId("SIM-001")) is None
    assert db.load_order(ClientOrderId("O-1")) is None
    assert db.load_position(PositionId("P-1")) is None
    assert db.load_submit_order_command(ClientOrderId("O-1")) is None
    assert db.load_submit_order_list_command(OrderListId("OL-1")) is None
    assert db.load_strategy(StrategyId("S-001")) == {}
    assert db.load_currencies() == {}
    assert db.load_instruments() == {}
    assert db.load_accounts() == {}
    assert db.load_orders() == {}
    assert db.load_positions() == {}
    assert db.load_submit_order_commands() == {}
    assert db.load_submit_order_list_commands() == {}


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_scenario_written_through_the_api_loads_back_as_expected(db: RedisCacheDatabase, path: Path) -> None:
    scenario = Scenario.load(path)
    database = _for_trader(db, scenario.trader_id)
    database.flush()
    write_through_api(database, scenario)
    assert loaded_state(database) == scenario.expected
    database.flush()


def _for_trader(db: RedisCacheDatabase, trader_id: str) -> RedisCacheDatabase:
    return RedisCacheDatabase(TraderId(trader_id), LOG, MsgPackSerializer(), db.config)


def test_single_loads_return_each_entity(db: RedisCacheDatabase) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    database = _for_trader(db, scenario.trader_id)
    write_through_api(database, scenario)
    for coid, expected in scenario.expected["orders"].items():
        order = database.load_order(ClientOrderId(coid))
        assert order is not None and order_snapshot(order) == expected
    for pid, expected in scenario.expected["positions"].items():
        position = database.load_position(PositionId(pid))
        assert position is not None and position_snapshot(position) == expected
    for aid, expected in scenario.expected["accounts"].items():
        account = database.load_account(AccountId(aid))
        assert account is not None and account_snapshot(account) == expected
    for iid in scenario.expected["instruments"]:
        instrument = database.load_instrument(InstrumentId(iid))
        assert isinstance(instrument, Instrument) and instrument.id.value == iid
    for coid, expected in scenario.expected["submit_order_commands"].items():
        command = database.load_submit_order_command(ClientOrderId(coid))
        assert isinstance(command, SubmitOrder) and command.command_id == expected["command_id"]
    database.flush()


def test_currency_and_submit_order_list_round_trip(db: RedisCacheDatabase) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "bracket_entry_tp_filled_sl_canceled"))
    database = _for_trader(db, scenario.trader_id)
    write_through_api(database, scenario)
    (olid,) = scenario.expected["submit_order_list_commands"]
    command = database.load_submit_order_list_command(OrderListId(olid))
    assert isinstance(command, SubmitOrderList) and len(command.orders) == 3
    xau = Currency("XAU", 2, 959, "Gold (one troy ounce)", Currency.from_str("XAU").currency_type)
    database.add_currency(xau)
    assert database.load_currency("XAU") == xau
    database.flush()


def test_strategy_state_is_merged_loaded_and_deleted(db: RedisCacheDatabase, redis_server: Any) -> None:
    strategy = StrategyId("Momentum-001")
    state = StrategyState(trader_id=db.trader_id, strategy_id=strategy, state={"a": b"\x00\x01", "b": b"x"}, ts_event=1)
    db.update_strategy(state)
    db.update_strategy(StrategyState(trader_id=db.trader_id, strategy_id=strategy, state={"b": b"y"}, ts_event=2))
    assert db.load_strategy(strategy) == {"a": b"\x00\x01", "b": b"y"}
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(f"trader-{db.trader_id}:strategies:{strategy}:State") == 1
    db.delete_strategy(strategy)
    assert db.load_strategy(strategy) == {}
    assert client.exists(f"trader-{db.trader_id}:strategies:{strategy}:State") == 0


def test_an_event_already_stored_is_not_appended_twice(db: RedisCacheDatabase, redis_server: Any) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    database = _for_trader(db, scenario.trader_id)
    replay = replay_into_store(scenario)
    (order,) = replay.ledger.orders.values()
    database.add_order(order)
    database.add_order(order)
    database.update_order(order)
    database.update_order(order)
    client = redis.Redis.from_url(redis_server.url)
    assert client.llen(f"trader-{scenario.trader_id}:orders:{order.client_order_id}") == 2
    database.flush()


def test_an_event_id_another_order_used_is_not_a_duplicate_for_this_one(db: RedisCacheDatabase) -> None:
    first = OrderEvents("O-A", trader_id=db.trader_id.value).initialized()
    second = dataclasses.replace(
        OrderEvents("O-B", trader_id=db.trader_id.value).initialized(), event_id=first.event_id
    )
    db.add_order(Order(first))
    db.add_order(Order(second))
    db.add_order(Order(second))  # a repeat for O-B itself is a duplicate
    loaded_a, loaded_b = db.load_order(ClientOrderId("O-A")), db.load_order(ClientOrderId("O-B"))
    assert loaded_a is not None and loaded_a.event_count == 1
    assert loaded_b is not None and loaded_b.event_count == 1 and loaded_b.init_event == second


def test_stored_bytes_keep_19_digit_timestamps_exact(db: RedisCacheDatabase, redis_server: Any) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "limit_modified_then_filled"))
    database = _for_trader(db, scenario.trader_id)
    write_through_api(database, scenario)
    client = redis.Redis.from_url(redis_server.url)
    published = [payload for kind, _type, payload in scenario.messages if kind == "order_event"]
    stored = []
    for coid in scenario.expected["orders"]:
        stored.extend(client.lrange(f"trader-{scenario.trader_id}:orders:{coid}", 0, -1))
    assert sorted(stored) == sorted(published)
    import msgpack

    for raw in stored:
        event = msgpack.unpackb(raw, raw=False)
        assert isinstance(event["ts_event"], str) and len(event["ts_event"]) == 19
    database.flush()


def test_two_traders_in_one_redis_never_see_or_flush_each_other(redis_server: Any) -> None:
    first = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    second = Scenario.load(next(p for p in PATHS if p.stem == "limit_modified_then_filled"))
    # Same trader id prefix on purpose: FX-1 must not match FX-12 keys.
    a = make_db(redis_server.url, "FX-1")
    b = make_db(redis_server.url, "FX-12")
    for database in (a, b):
        database.flush()
    write_through_api(a, first)
    write_through_api(b, second)
    assert set(a.load_orders()) == set(first.expected["orders"])
    assert set(b.load_orders()) == set(second.expected["orders"])
    a.flush()
    assert a.load_orders() == {}
    assert set(b.load_orders()) == set(second.expected["orders"])
    client = redis.Redis.from_url(redis_server.url)
    assert not list(client.scan_iter(match="trader-FX-1:*"))
    assert list(client.scan_iter(match="trader-FX-12:*"))
    b.flush()


def test_a_batch_that_would_fail_half_way_writes_nothing(db: RedisCacheDatabase, redis_server: Any) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    replay = replay_into_store(scenario)
    (order,) = replay.ledger.orders.values()
    keys = Keys("TESTER-001")
    client = redis.Redis.from_url(redis_server.url)
    client.set(keys.entity(Collection.ORDERS, "O-BROKEN"), b"not a list")
    writes = [
        Write(WriteOp.APPEND, Collection.ORDERS, order.client_order_id.value, order.events[0]),
        Write(WriteOp.APPEND, Collection.ORDERS, "O-BROKEN", order.events[1]),
    ]
    call = plan_writes(writes, keys, MsgPackSerializer().serialize)
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        client.register_script(APPLY_SCRIPT)(keys=call.keys, args=call.args)
    assert client.exists(keys.entity(Collection.ORDERS, order.client_order_id.value)) == 0
    assert client.exists(keys.seen(Collection.ORDERS)) == 0


def test_redis_down_raises_store_unavailable_naming_the_operation(redis_server: Any) -> None:
    scenario = Scenario.load(next(p for p in PATHS if p.stem == "market_order_single_fill_fx"))
    (filled,) = replay_into_store(scenario).ledger.orders.values()
    database = make_db(redis_server.url, scenario.trader_id)
    database.flush()
    live = Order(filled.init_event)
    database.add_order(live)
    live.apply(filled.events[1])
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="update_order") as caught:
            database.update_order(live)
        assert caught.value.operation == "update_order"
        with pytest.raises(StoreUnavailable, match="load_orders"):
            database.load_orders()
    finally:
        redis_server.start()
    # Nothing half-written: the list holds exactly the one event that was committed.
    loaded = database.load_order(live.client_order_id)
    assert loaded is not None and loaded.event_count == 1
    database.update_order(live)
    loaded = database.load_order(live.client_order_id)
    assert loaded is not None and loaded.event_count == 2
    database.flush()


def test_the_checkpoint_only_moves_forward(redis_server: Any) -> None:
    """A late copy of a timed-out commit (an older checkpoint) must not move it back."""
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys("CHECKPOINT-001")
    apply = client.register_script(APPLY_SCRIPT)
    for sequence, expected in ((10, b"10"), (5, b"10"), (11, b"11")):
        call = ScriptCall()
        call.checkpoint(keys, sequence)
        apply(keys=call.keys, args=call.args)
        assert client.get(keys.checkpoint()) == expected
    client.delete(keys.checkpoint())
    client.close()


def _contents(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under `prefix` (without it) and what it holds, in a comparable form."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{prefix}:*"):
        name = raw.decode()[len(prefix) :]
        kind = client.type(raw).decode()
        if kind == "list":
            out[name] = client.lrange(raw, 0, -1)
        elif kind == "hash":
            out[name] = client.hgetall(raw)
        elif kind == "zset":
            out[name] = [member.split(b"\n")[:2] for member, _ in client.zrange(raw, 0, -1, withscores=True)]
        else:
            out[name] = client.get(raw)
    return out


def test_packed_arguments_write_exactly_what_the_values_write(redis_server: Any) -> None:
    """`ScriptCall.packed` (each key once, the values in one msgpack array the script unpacks) and
    `argv` (values packed, every key) against the same values sent one by one: every byte value in
    payloads, a 19-digit checkpoint, a hash of 2,500 fields (three HSETs), a closed cycle's count,
    on each Redis line."""
    client = redis.Redis.from_url(redis_server.url)
    apply = client.register_script(APPLY_SCRIPT)
    payloads = [bytes(range(256)), b"", "é ü ☃".encode(), b"\x90\x91\xdc\xdd", b"1" * 70_000]
    results = {}
    for name, form in (("PACKED-001", "packed"), ("ARGV-001", "argv"), ("VALUES-001", "values")):
        keys = Keys(name)
        call = ScriptCall()
        writes = []
        for n, payload in enumerate(payloads):
            write = Write(WriteOp.APPEND, Collection.ORDERS, f"O-{n}", None)
            call.append_event(write, keys, f"e-{n}", payload)
            writes.append(write)
        call.append_event(writes[0], keys, "e-0", payloads[0])  # a repeat: 0
        # A position's fill, flat: its closed cycle is marked with it (only with a fill this call appends).
        call.append_event(Write(WriteOp.APPEND, Collection.POSITIONS, "P-1", None), keys, "e-1", payloads[1])
        fields: dict[str, bytes | str] = {f"f{n}": f"v{n}".encode() for n in range(2500)}
        call.set_hash(Write(WriteOp.MERGE, Collection.STRATEGIES, "S-1", None), keys, fields, replace=False)
        call.set_value(Write(WriteOp.SET, Collection.INSTRUMENTS, "EUR/USD.SIM", None), keys, b"\x00instrument")
        call.closed(Mark(Collection.POSITIONS, "P-1", closed=True, event_id="e-1", later=0), keys)
        call.closed(Mark(Collection.ORDERS, "O-2", closed=True), keys)
        call.checkpoint(keys, 9_999_999_999_999_999_999)
        if form == "packed":
            unique, argv = call.packed()
            assert len(unique) < len(call.keys)
            results[name] = apply(keys=unique, args=argv)
        else:
            results[name] = apply(keys=call.keys, args=call.argv if form == "argv" else call.args)
    assert results["PACKED-001"] == results["ARGV-001"] == results["VALUES-001"] == [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
    packed_state, values_state = _contents(client, "trader-PACKED-001"), _contents(client, "trader-VALUES-001")
    assert packed_state == values_state == _contents(client, "trader-ARGV-001")
    assert packed_state[":tradecache:checkpoint"] == b"9999999999999999999"
    assert len(packed_state[":strategies:S-1:State"]) == 2500
    assert packed_state[":tradecache:closed:positions"] == [[b"P-1", b"1"]]
    client.delete(*(key for name in results for key in client.keys(f"trader-{name}:*")))
    client.close()


def test_load_orders_reads_at_most_two_chunks_ahead_of_the_decoding(
    db: RedisCacheDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading is faster than decoding: with every read queued at once, only the GIL kept the
    thread from reading the whole collection's bytes ahead. While a chunk is decoded, at most
    AHEAD_CHUNKS more have been read (or are being read), however slow the decoding."""
    import threading
    import time

    from tradecache.cache import database as database_module

    monkeypatch.setattr(database_module, "READ_AHEAD_CHUNK", 3)
    monkeypatch.setattr(database_module, "FIRST_READ_CHUNK", 2)
    for n in range(20):  # chunks of 2, 3, 3, 3, 3, 3, 3
        db.add_order(Order(OrderEvents(f"O-{n:02d}", trader_id=db.trader_id.value).initialized()))
    started: list[int] = []
    lock = threading.Lock()
    read_chunk = database_module.RedisCacheDatabase._read_chunk

    def counted(self: RedisCacheDatabase, collection: Collection, ids: Any) -> list[Any]:
        with lock:
            started.append(len(ids))
        return read_chunk(self, collection, ids)

    monkeypatch.setattr(database_module.RedisCacheDatabase, "_read_chunk", counted)
    ahead = []
    with database_module._ReadAhead(db, "load_orders", Collection.ORDERS) as chunks:
        for taken, chunk in enumerate(chunks, start=1):
            time.sleep(0.05)  # a slow decoding: the thread has all the time it wants to read on
            with lock:
                ahead.append(len(started) - taken)
            assert chunk
    assert started == [2, 3, 3, 3, 3, 3, 3]
    assert max(ahead) == database_module.AHEAD_CHUNKS, ahead
    assert ahead[-1] == 0


def test_a_read_error_past_a_payload_that_cannot_be_decoded_is_what_load_orders_raises(
    db: RedisCacheDatabase, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if every chunk were read before any was decoded: a key of another type in a later chunk
    (StoreRefused) wins over a bad payload in the first one (PayloadError); and the connections
    are left clean for what follows."""
    from tradecache.cache import database as database_module
    from tradecache.errors import PayloadError, StoreRefused

    monkeypatch.setattr(database_module, "READ_AHEAD_CHUNK", 3)
    monkeypatch.setattr(database_module, "FIRST_READ_CHUNK", 2)
    for n in range(12):
        db.add_order(Order(OrderEvents(f"O-{n:02d}", trader_id=db.trader_id.value).initialized()))
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(db.trader_id.value)
    try:
        client.rpush(keys.entity(Collection.ORDERS, "O-00"), b"\x81\xa4type\xa3Bad")
        with pytest.raises(PayloadError, match="unknown message type 'Bad'"):
            db.load_orders()
        client.delete(keys.entity(Collection.ORDERS, "O-10"))
        client.set(keys.entity(Collection.ORDERS, "O-10"), b"a string, not a list")  # in the last chunk
        with pytest.raises(StoreRefused, match="WRONGTYPE"):
            db.load_orders()
        client.delete(keys.entity(Collection.ORDERS, "O-00"), keys.entity(Collection.ORDERS, "O-10"))
        assert db.load_order(ClientOrderId("O-01")) is not None  # the next command gets its own answer
        assert len(db.load_orders()) == 10
    finally:
        client.close()


def test_load_orders_reads_ahead_in_chunks_and_keeps_what_and_how_it_raises(
    db: RedisCacheDatabase, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first chunk of 2 orders, then chunks of 3, read by a worker thread ahead of the decoding: every order as
    `load_order` gives it, in index order; a stored list that cannot be decoded raises what it
    raised before, and Redis unavailable raises StoreUnavailable."""
    from tradecache.cache import database as database_module
    from tradecache.errors import PayloadError

    monkeypatch.setattr(database_module, "READ_AHEAD_CHUNK", 3)
    monkeypatch.setattr(database_module, "FIRST_READ_CHUNK", 2)
    for n in range(10):
        make = OrderEvents(f"O-{n:02d}", trader_id=db.trader_id.value)
        order = Order(make.initialized())
        db.add_order(order)
        if n % 2:
            order.apply(make.submitted())
            db.update_order(order)
    loaded = db.load_orders()
    assert list(loaded) == [ClientOrderId(f"O-{n:02d}") for n in range(10)]
    for coid, order in loaded.items():
        single = db.load_order(coid)
        assert single is not None and order_snapshot(order) == order_snapshot(single)
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(db.trader_id.value)
    client.rpush(keys.entity(Collection.ORDERS, "O-04"), b"\x81\xa4type\xa3Bad")
    with pytest.raises(PayloadError, match="unknown message type 'Bad'"):
        db.load_orders()
    client.close()
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="load_orders"):
            db.load_orders()
    finally:
        redis_server.start()
