"""RedisCacheDatabase: NautilusTrader's cache-database API over Redis, synchronous.

Writes go through the same pure core as the daemon: each method makes `Write`s, `plan_writes`
turns them into one atomic `APPLY_SCRIPT` call. Loads of a whole collection read the index
and then every entity in one pipeline: two round trips whatever the size (three for positions,
which also need their instruments). A load by an id no entity can have (one the model refuses,
`model/key_parts.py`) finds nothing: its key could be another trader's.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import redis

from tradecache.cache.adoption import INDEX_SCRIPT, SCAN_COUNT, IndexReport, foreign, plan_index
from tradecache.cache.config import CacheDatabaseConfig
from tradecache.cache.keys import Keys
from tradecache.cache.lists import pipelines, read_lists
from tradecache.cache.plan import (
    APPLY_SCRIPT,
    READ_CHUNK,
    READ_COMMANDS,
    READ_SCRIPT,
    as_text,
    conflict_operation,
    plan_marks,
    plan_writes,
    read_result,
)
from tradecache.cache.purge_script import CLOCK_SCRIPT, PURGE_SCRIPT
from tradecache.cache.redis_errors import UNAVAILABLE_ERRORS, is_unavailable, translated
from tradecache.cache.replay import (
    account_from_states,
    currency_from_hash,
    fills_of,
    gc_paused,
    instrument_from_bytes,
    order_from_events,
    position_from_fills,
    strategy_state_from,
    submit_order_from_bytes,
    submit_order_list_from_bytes,
)
from tradecache.cache.retention import (
    Clock,
    ClosedIds,
    IndexPage,
    ReadKeys,
    Request,
    RetentionPolicy,
    SweepReport,
    sweep,
)
from tradecache.errors import StoreRefused
from tradecache.model.accounts import Account
from tradecache.model.enums import OmsType
from tradecache.model.events import OrderFilled, StrategyState, SubmitOrder, SubmitOrderList
from tradecache.model.identifiers import (
    AccountId,
    ClientId,
    ClientOrderId,
    InstrumentId,
    OrderListId,
    PositionId,
    StrategyId,
    TraderId,
)
from tradecache.model.instruments import Instrument
from tradecache.model.key_parts import is_key_part
from tradecache.model.ledger import Collection, Mark, Write, WriteOp
from tradecache.model.orders import Order
from tradecache.model.positions import Position
from tradecache.model.values import Currency, register_currency
from tradecache.serialization.msgpack import MsgPackSerializer

_FLUSH_SCAN_COUNT = 1000
# Writes per atomic call when batching (see `batch`): big enough to amortise the round trip,
# small enough that one call holds Redis for well under a millisecond.
BATCH_SIZE = 256


# Entities per READ_SCRIPT call of a read-ahead load: small enough that the first read is short.
READ_AHEAD_CHUNK = 1000
FIRST_READ_CHUNK = 200
# Chunks read ahead of the one being decoded (the memory a load holds in stored bytes).
AHEAD_CHUNKS = 2


class _ReadAhead:
    """A collection's stored values chunk by chunk, read by a worker thread ahead of the caller.

    `load_orders()` spends more time decoding than reading; Redis runs the reads in its own
    process, so the reads of later chunks overlap the decoding of earlier ones. At most
    AHEAD_CHUNKS chunks are read ahead of the one being decoded: the reads are faster, and with
    every read queued at once only the thread's share of the GIL kept it from holding the whole
    collection's bytes beside what was decoded (100,000 orders: 170 MB of stored bytes; the peak
    measured the same, 509 MB, either way: the bound no longer depends on the scheduler).
    Errors are those of reading everything first: a read that fails raises
    (StoreUnavailable) when the caller reaches its chunk, and when the caller fails on its own (a
    stored value it cannot decode), the rest is read, a chunk at a time, and a read error there is
    raised instead, as it would have been before any decoding.
    """

    def __init__(self, db: RedisCacheDatabase, operation: str, collection: Collection) -> None:
        self._db = db
        self._operation = operation
        self._collection = collection
        with db._unavailable_as(operation):
            self._ids = db._members(collection, operation)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tradecache-read-ahead")
        # The first chunk is small: its read is the one nothing overlaps.
        ids = self._ids
        bounds = [0, *range(FIRST_READ_CHUNK, len(ids), READ_AHEAD_CHUNK), len(ids)] if ids else []
        self._spans = itertools.pairwise(bounds)  # those not read yet
        self._reads: collections.deque[Future[list[Any]]] = collections.deque()
        for _ in range(AHEAD_CHUNKS + 1):  # the chunk the caller takes first, and those read ahead of it
            self._read_next()
        self._read_failed = False

    def _read_next(self) -> None:
        span = next(self._spans, None)
        if span is not None:
            start, end = span
            self._reads.append(self._pool.submit(self._db._read_chunk, self._collection, self._ids[start:end]))

    def __enter__(self) -> Iterator[list[Any]]:
        return self._chunks()

    def _taken(self) -> list[Any]:
        """The oldest read's chunk; the next chunk's read starts in its place."""
        read = self._reads.popleft()
        if len(self._reads) < AHEAD_CHUNKS:
            self._read_next()
        with self._db._unavailable_as(self._operation):
            chunk: list[Any] = read.result()
        return chunk

    def _chunks(self) -> Iterator[list[Any]]:
        while self._reads:
            try:
                chunk = self._taken()
            except BaseException:
                self._read_failed = True
                raise
            yield chunk

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        try:
            if error is not None and not self._read_failed:
                while self._reads:
                    self._taken()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


@runtime_checkable
class HasState(Protocol):
    """What `update_strategy` needs of a strategy: its id and its state as field -> bytes."""

    @property
    def id(self) -> StrategyId: ...

    def save(self) -> dict[str, bytes]: ...


class RedisCacheDatabase:
    """Store and load one trader's execution state in Redis (NautilusTrader's layout and API)."""

    def __init__(
        self,
        trader_id: TraderId,
        logger: logging.Logger,
        serializer: MsgPackSerializer,
        config: CacheDatabaseConfig | None = None,
    ) -> None:
        if config is None:
            config = CacheDatabaseConfig()
        if not isinstance(config, CacheDatabaseConfig):
            raise TypeError(f"config must be a CacheDatabaseConfig, got {type(config).__name__}")
        self.trader_id = TraderId(str(trader_id))
        self.config = config
        self._log = logger
        self._serializer = serializer
        self._keys = Keys(self.trader_id.value, hash_tag=config.cluster, layout=config.layout)
        self._redis: Any = (
            redis.RedisCluster(**config.client_kwargs()) if config.cluster else redis.Redis(**config.client_kwargs())
        )
        self._apply = self._redis.register_script(APPLY_SCRIPT)
        self._read = self._redis.register_script(READ_SCRIPT)
        self._pending: list[Write | Mark] | None = None
        self._index_script = self._redis.register_script(INDEX_SCRIPT)
        self._clock = self._redis.register_script(CLOCK_SCRIPT)
        self._purge = self._redis.register_script(PURGE_SCRIPT)
        self._indexes_complete = False

    @property
    def keys(self) -> Keys:
        return self._keys

    def close(self) -> None:
        """Close the connection pool.

        Raises:
            Nothing: closing a lost or never-used connection is not an error.
        """
        self._redis.close()

    # -- plumbing ------------------------------------------------------------------------

    def _unavailable_as(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """redis-py's errors as ours (`redis_errors.translated`): StoreUnavailable when Redis
        cannot do it now, StoreRefused when it refused what the call carried."""
        return translated(operation)

    def _write(self, operation: str, writes: Sequence[Write | Mark]) -> list[int]:
        if self._pending is not None:
            self._pending.extend(writes)
            return []
        return self._send(operation, writes)

    def _send(self, operation: str, items: Sequence[Write | Mark]) -> list[int]:
        """One atomic call. A write whose id is already stored with other content (a conflicting
        duplicate) is logged and left out, and the others are written, as NautilusTrader's API
        raises nothing for a repeated event. Marks (closed / reopened) follow the writes."""
        writes = [item for item in items if isinstance(item, Write)]
        marks = [item for item in items if isinstance(item, Mark)]
        while True:
            call = plan_writes(writes, self._keys, self._serializer.serialize)
            plan_marks(marks, self._keys, call)
            try:
                with self._unavailable_as(operation):
                    results: list[int] = self._apply(*call.packed())
                return results
            except StoreRefused as exc:
                named = conflict_operation(exc.cause)
                refused = None if named is None else call.operations[named[0]]
                if named is None or refused is None:
                    raise
                self._log.error(
                    "%s: not written, a conflicting duplicate: %s '%s': %s",
                    operation, refused.collection.value, refused.key, named[1],
                )  # fmt: skip
                writes = [write for write in writes if write is not refused]

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the writes of the calls made inside and send them together on exit.

        `with db.batch(): db.update_order(a); db.update_order(b)` costs one atomic call per
        BATCH_SIZE writes instead of one per call. Nothing is written if the block raises.
        Writes made inside are not visible to loads made inside.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: as the writes would, when the block ends (nothing is written if the block raises).
        """
        if self._pending is not None:
            yield  # already batching: the outermost block sends
            return
        self._pending = []
        try:
            yield
            pending = self._pending
        finally:
            self._pending = None
        for start in range(0, len(pending), BATCH_SIZE):
            self._send("batch", pending[start : start + BATCH_SIZE])

    # -- adoption (see cache/adoption.py) -----------------------------------------------------

    def build_indexes(self, *, force: bool = False) -> IndexReport:
        """Index every entity stored for this trader (a SCAN of its keys), unless a finished pass
        already did (`force=True` scans anyway). Makes a Redis written by NautilusTrader's own
        cache database load fully; safe while the daemon writes. Runs by itself before the first
        load of a whole collection.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the index script. A user whose ACL forbids SCAN is not an error:
                the report says so (`refused`) and the pass is skipped.
        """
        return self._build_indexes(force, "build_indexes")

    def _build_indexes(self, force: bool, operation: str) -> IndexReport:
        report = IndexReport()
        with self._unavailable_as(operation):
            if not force and self._redis.get(self._keys.indexed()):  # (GET: no new command for an ACL)
                self._indexes_complete = True
                report.skipped = True
                return report
            try:
                self._scan_and_index(report)
            except redis.exceptions.NoPermissionError as exc:
                report.refused = str(exc)
                self._indexes_complete = True
                self._log.warning("build_indexes: %s", report.summary())
                return report
            if report.entities:  # an empty trader leaves no key behind (flush() stays complete)
                self._redis.set(self._keys.indexed(), "1")
        self._indexes_complete = True
        if report.added:
            self._log.info("build_indexes: %s", report.summary())
        return report

    def _scan_and_index(self, report: IndexReport) -> None:
        found: list[str] = []
        for key in self._redis.scan_iter(match=self._keys.scan_pattern(), count=SCAN_COUNT):
            found.append(as_text(key))
            if len(found) >= SCAN_COUNT:
                self._index_found(found, report)
                found = []
        self._index_found(found, report)

    def _index_found(self, found: list[str], report: IndexReport) -> None:
        batch = plan_index(self._keys, found)
        added = int(self._index_script(keys=batch.keys, args=batch.ids)) if batch.ids else 0
        report.take(found, batch, added)

    def _members(self, collection: Collection, operation: str) -> list[str]:
        if not self._indexes_complete:
            self._build_indexes(False, operation)
        return [as_text(member) for member in self._redis.zrange(self._keys.index(collection), 0, -1)]

    def _read_all(self, operation: str, collection: Collection) -> dict[str, Any]:
        """Every entity of a collection: the index, then every key by READ_SCRIPT.

        One round trip per READ_CHUNK entities (plus one for the index), whatever the size.
        """
        command = READ_COMMANDS[collection]
        with self._unavailable_as(operation):
            ids = self._members(collection, operation)
            values: list[Any] = []
            for start in range(0, len(ids), READ_CHUNK):
                chunk = [self._keys.entity(collection, entity_id) for entity_id in ids[start : start + READ_CHUNK]]
                values.extend(self._read(keys=chunk, args=[command]))
        return {entity_id: read_result(command, value) for entity_id, value in zip(ids, values, strict=True)}

    def _read_chunk(self, collection: Collection, ids: Sequence[str]) -> list[Any]:
        command = READ_COMMANDS[collection]
        keys = [self._keys.entity(collection, entity_id) for entity_id in ids]
        if pipelines(command, self._redis):
            return read_lists(self._redis, keys)
        values = self._read(keys=keys, args=[command])
        return [read_result(command, value) for value in values]

    # -- retention (optional; see cache/retention.py) ----------------------------------------

    def apply_retention(self, policy: RetentionPolicy) -> SweepReport:
        """Remove what `policy` does not keep: closed orders (with their commands) and closed
        positions older than its ages, account states beyond its count. Not part of
        NautilusTrader's API; the daemon runs the same sweep on a timer (`retention:`).
        Orders and positions count as closed from when this version first stored them closed.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the purge script (a key of another type).
        """
        steps = sweep(policy, self._keys, None)
        request: Request = next(steps)
        while True:
            with self._unavailable_as("apply_retention"):
                answer = self._answer(request)
            try:
                request = steps.send(answer)
            except StopIteration as done:
                report: SweepReport = done.value
                return report

    def _answer(self, request: Request) -> Any:
        client = self._redis
        if isinstance(request, Clock):
            return int(self._clock(keys=[self._keys.lease()]))
        if isinstance(request, ClosedIds):
            found = client.zrangebyscore(request.key, "-inf", request.cutoff_ms, start=0, num=request.limit)
            return [as_text(item) for item in found]
        if isinstance(request, IndexPage):
            start = "-" if request.after is None else "(" + request.after
            return [as_text(item) for item in client.zrangebylex(request.key, start, "+", 0, request.limit)]
        if isinstance(request, ReadKeys):
            pipe = client.pipeline(transaction=False)
            for read in request.reads:
                if read.command == "LRANGE":
                    pipe.lrange(read.key, 0, read.count - 1 if read.count > 0 else -1)
                elif read.command == "GET":
                    pipe.get(read.key)
                elif read.command == "HGET":
                    pipe.hget(read.key, read.field)
                else:
                    pipe.llen(read.key)
            return pipe.execute()
        return self._purge(keys=request.keys, args=request.args)

    # -- flush ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Delete every key of this trader (and none of any other trader's).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused SCAN or UNLINK (an ACL).
        """
        with self._unavailable_as("flush"):
            batch: list[Any] = []
            for key in self._redis.scan_iter(match=self._keys.scan_pattern(), count=_FLUSH_SCAN_COUNT):
                if foreign(self._keys, key.decode(errors="replace") if isinstance(key, bytes) else key):
                    continue
                batch.append(key)
                if len(batch) >= _FLUSH_SCAN_COUNT:
                    self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                self._redis.unlink(*batch)
        self._indexes_complete = False

    # -- currencies ----------------------------------------------------------------------

    def add_currency(self, currency: Currency) -> None:
        """Store a currency (replacing the one stored with its code).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        self._write("add_currency", [Write(WriteOp.SET, Collection.CURRENCIES, currency.code, currency)])

    def load_currency(self, code: str) -> Currency | None:
        """The currency stored under `code` (and registered by its code), or None.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
        """
        if not is_key_part(code):
            return None
        with self._unavailable_as("load_currency"):
            stored = self._read(keys=[self._keys.entity(Collection.CURRENCIES, code)], args=["TYPED"])
        currency = currency_from_hash(code, read_result("TYPED", stored[0]))
        if currency is not None:
            register_currency(currency)
        return currency

    def load_currencies(self) -> dict[str, Currency]:
        """Every stored currency by code (each registered by its code).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
        """
        currencies = {}
        for code, fields in self._read_all("load_currencies", Collection.CURRENCIES).items():
            currency = currency_from_hash(code, fields)
            if currency is not None:
                register_currency(currency)
                currencies[code] = currency
        return currencies

    # -- instruments ---------------------------------------------------------------------

    def add_instrument(self, instrument: Instrument) -> None:
        """Store an instrument (replacing the one stored with its id).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        write = Write(WriteOp.SET, Collection.INSTRUMENTS, instrument.id.value, instrument)
        self._write("add_instrument", [write])

    def load_instrument(self, instrument_id: InstrumentId) -> Instrument | None:
        """The instrument stored under `instrument_id`, or None.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
        """
        if not is_key_part(str(instrument_id)):
            return None
        with self._unavailable_as("load_instrument"):
            raw = self._redis.get(self._keys.entity(Collection.INSTRUMENTS, str(instrument_id)))
        return instrument_from_bytes(self._serializer, raw)

    def load_instruments(self) -> dict[InstrumentId, Instrument]:
        """Every stored instrument by id.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
        """
        stored = self._read_all("load_instruments", Collection.INSTRUMENTS)
        found = (instrument_from_bytes(self._serializer, raw) for raw in stored.values())
        return {instrument.id: instrument for instrument in found if instrument is not None}

    # -- accounts ------------------------------------------------------------------------

    def add_account(self, account: Account) -> None:
        """Store a new account: its first AccountState.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        self._append("add_account", Collection.ACCOUNTS, account.id.value, account.events[0])

    def update_account(self, account: Account) -> None:
        """Store the account's latest AccountState.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        self._append("update_account", Collection.ACCOUNTS, account.id.value, account.last_event)

    def load_account(self, account_id: AccountId) -> Account | None:
        """The account rebuilt from its stored states, or None.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
        """
        if not is_key_part(str(account_id)):
            return None
        with self._unavailable_as("load_account"):
            raw = self._redis.lrange(self._keys.entity(Collection.ACCOUNTS, str(account_id)), 0, -1)
        return account_from_states(self._serializer, raw)

    def load_accounts(self) -> dict[AccountId, Account]:
        """Every stored account by id, rebuilt from its states.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
        """
        accounts = {}
        for raw in self._read_all("load_accounts", Collection.ACCOUNTS).values():
            account = account_from_states(self._serializer, raw)
            if account is not None:
                accounts[account.id] = account
        return accounts

    # -- orders --------------------------------------------------------------------------

    def add_order(self, order: Order, position_id: PositionId | None = None, client_id: ClientId | None = None) -> None:
        """Store a new order: its OrderInitialized. (`position_id` / `client_id` are accepted for
        NautilusTrader compatibility; the layout has no place for them.)

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        self._append("add_order", Collection.ORDERS, order.client_order_id.value, order.init_event)

    def update_order(self, order: Order) -> None:
        """Store the order's latest event (a no-op if that event is already stored).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        key = order.client_order_id.value
        self._append("update_order", Collection.ORDERS, key, order.last_event, _order_mark(key, order))

    def load_order(self, client_order_id: ClientOrderId) -> Order | None:
        """The order rebuilt from its stored events, or None.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
        """
        if not is_key_part(str(client_order_id)):
            return None
        with self._unavailable_as("load_order"):
            raw = self._redis.lrange(self._keys.entity(Collection.ORDERS, str(client_order_id)), 0, -1)
        return order_from_events(self._serializer, raw)

    def load_orders(self) -> dict[ClientOrderId, Order]:
        """Every stored order by client order id, rebuilt from its events.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
        """
        orders = {}
        with _ReadAhead(self, "load_orders", Collection.ORDERS) as chunks, gc_paused():
            for chunk in chunks:
                for raw in chunk:
                    order = order_from_events(self._serializer, raw)
                    if order is not None:
                        orders[order.client_order_id] = order
        return orders

    # -- positions -----------------------------------------------------------------------

    def add_position(self, position: Position, oms_type: OmsType | None = None) -> None:
        """Store a new position: its opening fill.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        self._append("add_position", Collection.POSITIONS, position.id.value, position.events[0])

    def update_position(self, position: Position) -> None:
        """Store the position's latest fill.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        key = position.id.value
        last = position.last_event
        mark = Mark(Collection.POSITIONS, key, closed=True, event_id=last.event_id) if position.is_closed else None
        self._append("update_position", Collection.POSITIONS, key, last, mark)

    def load_position(self, position_id: PositionId) -> Position | None:
        """The position rebuilt from its stored fills on its instrument, or None (also when the
        instrument is missing: logged).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
        """
        if not is_key_part(str(position_id)):
            return None
        with self._unavailable_as("load_position"):
            raw = self._redis.lrange(self._keys.entity(Collection.POSITIONS, str(position_id)), 0, -1)
        fills = fills_of(self._serializer, raw)
        if not fills:
            return None
        instrument = self.load_instrument(fills[0].instrument_id)
        return self._position(str(position_id), fills, instrument)

    def load_positions(self) -> dict[PositionId, Position]:
        """Every stored position by id, rebuilt from its fills (those whose instrument is missing are
        logged and left out).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
        """
        stored = self._read_all("load_positions", Collection.POSITIONS)
        fills_by_id = {pid: fills_of(self._serializer, raw) for pid, raw in stored.items()}
        needed = sorted({fills[0].instrument_id.value for fills in fills_by_id.values() if fills})
        with self._unavailable_as("load_positions"):
            pipe = self._redis.pipeline(transaction=False)
            for instrument_id in needed:
                pipe.get(self._keys.entity(Collection.INSTRUMENTS, instrument_id))
            raw_instruments = pipe.execute() if needed else []
        instruments = {
            iid: instrument_from_bytes(self._serializer, raw) for iid, raw in zip(needed, raw_instruments, strict=True)
        }
        positions = {}
        for pid, fills in fills_by_id.items():
            if not fills:
                continue
            position = self._position(pid, fills, instruments.get(fills[0].instrument_id.value))
            if position is not None:
                positions[position.id] = position
        return positions

    def _position(self, position_id: str, fills: list[OrderFilled], instrument: Instrument | None) -> Position | None:
        if instrument is None:
            self._log.error(
                "cannot load position %s: instrument %s not found", position_id, fills[0].instrument_id.value
            )
            return None
        return position_from_fills(fills, instrument)

    # -- commands ------------------------------------------------------------------------

    def add_submit_order_command(self, command: SubmitOrder) -> None:
        """Store a SubmitOrder command (a no-op if its command id is already stored).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        write = Write(WriteOp.SET, Collection.SUBMIT_ORDER, command.client_order_id.value, command)
        self._write("add_submit_order_command", [write])

    def load_submit_order_command(self, client_order_id: ClientOrderId) -> SubmitOrder | None:
        """The SubmitOrder stored for `client_order_id`, or None.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            ValueError: the key holds another kind of command.
        """
        if not is_key_part(str(client_order_id)):
            return None
        with self._unavailable_as("load_submit_order_command"):
            raw = self._redis.get(self._keys.entity(Collection.SUBMIT_ORDER, str(client_order_id)))
        return submit_order_from_bytes(self._serializer, raw)

    def load_submit_order_commands(self) -> dict[ClientOrderId, SubmitOrder]:
        """Every stored SubmitOrder by client order id.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
            ValueError: the key holds another kind of command.
        """
        stored = self._read_all("load_submit_order_commands", Collection.SUBMIT_ORDER)
        found = (submit_order_from_bytes(self._serializer, raw) for raw in stored.values())
        return {command.client_order_id: command for command in found if command is not None}

    def add_submit_order_list_command(self, command: SubmitOrderList) -> None:
        """Store a SubmitOrderList command (a no-op if its command id is already stored).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        write = Write(WriteOp.SET, Collection.SUBMIT_ORDER_LIST, command.order_list_id.value, command)
        self._write("add_submit_order_list_command", [write])

    def load_submit_order_list_command(self, order_list_id: OrderListId) -> SubmitOrderList | None:
        """The SubmitOrderList stored under `order_list_id`, or None.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            ValueError: the key holds another kind of command.
        """
        if not is_key_part(str(order_list_id)):
            return None
        with self._unavailable_as("load_submit_order_list_command"):
            raw = self._redis.get(self._keys.entity(Collection.SUBMIT_ORDER_LIST, str(order_list_id)))
        return submit_order_list_from_bytes(self._serializer, raw)

    def load_submit_order_list_commands(self) -> dict[OrderListId, SubmitOrderList]:
        """Every stored SubmitOrderList by order list id.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: the key holds another type than the layout's (written by something else).
            PayloadError: a stored payload is not a valid message.
            Also what `build_indexes` raises, when it runs first.
            ValueError: the key holds another kind of command.
        """
        stored = self._read_all("load_submit_order_list_commands", Collection.SUBMIT_ORDER_LIST)
        found = (submit_order_list_from_bytes(self._serializer, raw) for raw in stored.values())
        return {command.order_list_id: command for command in found if command is not None}

    # -- strategies ----------------------------------------------------------------------

    def update_strategy(self, strategy: HasState | StrategyState) -> None:
        """Store a strategy's state (fields are set; fields not given keep their value).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        if isinstance(strategy, StrategyState):
            strategy_id, state = strategy.strategy_id, strategy.state
        else:
            strategy_id, state = strategy.id, strategy.save()
        write = Write(WriteOp.MERGE, Collection.STRATEGIES, str(strategy_id), dict(state))
        self._write("update_strategy", [write])

    def load_strategy(self, strategy_id: StrategyId) -> dict[str, bytes]:
        """The strategy's state in either layout (this layout's key first); `{}` when absent.

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the read (an ACL).
            ValueError: a stored field's value is not bytes (written by something else).
        """
        if not is_key_part(str(strategy_id)):
            return {}
        with self._unavailable_as("load_strategy"):
            stored = self._read(keys=list(self._keys.strategy_states(str(strategy_id))), args=["TYPED"])
        found = [read_result("TYPED", value) for value in stored]
        return strategy_state_from(next((value for value in found if value), None))

    def delete_strategy(self, strategy_id: StrategyId) -> None:
        """Remove the strategy's state (both layouts' keys).

        Raises:
            StoreUnavailable: Redis cannot answer now (down, timing out, loading, a read-only replica).
            StoreRefused: Redis refused the call (a key of another type, an ACL, a script error). A
                conflicting duplicate is not raised: it is logged and left out. Inside `batch()` nothing
                is sent until the block ends, and the end of the block raises instead.
        """
        self._write("delete_strategy", [Write(WriteOp.DELETE, Collection.STRATEGIES, str(strategy_id))])

    # -- helpers -------------------------------------------------------------------------

    def _append(
        self, operation: str, collection: Collection, entity_id: str, event: Any, mark: Mark | None = None
    ) -> None:
        write = Write(WriteOp.APPEND, collection, entity_id, event)
        results = self._write(operation, [write] if mark is None else [write, mark])
        if results and int(results[0]) == 0:
            self._log.debug("%s: event %s already stored for %s", operation, event.event_id, entity_id)


def _order_mark(key: str, order: Order) -> Mark | None:
    """Retention's bookkeeping for an order's latest event: closed, reopened (a late fill of a
    canceled order), or nothing."""
    if order.is_closed:
        return Mark(Collection.ORDERS, key, closed=True)
    if isinstance(order.last_event, OrderFilled):
        return Mark(Collection.ORDERS, key, closed=False)
    return None


__all__ = [
    "BATCH_SIZE",
    "UNAVAILABLE_ERRORS",
    "HasState",
    "RedisCacheDatabase",
    "is_unavailable",
]
