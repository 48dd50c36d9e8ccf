"""The daemon's Redis executor (asyncio): read the state a batch needs, commit a batch.

Only I/O lives here; what to read and what to write come from the pure core. redis-py's errors
are read in one place (`cache/redis_errors.py`): "cannot do it now" becomes `StoreUnavailable`,
which the ingest loop retries with backoff while /readyz says 503; a refusal of what a call
carried becomes `StoreRefused`, which the loop pins to one message; a fenced write (another
daemon holds the trader's lease) becomes `LeaseLost`. redis-py's own retries are turned off on the
client, so that a stalled Redis shows as unavailable after one `socket_timeout` rather than after
eleven of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tradecache.cache.adoption import INDEX_SCRIPT, SCAN_COUNT, IndexReport, plan_index
from tradecache.cache.keys import COUNTED, Keys
from tradecache.cache.lists import pipelines, read_lists_async
from tradecache.cache.plan import (
    APPLY_SCRIPT,
    READ_CHUNK,
    READ_COMMANDS,
    READ_SCRIPT,
    ScriptCall,
    as_text,
    read_result,
)
from tradecache.cache.redis_errors import is_unavailable, translate, translated
from tradecache.cache.replay import decode_events, gc_paused
from tradecache.model.events import AccountState, OrderEvent, OrderFilled
from tradecache.model.key_parts import is_key_part
from tradecache.model.ledger import Collection, StateRequest, StoredState
from tradecache.serialization.msgpack import MsgPackSerializer


@dataclass(frozen=True, slots=True)
class Page:
    """Entities as stored, by id in id order; `last` is the id to continue after (None: no more)."""

    items: dict[str, Any]
    last: str | None


class Store:
    """One trader's Redis, as the ingest loop and the load service use it."""

    def __init__(self, client: Any, keys: Keys, serializer: MsgPackSerializer) -> None:
        if isinstance(client, redis.asyncio.Redis):
            # redis-py retries a timed-out or dropped command 10 times by default (with backoff),
            # each time waiting up to socket_timeout: a blocked Redis would hold one commit for
            # minutes, silently, with readiness still true. The ingest loop retries instead.
            client.set_retry(Retry(NoBackoff(), 0))
        self.client = client
        self.keys = keys
        self.serializer = serializer
        self._apply = client.register_script(APPLY_SCRIPT)
        self._read = client.register_script(READ_SCRIPT)
        self._index_script = client.register_script(INDEX_SCRIPT)
        self._indexes_complete = False
        self._indexing = asyncio.Lock()
        # Retention removes closed orders: reads of missing orders also read their tombstones.
        self.purged_lookup = False
        # Commits made (or tried) so far: a page built ahead of its request is served only if
        # none happened since its build began (service/ahead.py).
        self.commits = 0

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except OSError:
            return False
        except redis.exceptions.RedisError as exc:
            if is_unavailable(exc):
                return False
            raise

    async def read_checkpoint(self) -> int:
        with translated("read checkpoint"):
            raw = await self.client.get(self.keys.checkpoint())
        return int(raw) if raw else 0

    async def commit(self, call: ScriptCall) -> list[int]:
        """Run one batch's script call (atomic). Raises StoreUnavailable."""
        if not call.count:
            return []
        try:
            with translated("commit batch"):
                results: list[int] = await self._apply(*call.packed())
        finally:
            self.commits += 1  # after: a read that began during the commit may not have seen it
        return results

    async def read_state(self, request: StateRequest) -> StoredState:
        """Everything `request` names, in one round trip."""
        plan: list[tuple[Collection, str]] = [
            *((Collection.ORDERS, key) for key in sorted(request.orders)),
            *((Collection.POSITIONS, key) for key in sorted(request.positions)),
            *((Collection.ACCOUNTS, key) for key in sorted(request.accounts)),
            *((Collection.INSTRUMENTS, key) for key in sorted(request.instruments)),
        ]
        state = StoredState()
        if not plan and not request.pending_openings and not request.pending_ids:
            return state
        keys = [self.keys.entity(collection, key) for collection, key in plan]
        commands = ["GET" if collection == Collection.INSTRUMENTS else "LRANGE" for collection, _ in plan]
        if request.pending_openings:  # read in the same call, after the entities
            keys.append(self.keys.pending_openings())
            commands.append(f"HGETALL\n{request.pending_limit}" if request.pending_limit else "HGETALL")
        pending_ids = sorted(request.pending_ids)  # then these fields of it, one by one
        keys += [self.keys.pending_openings()] * len(pending_ids)
        commands += [f"HGET\n{opening_order_id}" for opening_order_id in pending_ids]
        orders = sorted(request.orders) if self.purged_lookup else []
        with translated("read state"):
            if orders and isinstance(self.client, redis.asyncio.Redis):
                # One round trip still: the read and the tombstones in one pipeline (which loads
                # the script first if Redis lacks it; a cluster pipeline does not, so two calls).
                pipe = self.client.pipeline(transaction=False)
                await self._read(keys=keys, args=commands, client=pipe)
                pipe.zmscore(self.keys.purged(Collection.ORDERS), orders)
                values, scores = await pipe.execute()
            else:
                values = await self._read(keys=keys, args=commands)
                scores = await self.client.zmscore(self.keys.purged(Collection.ORDERS), orders) if orders else []
            state.purged_orders = {coid: int(score) for coid, score in zip(orders, scores, strict=True) if score}
        with gc_paused():
            if pending_ids:
                found = [value for value in values[len(values) - len(pending_ids) :] if value]
                values = values[: len(values) - len(pending_ids)]
                state.pending_by_id = decode_events(self.serializer, found, OrderFilled, "pending_openings")
            if request.pending_openings:
                *values, held = values
                if held is None:  # over `pending_limit`: Redis kept them
                    state.pending_openings_over = True
                else:
                    state.pending_openings = decode_events(
                        self.serializer, list(read_result("HGETALL", held).values()), OrderFilled, "pending_openings"
                    )
            for (collection, key), value in zip(plan, values, strict=True):
                self._take(state, collection, key, value)
        return state

    def keys_read(self, request: StateRequest) -> set[str]:
        """The keys `read_state(request)` reads (work ahead must not read what a call in flight writes)."""
        keys = self.keys
        found = {keys.entity(Collection.ORDERS, key) for key in request.orders}
        found.update(keys.entity(Collection.POSITIONS, key) for key in request.positions)
        found.update(keys.entity(Collection.ACCOUNTS, key) for key in request.accounts)
        found.update(keys.entity(Collection.INSTRUMENTS, key) for key in request.instruments)
        if request.pending_openings or request.pending_ids:
            found.add(keys.pending_openings())
        if request.orders and self.purged_lookup:
            found.add(keys.purged(Collection.ORDERS))
        return found

    def _take(self, state: StoredState, collection: Collection, key: str, value: Any) -> None:
        if collection == Collection.INSTRUMENTS:
            if value:
                state.instruments[key] = self.serializer.deserialize_instrument(value)
        elif collection == Collection.ORDERS:
            state.orders[key] = decode_events(self.serializer, value, OrderEvent, f"orders:{key}")
        elif collection == Collection.POSITIONS:
            state.positions[key] = decode_events(self.serializer, value, OrderFilled, f"positions:{key}")
        else:
            state.accounts[key] = decode_events(self.serializer, value, AccountState, f"accounts:{key}")

    # -- adoption (see cache/adoption.py) ----------------------------------------------------

    async def ensure_indexes(self, *, force: bool = False) -> IndexReport:
        """Index every entity stored for this trader unless a finished pass already did (a SCAN,
        in steps of SCAN_COUNT keys, so Redis keeps serving meanwhile). Concurrent callers wait
        for the one pass. Raises StoreUnavailable."""
        if self._indexes_complete and not force:
            return IndexReport(skipped=True)
        async with self._indexing:
            if self._indexes_complete and not force:
                return IndexReport(skipped=True)
            report = await self._build_indexes(force)
            self._indexes_complete = True
            return report

    async def _build_indexes(self, force: bool) -> IndexReport:
        report = IndexReport()
        with translated("build indexes"):
            if not force and await self.client.get(self.keys.indexed()):  # (GET: no new command for an ACL)
                report.skipped = True
                return report
            try:
                await self._scan_and_index(report)
            except redis.exceptions.NoPermissionError as exc:  # an ACL without SCAN: serve as we are
                report.refused = str(exc)
                return report
            if report.entities:  # an empty trader leaves no key behind (flush() stays complete)
                await self.client.set(self.keys.indexed(), "1")
        return report

    async def _scan_and_index(self, report: IndexReport) -> None:
        found: list[str] = []
        async for key in self.client.scan_iter(match=self.keys.scan_pattern(), count=SCAN_COUNT):
            found.append(as_text(key))
            if len(found) >= SCAN_COUNT:
                await self._index_found(found, report)
                found = []
        await self._index_found(found, report)

    async def _index_found(self, found: list[str], report: IndexReport) -> None:
        batch = plan_index(self.keys, found)
        added = int(await self._index_script(keys=batch.keys, args=batch.ids)) if batch.ids else 0
        report.take(found, batch, added)

    # -- loads (the load service) --------------------------------------------------------

    async def read_entity(self, collection: Collection, entity_id: str) -> Any:
        """One entity as stored: a list of bytes, bytes, or a hash (empty / None when absent).

        An id ingest would refuse (`model/key_parts.py`) is absent: no entity of this trader has
        it, and its key could be another trader's."""
        command = READ_COMMANDS[collection]
        if not is_key_part(entity_id):
            return [] if command == "LRANGE" else {} if collection == Collection.STRATEGIES else None
        key = self.keys.entity(collection, entity_id)
        try:  # (not `translated`: this is the hot path of every load request)
            if command == "LRANGE":
                return list(await self.client.lrange(key, 0, -1))
            if command == "GET":
                return await self.client.get(key)
            if collection == Collection.STRATEGIES:  # either layout's key, this layout's first
                both = await self._read(keys=list(self.keys.strategy_states(entity_id)), args=["TYPED"])
                return next((found for found in (read_result("TYPED", value) for value in both) if found), {})
            if command == "TYPED":  # a hash (seed layout) or a msgpack string (nautilus layout)
                return read_result("TYPED", (await self._read(keys=[key], args=["TYPED"]))[0])
            fields = await self.client.hgetall(key)
        except redis.exceptions.RedisError as exc:
            ours = translate(f"load {collection.value}", exc)
            if ours is exc:
                raise
            raise ours from exc
        return {as_text(field): value for field, value in fields.items()}

    async def read_page(self, collection: Collection, after: str | None, limit: int | None) -> Page:
        """Entities in id order, starting after the id `after`; all of them when `limit` is None."""
        ids = await self.read_ids(collection, after, None if limit is None else limit + 1)
        more = limit is not None and len(ids) > limit
        ids = ids[:limit] if more else ids
        values: list[Any] = []
        for first in range(0, len(ids), READ_CHUNK):
            values.extend(await self.read_entities(collection, ids[first : first + READ_CHUNK]))
        return Page(dict(zip(ids, values, strict=True)), ids[-1] if more else None)

    async def read_ids(self, collection: Collection, after: str | None, count: int | None) -> list[str]:
        """Up to `count` (None: all) ids of the collection's index after the id `after`, in id
        order: one `ZRANGE BYLEX` (once the indexes are complete: `ensure_indexes`)."""
        await self.ensure_indexes()
        start = "-" if after is None else "(" + after
        with translated(f"load {collection.value}"):
            if count is None:
                raw_ids = await self.client.zrangebylex(self.keys.index(collection), start, "+")
            else:
                raw_ids = await self.client.zrangebylex(self.keys.index(collection), start, "+", start=0, num=count)
        return [as_text(item) for item in raw_ids]

    async def read_entities(self, collection: Collection, ids: Sequence[str]) -> list[Any]:
        """The entities `ids` name as stored (absent ones empty or None), in one READ_SCRIPT call."""
        if not ids:
            return []
        command = READ_COMMANDS[collection]
        keys = [self.keys.entity(collection, entity_id) for entity_id in ids]
        with translated(f"load {collection.value}"):
            if pipelines(command, self.client):
                return await read_lists_async(self.client, keys)
            values = await self._read(keys=keys, args=[command])
        return [read_result(command, value) for value in values]

    async def count(self, collection: Collection) -> int:
        """Entities in the collection's index (`ZCARD`), once the indexes are complete."""
        await self.ensure_indexes()
        with translated(f"count {collection.value}"):
            return int(await self.client.zcard(self.keys.index(collection)))

    async def read_instruments(self, instrument_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored instruments among `instrument_ids` (absent ones are left out)."""
        wanted = sorted(set(instrument_ids))
        if not wanted:
            return {}
        keys = [self.keys.entity(Collection.INSTRUMENTS, instrument_id) for instrument_id in wanted]
        with translated("load instruments"):
            values = await self._read(keys=keys, args=["GET"])
        return {instrument_id: value for instrument_id, value in zip(wanted, values, strict=True) if value}

    async def key_counts(self) -> dict[str, int]:
        """Entities per collection, from the indexes (never a scan)."""
        with translated("count keys"):
            pipe = self.client.pipeline(transaction=False)
            order = [collection for group in COUNTED.values() for collection in group]
            for collection in order:
                pipe.zcard(self.keys.index(collection))
            sizes = dict(zip(order, await pipe.execute(), strict=True))
        return {name: sum(int(sizes[c]) for c in group) for name, group in COUNTED.items()}


__all__ = ["COUNTED", "Page", "Store"]
