"""Chaos: the daemon, Redis and NATS fail at random points while a realistic stream is published.

Shared by `tests/integration/test_chaos.py` (the CI size) and `scripts/chaos.py` (the full size), and
its feed, clean-run comparison and server helpers by `tests/integration/test_redis_degraded.py`.

One run (`run_chaos`):
1. private servers: redis-server with `appendonly yes` + `appendfsync always` (an acknowledged
   write survives a SIGKILL of Redis), nats-server with JetStream on disk;
2. a seeded feed of N messages (`ChaosFeed`): orders placed, updated, partly filled, filled,
   canceled, rejected; fills carrying NETTING position ids (positions grow, shrink and flip);
   account states; SubmitOrder commands; strategy state; currencies and instruments first;
3. a background publisher sends them in order with JetStream acks, one at a time, with
   `Nats-Msg-Id` = the event's id, retrying each publish until it is acknowledged (also while
   NATS is down): a retried publish that had in fact been stored is dropped by the stream;
4. meanwhile a fault schedule drawn from the seed: K SIGKILLs of the daemon (a subprocess,
   restarted each time; some at the exact point between a commit and its ack via the daemon's
   test hook, the others after a random delay), R SIGKILL+restarts of Redis and R restarts
   (SIGTERM) of NATS, each at a random point of the publishing progress;
5. a monitor samples the consumer's ack floor and then the Redis checkpoint all along: an ack
   floor above the checkpoint read after it would be an ack of a message not written;
6. at the end: the stream holds exactly the N messages in feed order, everything is acked, the
   dead-letter stream is empty, and every key of the trader in Redis equals what a clean run of
   the same stream through the pure core stores (lists event by event, strings, hashes, indexes,
   dedupe hashes, checkpoint): zero lost, zero duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import nats
import nats.errors
import nats.js.errors
import redis

from tests.integration.daemon_process import DaemonProcess
from tradecache.bus import ensure_stream
from tradecache.cache.keys import Keys
from tradecache.cache.plan import currency_fields, cycle_member
from tradecache.dev.stack import NatsServer, RedisServer
from tradecache.model.events import SubmitOrder, SubmitOrderList
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger, Mark, Write, WriteOp
from tradecache.model.messages import Kind
from tradecache.model.values import Currency
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.wire import Subjects

TRADER = "CHAOS-001"
STRATEGY = "Chaos-001"
ACCOUNT = "SIM-001"
STREAM = "TRADECACHE"
DEAD_STREAM = "TRADECACHE_DEAD"
PREFIX = "tradecache"
BASE_TS = 1_764_000_000_000_000_000
INSTRUMENTS = 6
PAUSED_LOG = "paused after commit"

log = logging.getLogger("tests.chaos")


# -- the feed ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedMessage:
    kind: Kind
    payload: bytes
    msg_id: str  # the Nats-Msg-Id: the event's (or command's) id


_SERIALIZER = MsgPackSerializer(timestamps_as_str=True)


def _pack(data: dict[str, Any]) -> bytes:
    """The map as a node publishes it: NautilusTrader's key order (the daemon stores such bytes as received)."""
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return _SERIALIZER.serialize(_SERIALIZER.deserialize(packed))


def _instrument(n: int, ts: str) -> dict[str, Any]:
    return {
        "type": "CurrencyPair", "id": f"C{n:02d}/USD.SIM", "raw_symbol": f"C{n:02d}/USD", "base_currency": "EUR",
        "quote_currency": "USD", "price_precision": 5, "price_increment": "0.00001", "size_precision": 0,
        "size_increment": "1", "multiplier": "1", "lot_size": "1000", "max_quantity": None, "min_quantity": None,
        "max_notional": None, "min_notional": None, "max_price": None, "min_price": None, "margin_init": "0.03",
        "margin_maint": "0.03", "maker_fee": "0.00002", "taker_fee": "0.00002", "ts_event": ts, "ts_init": ts,
        "tick_scheme_name": None, "info": None,
    }  # fmt: skip


class ChaosFeed:
    """A seeded, realistic message mix; the same seed gives the same bytes.

    Up to four order lifecycles are in flight at once and their events interleave, as a node
    with several working orders publishes them. Each lifecycle: an optional SubmitOrder command,
    OrderInitialized, OrderSubmitted, then rejected (5%) or accepted, then one of: filled at once,
    filled in parts, amended then filled, canceled, partly filled then canceled. Every fill
    carries the instrument's NETTING position id (sides lean towards flat, so positions grow,
    shrink, close and flip through zero) and is usually followed by an AccountState. Now and
    then a StrategyState. `stream()` never ends: the soak script publishes from it for hours.
    """

    def __init__(self, seed: int, trader_id: str = TRADER) -> None:
        self.rng = random.Random(seed)
        self.trader_id = trader_id
        self.run = f"{seed:x}"
        self.ts = BASE_TS
        self.orders = 0
        self.trades = 0
        self.strategy_updates = 0
        self.net: dict[str, int] = {}  # signed quantity filled per instrument

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _tick(self) -> str:
        self.ts += self.rng.randint(1_000, 5_000_000)
        return str(self.ts)

    def preamble(self) -> list[FeedMessage]:
        out = []
        for code, iso, name in (("USD", 840, "United States dollar"), ("EUR", 978, "Euro")):
            currency = {"type": "Currency", "code": code, "precision": 2, "iso4217": iso, "name": name,
                        "currency_type": "FIAT"}  # fmt: skip
            out.append(FeedMessage(Kind.CURRENCY, _pack(currency), f"currency-{self.run}-{code}"))
        for n in range(INSTRUMENTS):
            out.append(FeedMessage(Kind.INSTRUMENT, _pack(_instrument(n, self._tick())), f"instrument-{self.run}-{n}"))
        out.append(self._account_state())
        return out

    def _account_state(self) -> FeedMessage:
        locked = self.rng.randint(0, 50_000)
        event_id = self._uuid()
        ts = self._tick()
        state = {
            "type": "AccountState", "account_id": ACCOUNT, "account_type": "MARGIN", "base_currency": "USD",
            "balances": [{"type": "AccountBalance", "total": "1000000.00", "locked": f"{locked}.00",
                          "free": f"{1_000_000 - locked}.00", "currency": "USD"}],
            "margins": [], "reported": True, "info": {}, "event_id": event_id, "ts_event": ts, "ts_init": ts,
        }  # fmt: skip
        return FeedMessage(Kind.ACCOUNT, _pack(state), event_id)

    def _strategy_state(self) -> FeedMessage:
        self.strategy_updates += 1
        state = {
            "type": "StrategyState", "trader_id": self.trader_id, "strategy_id": STRATEGY,
            "state": {"updates": str(self.strategy_updates).encode(),
                      f"slot-{self.rng.randint(0, 7)}": self._uuid().encode()},
            "ts_event": self._tick(),
        }  # fmt: skip
        return FeedMessage(Kind.STRATEGY, _pack(state), self._uuid())

    def lifecycle(self) -> Iterator[FeedMessage]:
        """One order's messages, generated lazily (so interleaved lifecycles draw in stream order)."""
        rng = self.rng
        self.orders += 1
        n = self.orders
        instrument = f"C{rng.randrange(INSTRUMENTS):02d}/USD.SIM"
        coid = f"O-{self.run}-{n}"
        venue = f"V-{self.run}-{n}"
        # Mostly trade against the position (a mean-reverting book): positions keep crossing
        # zero, closing and flipping, instead of drifting away for ever.
        net = self.net.get(instrument, 0)
        towards_flat = "SELL" if net > 0 else "BUY"
        side = towards_flat if net and rng.random() < 0.65 else rng.choice(("BUY", "SELL"))
        quantity = rng.choice((10_000, 50_000, 100_000, 150_000, 200_000))
        head = {"trader_id": self.trader_id, "strategy_id": STRATEGY, "instrument_id": instrument,
                "client_order_id": coid}  # fmt: skip

        def event(type_name: str, **fields: Any) -> FeedMessage:
            event_id, ts = self._uuid(), self._tick()
            body = {"type": type_name, **head, **fields, "event_id": event_id, "ts_event": ts, "ts_init": ts}
            return FeedMessage(Kind.ORDER, _pack(body), event_id)

        ts = self._tick()
        init_id = self._uuid()
        init = {
            "type": "OrderInitialized", **head, "order_side": side, "order_type": "LIMIT", "quantity": str(quantity),
            "time_in_force": "GTC", "post_only": False, "reduce_only": False, "quote_quantity": False,
            "options": {"price": "1.10000", "display_qty": None, "expire_time_ns": 0},
            "emulation_trigger": "NO_TRIGGER", "trigger_instrument_id": None, "contingency_type": "NO_CONTINGENCY",
            "order_list_id": None, "linked_order_ids": None, "parent_order_id": None, "exec_algorithm_id": None,
            "exec_algorithm_params": None, "exec_spawn_id": None, "tags": None, "event_id": init_id,
            "ts_init": ts, "ts_event": ts, "reconciliation": False,
        }  # fmt: skip
        if rng.random() < 0.35:
            command_id = self._uuid()
            command = {
                "type": "SubmitOrder", "client_id": None, "trader_id": self.trader_id, "strategy_id": STRATEGY,
                "order": {**init, "ts_init": int(ts), "ts_event": int(ts)}, "position_id": None,
                "command_id": command_id, "ts_init": self._tick(),
            }  # fmt: skip
            yield FeedMessage(Kind.COMMAND, _pack(command), command_id)
        yield FeedMessage(Kind.ORDER, _pack(init), init_id)
        yield event("OrderSubmitted", account_id=ACCOUNT)
        path = rng.random()
        if path < 0.05:
            yield event("OrderRejected", account_id=ACCOUNT, reason="INSUFFICIENT_MARGIN", reconciliation=False,
                        due_post_only=False)  # fmt: skip
            return
        yield event("OrderAccepted", venue_order_id=venue, account_id=ACCOUNT, reconciliation=False)
        if path < 0.20:  # canceled
            yield event("OrderPendingCancel", venue_order_id=venue, account_id=ACCOUNT, reconciliation=False)
            yield event("OrderCanceled", venue_order_id=venue, account_id=ACCOUNT, reconciliation=False)
            return
        if path < 0.35:  # amended, then filled
            yield event("OrderPendingUpdate", venue_order_id=venue, account_id=ACCOUNT, reconciliation=False)
            yield event("OrderUpdated", venue_order_id=venue, account_id=ACCOUNT, quantity=str(quantity),
                        price="1.10002", trigger_price=None, reconciliation=False)  # fmt: skip
        parts = 1 if path < 0.60 else rng.randint(2, 3)
        partial_then_cancel = path >= 0.90
        remaining = quantity
        for part in range(parts):
            last = part == parts - 1
            if last and partial_then_cancel:
                break
            fill_qty = remaining if last else max(1, remaining // rng.randint(2, 4))
            remaining -= fill_qty
            yield self._fill(head, venue, side, fill_qty, instrument)
            if rng.random() < 0.7:
                yield self._account_state()
            if rng.random() < 0.03:
                yield self._strategy_state()
        if partial_then_cancel:
            yield event("OrderPendingCancel", venue_order_id=venue, account_id=ACCOUNT, reconciliation=False)
            yield event("OrderCanceled", venue_order_id=venue, account_id=ACCOUNT, reconciliation=False)

    def _fill(self, head: dict[str, Any], venue: str, side: str, quantity: int, instrument: str) -> FeedMessage:
        self.trades += 1
        self.net[instrument] = self.net.get(instrument, 0) + (quantity if side == "BUY" else -quantity)
        event_id, ts = self._uuid(), self._tick()
        price = f"1.{10_000 + self.rng.randint(-200, 200):05d}"
        fill = {
            "type": "OrderFilled", **head, "venue_order_id": venue, "account_id": ACCOUNT,
            "trade_id": f"T-{self.run}-{self.trades}", "position_id": f"{instrument}-{STRATEGY}",
            "order_side": side, "order_type": "LIMIT", "last_qty": str(quantity), "last_px": price,
            "currency": "USD", "commission": "2.20 USD", "liquidity_side": "MAKER", "event_id": event_id,
            "ts_event": ts, "ts_init": ts, "info": {}, "reconciliation": False,
        }  # fmt: skip
        return FeedMessage(Kind.ORDER, _pack(fill), event_id)

    def stream(self) -> Iterator[FeedMessage]:
        """The preamble, then interleaved lifecycles for ever."""
        yield from self.preamble()
        active = [self.lifecycle() for _ in range(4)]
        while True:
            index = self.rng.randrange(len(active))
            try:
                yield next(active[index])
            except StopIteration:
                active[index] = self.lifecycle()

    def messages(self, count: int) -> list[FeedMessage]:
        out: list[FeedMessage] = []
        for message in self.stream():
            if len(out) >= count:
                break
            out.append(message)
        return out


def mix(messages: list[FeedMessage]) -> str:
    """`order 71%, fills 11%, ...` for the printed summary."""
    counts: Counter[str] = Counter()
    for message in messages:
        type_name = msgpack.unpackb(message.payload, raw=False)["type"]
        counts["fills" if type_name == "OrderFilled" else message.kind.value] += 1
    return ", ".join(f"{name} {count / len(messages):.0%}" for name, count in sorted(counts.items()))


# -- the clean run and the comparison ------------------------------------------------------------


@dataclass
class ExpectedState:
    """Every key a clean run of `messages` leaves in Redis, computed by the pure core alone."""

    lists: dict[str, list[bytes]] = field(default_factory=dict)
    strings: dict[str, bytes] = field(default_factory=dict)
    hashes: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    entities: dict[Collection, set[str]] = field(default_factory=dict)
    appended: Counter[Collection] = field(default_factory=Counter)  # entries of each seen-hash
    collection_of: dict[str, Collection] = field(default_factory=dict)
    closed: dict[Collection, set[str]] = field(default_factory=dict)  # retention's closed sets (members)

    @property
    def events(self) -> int:
        return sum(len(items) for items in self.lists.values())


def clean_state(trader_id: str, messages: list[FeedMessage]) -> ExpectedState:
    """Apply the messages one by one through the Ledger, as a run without faults would.

    A message the Ledger refuses raises: the chaos feed is all valid, so a refusal is a bug of
    the feed, not something to compare.
    """
    serializer = MsgPackSerializer(timestamps_as_str=True)
    ledger, keys, state = Ledger(TraderId(trader_id)), Keys(trader_id), ExpectedState()
    for message in messages:
        outcome = ledger.apply(serializer.deserialize(message.payload))
        _take_marks(state, keys, outcome.writes, outcome.marks)
        for write in outcome.writes:
            key = keys.entity(write.collection, write.key)
            state.collection_of[key] = write.collection
            ids = state.entities.setdefault(write.collection, set())
            value = write.value
            if write.op == WriteOp.APPEND:
                assert value is not None and not isinstance(value, dict)
                state.lists.setdefault(key, []).append(serializer.serialize(value))
                state.appended[write.collection] += 1
                ids.add(write.key)
            elif write.op == WriteOp.SET and isinstance(value, Currency):
                state.hashes[key] = {k.encode(): str(v).encode() for k, v in currency_fields(value).items()}
                ids.add(write.key)
            elif write.op == WriteOp.SET:
                assert value is not None and not isinstance(value, dict)
                if isinstance(value, (SubmitOrder, SubmitOrderList)):
                    state.appended[write.collection] += 1
                state.strings[key] = serializer.serialize(value)
                ids.add(write.key)
            elif write.op == WriteOp.MERGE:
                assert isinstance(value, dict)
                fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in value.items()}
                state.hashes.setdefault(key, {}).update(fields)
                ids.add(write.key)
            else:
                state.lists.pop(key, None)
                state.strings.pop(key, None)
                state.hashes.pop(key, None)
                ids.discard(write.key)
    return state


def _take_marks(state: ExpectedState, keys: Keys, writes: list[Write], marks: list[Mark]) -> None:
    """Retention's closed sets after a message: orders closed (or reopened), positions' cycles (a
    position's fills counted after this message's writes, less the ones after the flat point)."""
    appended = Counter(keys.entity(w.collection, w.key) for w in writes if w.op == WriteOp.APPEND)
    for mark in marks:
        closed = state.closed.setdefault(mark.collection, set())
        if mark.event_id:
            key = keys.entity(mark.collection, mark.key)
            count = len(state.lists.get(key, [])) + appended[key] - mark.later
            closed.add(cycle_member(mark.key, count, mark.event_id))
        elif mark.closed:
            closed.add(mark.key)
        else:
            closed.discard(mark.key)


@dataclass
class Comparison:
    """Redis against a clean run, key by key."""

    keys_expected: int = 0
    keys_found: int = 0
    events_expected: int = 0
    events_found: int = 0
    duplicates: int = 0  # stored events beyond their count in the clean run
    lost: int = 0  # clean-run events missing from Redis
    list_lengths: dict[str, int] = field(default_factory=dict)  # collection -> stored events
    key_counts: dict[str, int] = field(default_factory=dict)  # collection -> keys
    different: list[str] = field(default_factory=list)  # right key, wrong value or order
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)  # index / seen / checkpoint problems

    @property
    def equal(self) -> bool:
        return not (self.duplicates or self.lost or self.different or self.missing or self.unexpected or self.internal)

    def problems(self, limit: int = 10) -> str:
        parts = []
        for name in ("different", "missing", "unexpected", "internal"):
            items: list[str] = getattr(self, name)
            if items:
                parts.append(f"{name} ({len(items)}): {items[:limit]}")
        if self.duplicates or self.lost:
            parts.append(f"duplicates {self.duplicates}, lost {self.lost}")
        return "; ".join(parts) or "none"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def compare_with_clean_run(
    client: redis.Redis, trader_id: str, expected: ExpectedState, last_seq: int, chunk: int = 500
) -> Comparison:
    """Read every key of the trader (SCAN) and compare it with the clean run."""
    keys = Keys(trader_id)
    result = Comparison(keys_expected=len(expected.lists) + len(expected.strings) + len(expected.hashes))
    result.events_expected = expected.events
    internal_prefix = f"{keys.prefix}:tradecache:"
    found = sorted(_text(key) for key in client.scan_iter(match=keys.scan_pattern(), count=1000))
    data_keys = [key for key in found if not key.startswith(internal_prefix)]
    internal_keys = {key for key in found if key.startswith(internal_prefix)}
    result.keys_found = len(data_keys)
    for start in range(0, len(data_keys), chunk):
        names = data_keys[start : start + chunk]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.type(name)
        types = [_text(t) for t in pipe.execute()]
        pipe = client.pipeline(transaction=False)
        for name, kind in zip(names, types, strict=True):
            if kind == "list":
                pipe.lrange(name, 0, -1)
            elif kind == "hash":
                pipe.hgetall(name)
            else:
                pipe.get(name)
        for name, kind, value in zip(names, types, pipe.execute(), strict=True):
            _compare_key(result, expected, name, kind, value)
    found_set = set(data_keys)
    for name in [*expected.lists, *expected.strings, *expected.hashes]:
        if name not in found_set:
            result.missing.append(name)
            result.lost += len(expected.lists.get(name, []))
    _compare_internal(client, keys, expected, internal_keys, last_seq, result)
    return result


def _compare_key(result: Comparison, expected: ExpectedState, name: str, kind: str, value: Any) -> None:
    collection = expected.collection_of.get(name)
    label = collection.value if collection is not None else "?"
    result.key_counts[label] = result.key_counts.get(label, 0) + 1
    if name in expected.lists:
        stored: list[bytes] = list(value) if kind == "list" else []
        want = expected.lists[name]
        result.events_found += len(stored)
        result.list_lengths[label] = result.list_lengths.get(label, 0) + len(stored)
        surplus, missing = Counter(stored) - Counter(want), Counter(want) - Counter(stored)
        result.duplicates += sum(surplus.values())
        result.lost += sum(missing.values())
        if stored != want:
            result.different.append(f"{name} ({len(stored)} stored, {len(want)} expected)")
    elif name in expected.strings:
        if kind != "string" or value != expected.strings[name]:
            result.different.append(name)
    elif name in expected.hashes:
        if kind != "hash" or dict(value) != expected.hashes[name]:
            result.different.append(name)
    else:
        result.unexpected.append(f"{name} ({kind})")


def _compare_internal(
    client: redis.Redis, keys: Keys, expected: ExpectedState, found: set[str], last_seq: int, result: Comparison
) -> None:
    wanted = {keys.checkpoint(), keys.lease()}  # the lease: present while a daemon holds the trader
    if client.get(keys.indexed()) not in (None, b"1"):  # set when a restart's index pass found entities
        result.internal.append(f"{keys.indexed()}: {client.get(keys.indexed())!r}")
    wanted.add(keys.indexed())
    raw = client.get(keys.checkpoint())
    if raw is None or int(raw) != last_seq:
        result.internal.append(f"checkpoint {raw!r}, expected {last_seq}")
    for collection, ids in expected.entities.items():
        if not ids:
            continue
        index = keys.index(collection)
        wanted.add(index)
        stored: list[bytes] = client.zrange(index, 0, -1)  # type: ignore[assignment]
        members = {_text(m) for m in stored}
        if members != ids:
            result.internal.append(f"{index}: {len(members ^ ids)} ids differ")
    for collection, count in expected.appended.items():
        seen = keys.seen(collection)
        wanted.add(seen)
        if client.hlen(seen) != count:
            result.internal.append(f"{seen}: {client.hlen(seen)} entries, expected {count}")
    for collection, ids in expected.closed.items():
        closed = keys.closed(collection)
        wanted.add(closed)
        closed_members: list[bytes] = client.zrange(closed, 0, -1)  # type: ignore[assignment]
        stored_ids = {_text(m) for m in closed_members}
        if stored_ids != ids:
            # The members themselves (a few), so that a mismatch says which cycle and which index.
            extra, missing = sorted(stored_ids - ids)[:3], sorted(ids - stored_ids)[:3]
            result.internal.append(f"{closed}: {len(stored_ids ^ ids)} ids differ (stored, not expected: "
                                   f"{extra!r}; expected, not stored: {missing!r})")  # fmt: skip
    for name in sorted(found - wanted):
        result.internal.append(f"unexpected {name}")


# -- servers, daemon, publisher ------------------------------------------------------------------


def durable_redis(extra_args: tuple[str, ...] = (), binary: Path | None = None) -> RedisServer:
    """A private redis-server whose acknowledged writes survive SIGKILL (`appendfsync always`)."""
    return RedisServer(binary=binary, appendonly=True, extra_args=["--appendfsync", "always", *extra_args])


def assert_fsync_always(server: RedisServer) -> None:
    client = server.client()
    try:
        config = client.config_get("append*")
    finally:
        client.close()
    assert config.get("appendonly") == "yes" and config.get("appendfsync") == "always", config


def daemon_config(redis_url: str, nats_url: str, trader_id: str, **sections: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "trader_id": trader_id,
        "redis": {"url": redis_url, "socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        "nats": {"servers": [nats_url], "max_reconnect_wait": 0.5},
        # A small open-orders cap: orders are evicted and read back from Redis, across restarts too.
        # A short lease: a daemon restarted after a SIGKILL takes over within 2 s (default 10 s).
        "ingest": {"fetch_expires": 0.25, "batch_size": 128, "open_orders_limit": 50, "lease_ttl": 2.0},
        "metrics": {"key_count_interval": 1.0},
        "logging": {"level": "INFO", "format": "json"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


class Daemon:
    """The daemon subprocess, restartable with the same config, port and (appended) log."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.process = DaemonProcess(config)
        self.starts = 0
        self.kills = 0
        self.unexpected_exits = 0  # exits nobody asked for: a crash
        self.start_failures = 0  # exit 1 at start because NATS was unreachable (a supervisor restarts it)
        self._paused_before = 0
        self._log_from = 0
        self.pause_after: int | None = None

    @property
    def port(self) -> int:
        return self.process.http_port

    def start(self, pause_after: int | None = None) -> None:
        """Start; with `pause_after` the process stops before the ack of its N-th commit (test hook)."""
        self.process.pause_after = pause_after
        self.pause_after = pause_after
        text = self.log()
        self._paused_before = text.count(PAUSED_LOG)
        self._log_from = len(text)
        self.process.start()
        self.starts += 1

    def log(self) -> str:
        try:
            return self.process.log()
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        return self.log()[self._log_from :]

    def exit_code(self) -> int | None:
        process = self.process.process
        return None if process is None else process.poll()

    def paused(self) -> bool:
        return self.log().count(PAUSED_LOG) > self._paused_before

    def alive(self) -> bool:
        process = self.process.process
        return process is not None and process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.kills += 1

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        process = self.process.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    def close(self) -> None:
        self.process.kill()
        shutil.rmtree(self.process.folder, ignore_errors=True)


async def _quiet(exc: Exception) -> None:
    """nats-py's default error callback logs a traceback for each refused reconnect."""
    log.debug("nats client error: %r", exc)


async def connect_nats(url: str) -> Any:
    """A client that reconnects for ever (publishers and monitors outlive NATS restarts)."""
    return await nats.connect(
        url,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
        error_cb=_quiet,
    )


async def create_stream(nats_url: str) -> None:
    nc = await connect_nats(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, STREAM, [f"{PREFIX}.in.>"], True, log)
    finally:
        await nc.close()


# Shorter than a NATS restart: publishes made while it is down are retried (and the copy nats-py
# buffered meanwhile is dropped by the stream as a duplicate Nats-Msg-Id).
PUBLISH_TIMEOUT = 0.5
# Errors a JetStream publish raises while NATS is down, restarting or not ready yet.
RETRYABLE = (nats.errors.Error, TimeoutError, OSError)


@dataclass
class Publisher:
    """Publishes messages in order, each acknowledged by JetStream before the next; retries for ever."""

    nats_url: str
    trader_id: str
    messages: list[FeedMessage]
    rate: float | None = None  # messages per second; None: as fast as acks come back
    published: int = 0
    retries: int = 0
    duplicate_acks: int = 0
    sequences: list[int] = field(default_factory=list)
    seconds: float = 0.0

    async def run(self) -> None:
        subjects = Subjects(PREFIX, self.trader_id)
        nc = await connect_nats(self.nats_url)
        started = time.monotonic()
        try:
            js = nc.jetstream(timeout=2.0)
            for index, message in enumerate(self.messages):
                if self.rate:
                    delay = started + index / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                subject = subjects.inbound_for(message.kind)
                headers = {"Nats-Msg-Id": message.msg_id}
                while True:
                    try:
                        ack = await js.publish(subject, message.payload, timeout=PUBLISH_TIMEOUT, headers=headers)
                    except RETRYABLE:
                        self.retries += 1
                        await asyncio.sleep(0.05)
                        continue
                    break
                self.duplicate_acks += bool(ack.duplicate)
                self.sequences.append(ack.seq)
                self.published += 1
        finally:
            self.seconds = time.monotonic() - started
            await nc.close()


@dataclass
class Monitor:
    """Samples (consumer ack floor, then the Redis checkpoint); an ack floor above it is a violation."""

    nats_url: str
    redis_url: str
    trader_id: str
    samples: int = 0
    violations: list[tuple[int, int]] = field(default_factory=list)

    async def run(self, stopping: asyncio.Event, interval: float = 0.1) -> None:
        nc = await connect_nats(self.nats_url)
        js = nc.jetstream(timeout=1.0)
        client = redis.Redis.from_url(self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        consumer = f"tradecache-{self.trader_id}"
        checkpoint_key = Keys(self.trader_id).checkpoint()
        try:
            while not stopping.is_set():
                with contextlib.suppress(Exception):  # a server may be down: no sample this time
                    info = await js.consumer_info(STREAM, consumer)
                    floor = int(info.ack_floor.stream_seq)
                    raw = await asyncio.to_thread(client.get, checkpoint_key)
                    committed = int(raw) if raw else 0
                    self.samples += 1
                    if floor > committed:
                        self.violations.append((floor, committed))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=interval)
        finally:
            client.close()
            await nc.close()


async def consumer_state(nats_url: str, trader_id: str) -> tuple[int, int, int]:
    """(ack floor stream sequence, messages not yet delivered, delivered and not acked)."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(STREAM, f"tradecache-{trader_id}")
        return int(info.ack_floor.stream_seq), int(info.num_pending), int(info.num_ack_pending)
    finally:
        await nc.close()


async def stream_counts(nats_url: str) -> tuple[int, int, int]:
    """(messages in the inbound stream, its first and last sequence)."""
    nc = await nats.connect(nats_url)
    try:
        state = (await nc.jetstream().stream_info(STREAM)).state
        return int(state.messages), int(state.first_seq), int(state.last_seq)
    finally:
        await nc.close()


async def dead_letter_count(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        try:
            return int((await nc.jetstream().stream_info(DEAD_STREAM)).state.messages)
        except nats.js.errors.NotFoundError:
            return 0
    finally:
        await nc.close()


def read_checkpoint(redis_url: str, trader_id: str) -> int:
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        raw = client.get(Keys(trader_id).checkpoint())
        return int(raw) if raw else 0
    finally:
        client.close()


async def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` (sync or async; exceptions count as false) until true; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
        except Exception:
            result = False
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f} s")
        await asyncio.sleep(interval)


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 10_000
    kills: int = 5
    redis_restarts: int = 1
    nats_restarts: int = 1
    seed: int = 1
    rate: float | None = 400.0  # published messages per second (None: as fast as JetStream acks)
    trader_id: str = TRADER
    timeout: float = 600.0  # the whole run, setup to comparison
    keep_log: bool = False  # keep the daemon's log (always kept when the run fails)
    redis_binary: Path | None = None  # the redis-server to run (None: find_binary's choice)


@dataclass(frozen=True)
class Fault:
    kind: str  # "kill", "redis", "nats"
    at: int  # when this many messages are published (or the publisher is done)
    mode: str = ""  # kills: "after-commit" (test hook) or "random"
    pause_after: int = 0  # after-commit kills: the commit to stop at
    delay: float = 0.0  # random kills: how long after the trigger; restarts: down time
    restart_after: float = 0.0  # kills: down time of the daemon


def fault_schedule(plan: ChaosPlan, rng: random.Random) -> list[Fault]:
    kinds = ["kill"] * plan.kills + ["redis"] * plan.redis_restarts + ["nats"] * plan.nats_restarts
    rng.shuffle(kinds)
    points = sorted(rng.randint(plan.events // 20, plan.events * 9 // 10) for _ in kinds)
    faults = []
    for kind, at in zip(kinds, points, strict=True):
        if kind == "kill":
            mode = rng.choice(("after-commit", "random"))
            faults.append(
                Fault(kind, at, mode, rng.randint(1, 12), rng.uniform(0.0, 0.8), rng.uniform(0.0, 0.5)),
            )
        else:
            faults.append(Fault(kind, at, delay=rng.uniform(0.2, 1.5)))
    return faults


@dataclass
class ChaosReport:
    plan: ChaosPlan
    mix: str = ""
    seconds: float = 0.0
    publish_seconds: float = 0.0
    published: int = 0
    publish_retries: int = 0
    duplicate_publishes: int = 0  # publishes JetStream dropped by Nats-Msg-Id
    stream_messages: int = 0
    stream_in_feed_order: bool = False
    kills: Counter[str] = field(default_factory=Counter)
    redis_restarts: int = 0
    nats_restarts: int = 0
    unexpected_exits: int = 0
    start_failures: int = 0
    daemon_exit_code: int | None = None
    monitor_samples: int = 0
    ack_violations: list[tuple[int, int]] = field(default_factory=list)
    acked_to: int = 0
    dead_letters: int = 0
    comparison: Comparison = field(default_factory=Comparison)

    @property
    def ok(self) -> bool:
        return (
            self.comparison.equal
            and self.stream_in_feed_order
            and self.stream_messages == self.plan.events
            and not self.ack_violations
            and self.unexpected_exits == 0
            and self.daemon_exit_code == 0
            and self.dead_letters == 0
            and self.acked_to == self.plan.events
        )

    def lines(self) -> list[str]:
        c, plan = self.comparison, self.plan
        lengths = ", ".join(f"{k} {v:,}" for k, v in sorted(c.list_lengths.items()))
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(c.key_counts.items()))
        return [
            f"chaos seed {plan.seed}: {plan.events:,} events ({self.mix})",
            f"faults: {sum(self.kills.values())} daemon SIGKILLs ({self.kills['after-commit']} between commit and "
            f"ack, {self.kills['random']} at random points, {self.kills['idle']} of an idle daemon), "
            f"{self.redis_restarts} Redis SIGKILL+restarts, {self.nats_restarts} NATS restarts; "
            f"daemon crashes {self.unexpected_exits}, restarts after an exit 1 at start with NATS down "
            f"{self.start_failures}",
            f"publisher: {self.published:,} acknowledged in {self.publish_seconds:.1f} s, {self.publish_retries} "
            f"retried publishes, {self.duplicate_publishes} dropped as duplicates by Nats-Msg-Id; stream holds "
            f"{self.stream_messages:,} messages, in feed order: {self.stream_in_feed_order}",
            f"acks: consumer acked to {self.acked_to:,}; {self.monitor_samples} samples of ack floor vs checkpoint, "
            f"{len(self.ack_violations)} acks above the checkpoint; dead letters {self.dead_letters}; "
            f"final SIGTERM exit code {self.daemon_exit_code}",
            f"redis vs clean run: {c.keys_found:,} keys ({c.keys_expected:,} expected: {counts}); "
            f"{c.events_found:,} events in lists ({c.events_expected:,} expected: {lengths})",
            f"duplicates found = {c.duplicates}, lost = {c.lost}, keys different/missing/unexpected = "
            f"{len(c.different)}/{len(c.missing)}/{len(c.unexpected)}, internal problems = {len(c.internal)}",
            f"result: {'OK' if self.ok else 'FAILED'} in {self.seconds:.1f} s",
        ]


async def run_chaos(plan: ChaosPlan, say: Callable[[str], None] = print) -> ChaosReport:
    """One chaos run with private servers; the report says what happened (see `ChaosReport.ok`)."""
    report = ChaosReport(plan)
    started = time.monotonic()
    redis_server, nats_server = durable_redis(binary=plan.redis_binary), NatsServer()
    daemon: Daemon | None = None
    try:
        async with asyncio.timeout(plan.timeout):
            await asyncio.to_thread(redis_server.start)
            await asyncio.to_thread(nats_server.start)
            assert_fsync_always(redis_server)
            daemon = Daemon(daemon_config(redis_server.url, nats_server.url, plan.trader_id))
            await _run(plan, report, redis_server, nats_server, daemon, say)
    finally:
        report.seconds = time.monotonic() - started
        if daemon is not None:
            report.unexpected_exits, report.start_failures = daemon.unexpected_exits, daemon.start_failures
            if report.ok and not plan.keep_log:
                daemon.close()
            else:
                daemon.process.kill()
                say(f"daemon log kept in {daemon.process.log_path}")
        redis_server.close()
        nats_server.close()
    return report


async def _run(
    plan: ChaosPlan,
    report: ChaosReport,
    redis_server: RedisServer,
    nats_server: NatsServer,
    daemon: Daemon,
    say: Callable[[str], None],
) -> None:
    rng = random.Random(plan.seed)
    messages = ChaosFeed(plan.seed, plan.trader_id).messages(plan.events)
    report.mix = mix(messages)
    schedule = fault_schedule(plan, rng)
    faults = ", ".join(f"{f.kind}{'/' + f.mode if f.mode else ''}@{f.at}" for f in schedule)
    say(f"chaos seed {plan.seed}: {len(messages):,} messages ({report.mix}); faults at {faults}")
    expected = await asyncio.to_thread(clean_state, plan.trader_id, messages)
    await create_stream(nats_server.url)

    publisher = Publisher(nats_server.url, plan.trader_id, messages, plan.rate)
    monitor = Monitor(nats_server.url, redis_server.url, plan.trader_id)
    stop_monitor = asyncio.Event()
    upcoming = list(schedule)

    def next_pause() -> int | None:
        """Arm the commit-then-stop hook when the next fault is a kill at that point."""
        following = upcoming[0] if upcoming else None
        armed = following is not None and following.kind == "kill" and following.mode == "after-commit"
        return following.pause_after if following is not None and armed else None

    daemon.start(next_pause())
    began = time.monotonic()
    publishing = asyncio.create_task(publisher.run())
    monitoring = asyncio.create_task(monitor.run(stop_monitor))
    try:
        while upcoming:
            fault = upcoming[0]
            await _await_progress(publisher, publishing, fault.at, daemon, next_pause)
            upcoming.pop(0)
            if fault.kind == "kill":
                mode = await _kill(fault, daemon, publisher, publishing, redis_server.url, plan.trader_id, next_pause)
                report.kills[mode] += 1
            elif fault.kind == "redis":
                await asyncio.to_thread(redis_server.kill)
                await asyncio.sleep(fault.delay)
                await asyncio.to_thread(redis_server.start)
                report.redis_restarts += 1
            else:
                await asyncio.to_thread(nats_server.stop)
                await asyncio.sleep(fault.delay)
                await asyncio.to_thread(nats_server.start)
                report.nats_restarts += 1
            committed = read_checkpoint(redis_server.url, plan.trader_id)
            what = f"{fault.kind} ({mode})" if fault.kind == "kill" else f"{fault.kind} restart"
            say(f"  [{time.monotonic() - began:5.1f} s] {what} done: {publisher.published:,} published, "
                f"checkpoint {committed:,}")  # fmt: skip
        await publishing
        report.published, report.publish_retries = publisher.published, publisher.retries
        report.duplicate_publishes, report.publish_seconds = publisher.duplicate_acks, publisher.seconds
        last = publisher.sequences[-1]

        async def caught_up() -> bool:
            _restart_if_dead(daemon, None)
            floor, undelivered, unacked = await consumer_state(nats_server.url, plan.trader_id)
            return floor == last and undelivered == 0 and unacked == 0

        await wait_until(lambda: read_checkpoint(redis_server.url, plan.trader_id) >= last, 300, "checkpoint")
        await wait_until(caught_up, 120, "everything acked")
    finally:
        stop_monitor.set()
        await asyncio.gather(monitoring, return_exceptions=True)
        if not publishing.done():
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
    report.monitor_samples, report.ack_violations = monitor.samples, monitor.violations
    report.acked_to = (await consumer_state(nats_server.url, plan.trader_id))[0]
    report.daemon_exit_code = await asyncio.to_thread(daemon.stop)
    report.stream_messages, first, last_seq = await stream_counts(nats_server.url)
    report.stream_in_feed_order = (
        first == 1 and last_seq == len(messages) and publisher.sequences == list(range(1, len(messages) + 1))
    )
    report.dead_letters = await dead_letter_count(nats_server.url)
    client = redis.Redis.from_url(redis_server.url)
    try:
        report.comparison = await asyncio.to_thread(compare_with_clean_run, client, plan.trader_id, expected, last_seq)
    finally:
        client.close()


# The daemon exits 1 when its first connection to NATS fails (bus.connect: fail clearly at start, no
# silent retry loop); under a supervisor it is started again. Any other exit is a crash.
START_REFUSALS = ("cannot connect to NATS", "cannot bind the JetStream consumer")


def _restart_if_dead(daemon: Daemon, pause_after: int | None) -> None:
    """Start the daemon again, as a supervisor would, if it exited without being killed."""
    if daemon.alive():
        return
    code, text = daemon.exit_code(), daemon.log_since_start()
    if code == 1 and any(reason in text for reason in START_REFUSALS):
        daemon.start_failures += 1
    else:
        daemon.unexpected_exits += 1
        log.error("daemon exited by itself with %s:\n%s", code, text[-3000:])
    daemon.start(pause_after)


async def _await_progress(
    publisher: Publisher, publishing: asyncio.Task[None], at: int, daemon: Daemon, next_pause: Callable[[], int | None]
) -> None:
    while publisher.published < at and not publishing.done():
        _restart_if_dead(daemon, next_pause())
        await asyncio.sleep(0.02)
    if publishing.done() and publishing.exception() is not None:
        raise RuntimeError("the publisher failed") from publishing.exception()


async def _kill(
    fault: Fault,
    daemon: Daemon,
    publisher: Publisher,
    publishing: asyncio.Task[None],
    redis_url: str,
    trader_id: str,
    next_pause: Callable[[], int | None],
) -> str:
    """SIGKILL the daemon at the fault's point and start it again; returns where it was killed."""
    mode = fault.mode if daemon.pause_after is not None else "random"
    if mode == "after-commit":
        # Wait for the hook: the process has committed its N-th batch and stopped before the ack.
        # Only a daemon with nothing left to do may never get there.
        def idle() -> bool:
            done = publishing.done() and bool(publisher.sequences)
            return done and read_checkpoint(redis_url, trader_id) >= publisher.sequences[-1]

        deadline = time.monotonic() + 120
        while not daemon.paused() and not idle():
            _restart_if_dead(daemon, fault.pause_after)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not reach commit {fault.pause_after}:\n{daemon.log()[-3000:]}")
            await asyncio.sleep(0.02)
        if not daemon.paused():
            mode = "idle"
    else:
        await asyncio.sleep(fault.delay)
    _restart_if_dead(daemon, daemon.pause_after)
    daemon.kill()
    await asyncio.sleep(fault.restart_after)
    daemon.start(next_pause())
    return mode


# -- HTTP ----------------------------------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET on the daemon's health/metrics server; 0 when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def metric_value(metrics_text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text, or None."""
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None
