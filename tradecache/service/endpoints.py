"""How each of the 16 load endpoints of SPEC section 3 is answered from Redis.

The table of endpoints (`ENDPOINTS`: a name, the collection it reads, and for one-entity
endpoints the request key naming the id) is in `tradecache/wire.py`, which the client shares;
it is re-exported here. `Loader` answers them through the `LoadStore` the app gives it (the
daemon's `cache.aio.Store`: pipelined reads, one round trip for an entity, two or three for a
page) and `service/items.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tradecache.model.ledger import Collection
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service.items import (
    currency_item,
    first_fill_instrument,
    rebuilt_entry,
    stored_map_item,
    strategy_item,
)
from tradecache.service.limits import MIN_READ_CHUNK, READ_CHUNK, SLICE_SECONDS
from tradecache.service.ports import LoadStore
from tradecache.service.protocol import PageRequest, encode_entry, encode_reply
from tradecache.service.reply_cache import CacheKey, ReplyCache, digest
from tradecache.wire import ENDPOINTS, ENDPOINTS_BY_NAME, Endpoint

if TYPE_CHECKING:
    from tradecache.service.build_worker import BuildWorker

# Entities rebuilt by replaying events: worth caching (see reply_cache.py).
REBUILT: Final = frozenset({Collection.ORDERS, Collection.POSITIONS, Collection.ACCOUNTS})
# A chunk's cache misses below this are all rebuilt on the loop: a job would cost more than it saves.
MIN_SHARED: Final = 8
# An item left for `Loader.build` to rebuild itself, in order (its rebuild failed, or the worker did).
_BUILD_HERE: Final = object()


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """A rebuilt entity whose reply is not cached: what rebuilding it needs, and its cache entry."""

    key: CacheKey
    fingerprint: bytes
    raw: Any
    instrument: bytes | None


@dataclass(slots=True)
class Built:
    """A collection reply being built: its encoded `id: item` entries, an upper bound of the bytes
    they take once joined, the id to continue after (None: the end), and the id of the item that
    did not fit (None: all fitted)."""

    entries: list[bytes] = field(default_factory=list)
    size: int = 5  # the joined reply's map header or braces
    last: str | None = None
    overflow: str | None = None

    @property
    def full(self) -> bool:
        return self.overflow is not None

    def add(self, entity_id: str, encoded: bytes, as_msgpack: bool, budget: int) -> bool:
        """Add one entry if it fits `budget`; False (and `overflow` set) when it does not, and
        for every entry after that one."""
        if self.overflow is not None:
            return False
        entry = encode_entry(entity_id, encoded, as_msgpack)
        if self.size + len(entry) + 1 > budget:
            self.overflow = entity_id
            return False
        self.entries.append(entry)
        self.size += len(entry) + 1  # a separator (JSON)
        self.last = entity_id
        return True


class Slicer:
    """Gives the event loop back once the work in hand has held it for `seconds`."""

    def __init__(self, seconds: float = SLICE_SECONDS) -> None:
        self.seconds = seconds
        self.since = time.perf_counter()

    def restart(self) -> None:
        self.since = time.perf_counter()

    async def tick(self) -> None:
        if time.perf_counter() - self.since >= self.seconds:
            await asyncio.sleep(0)
            self.since = time.perf_counter()


class Loader:
    """Answers load endpoints from one trader's Redis, as encoded items (JSON or msgpack)."""

    def __init__(
        self,
        store: LoadStore,
        serializer: MsgPackSerializer,
        cache: ReplyCache | None = None,
        worker: BuildWorker | None = None,
    ) -> None:
        self.store = store
        self.serializer = serializer
        self.cache = cache if cache is not None else ReplyCache()
        self.worker = worker  # rebuilds half of each chunk's misses beside the loop (`build_worker.py`)

    async def one(self, collection: Collection, entity_id: str, as_msgpack: bool) -> tuple[bytes, bool]:
        """One entity's encoded reply, and whether it exists (absent: `null`; a strategy: `{}`)."""
        raw = await self.store.read_entity(collection, entity_id)
        instruments = await self._instruments_for(collection, [raw])
        encoded = self._encoded(collection, entity_id, raw, instruments, as_msgpack)
        if encoded is None:
            return encode_reply(None, as_msgpack), False
        return encoded, bool(raw)

    async def build(self, collection: Collection, request: PageRequest, as_msgpack: bool, budget: int) -> Built:
        """A page of the collection (all of it when `request.limit` is None), built entry by entry
        until `budget` bytes: read READ_CHUNK entities at a time, absent ones left out, the loop
        given back every SLICE_SECONDS of building.

        The next chunk is read while this one is built (Redis answers while the replies are built
        here): a request holds at most two chunks. Once the page's entries tell their size, the
        next read takes about what the room left would hold (`next_chunk`): a full page leaves a
        few entities read for nothing, not a whole chunk (a third of the reads, before)."""
        built = Built()
        remaining = request.limit
        slicer = Slicer()
        ahead: asyncio.Future[_Chunk] | None = asyncio.ensure_future(
            self._read_chunk(collection, request.after, remaining)
        )
        try:
            while ahead is not None:
                ids, more, raws, instruments = await ahead
                left = None if remaining is None else remaining - len(ids)
                ahead = None
                if more and (left is None or left > 0):
                    size = next_chunk(built, len(ids), budget)
                    ahead = asyncio.ensure_future(self._read_chunk(collection, ids[-1], left, size))
                slicer.restart()
                beside = None
                if self.worker is not None and self.worker.available and collection in REBUILT:
                    beside = await self._encoded_beside(self.worker, collection, ids, raws, instruments, as_msgpack)
                for n, (entity_id, raw) in enumerate(zip(ids, raws, strict=True)):
                    encoded: bytes | None
                    if beside is None or beside[n] is _BUILD_HERE:
                        encoded = self._encoded(collection, entity_id, raw, instruments, as_msgpack)
                        await slicer.tick()
                    else:
                        encoded = beside[n]
                    if encoded is not None and not built.add(entity_id, encoded, as_msgpack, budget):
                        return built  # full: `built.last` is the last entry that fit
                if not more:
                    built.last = None
                    return built
                built.last = ids[-1]
                remaining = left
            return built
        finally:
            if ahead is not None:  # a read not needed after all
                ahead.cancel()
                ahead.add_done_callback(retrieved)

    async def _encoded_beside(
        self,
        worker: BuildWorker,
        collection: Collection,
        ids: list[str],
        raws: list[Any],
        instruments: dict[str, bytes],
        as_msgpack: bool,
    ) -> list[Any]:
        """A chunk's items (bytes, None when absent, or `_BUILD_HERE`), its cache misses rebuilt
        half here and half by the worker at once. What this half fails to rebuild is left to the
        caller (`_BUILD_HERE`), which rebuilds it in order and so raises only if the page gets
        that far, as it always did; so is the worker's half when it failed."""
        items: list[Any] = [None] * len(ids)
        misses: list[tuple[int, _Rebuild]] = []
        for n, (entity_id, raw) in enumerate(zip(ids, raws, strict=True)):
            if raw:
                found = self._cached(collection, entity_id, raw, instruments, as_msgpack)
                if isinstance(found, _Rebuild):
                    misses.append((n, found))
                else:
                    items[n] = found
        theirs = misses[len(misses) // 2 :] if len(misses) >= MIN_SHARED else []
        mine = misses[: len(misses) - len(theirs)]
        slicer = Slicer()

        async def build_mine() -> None:
            for n, miss in mine:
                try:
                    items[n] = self._rebuilt(collection, miss, as_msgpack)
                except Exception:  # rebuilt again by the caller, if the page gets that far
                    items[n] = _BUILD_HERE
                await slicer.tick()

        if not theirs:
            await build_mine()
            return items
        built_there = await worker.build_beside(
            collection, as_msgpack, [(miss.raw, miss.instrument) for _, miss in theirs], build_mine
        )
        for index, (n, miss) in enumerate(theirs):
            item = _BUILD_HERE if built_there is None or built_there[index] is False else built_there[index]
            if type(item) is bytes:  # False: the worker could not rebuild it; None: absent
                self.cache.put(miss.key, miss.fingerprint, item)
            items[n] = item
        return items

    async def _read_chunk(
        self, collection: Collection, after: str | None, remaining: int | None, size: int = READ_CHUNK
    ) -> _Chunk:
        """Up to `size` entities after the id `after` (at most `remaining`): their ids, whether
        more follow, what is stored for each, and the instruments positions need."""
        wanted = size if remaining is None else min(size, remaining)
        ids = await self.store.read_ids(collection, after, wanted + 1)  # one more: is there a next?
        more = len(ids) > wanted
        ids = ids[:wanted]
        raws = await self.store.read_entities(collection, ids)
        return ids, more, raws, await self._instruments_for(collection, raws)

    async def _instruments_for(self, collection: Collection, raws: Iterable[Any]) -> dict[str, bytes]:
        """Positions are rebuilt with their instrument: read those the fills name, in one call."""
        if collection != Collection.POSITIONS:
            return {}
        needed = (first_fill_instrument(raw) for raw in raws)
        return await self.store.read_instruments(iid for iid in needed if iid)

    def _encoded(
        self, collection: Collection, entity_id: str, raw: Any, instruments: dict[str, bytes], as_msgpack: bool
    ) -> bytes | None:
        if collection not in REBUILT:
            item = self._item(collection, entity_id, raw)
            return None if item is None else encode_reply(item, as_msgpack)
        if not raw:
            return None
        found = self._cached(collection, entity_id, raw, instruments, as_msgpack)
        return self._rebuilt(collection, found, as_msgpack) if isinstance(found, _Rebuild) else found

    def _cached(
        self, collection: Collection, entity_id: str, raw: Any, instruments: dict[str, bytes], as_msgpack: bool
    ) -> bytes | _Rebuild:
        """A rebuilt entity's cached reply, or what rebuilding it takes (`_rebuilt`)."""
        instrument = instruments.get(first_fill_instrument(raw) or "") if collection == Collection.POSITIONS else None
        key = (collection.value, entity_id, as_msgpack)
        fingerprint = digest([*raw, instrument])
        cached = self.cache.get(key, fingerprint)
        return _Rebuild(key, fingerprint, raw, instrument) if cached is None else cached

    def _rebuilt(self, collection: Collection, miss: _Rebuild, as_msgpack: bool) -> bytes | None:
        encoded = rebuilt_entry(self.serializer, collection, miss.raw, miss.instrument, as_msgpack)
        if encoded is not None:
            self.cache.put(miss.key, miss.fingerprint, encoded)
        return encoded

    @staticmethod
    def _item(collection: Collection, entity_id: str, raw: Any) -> Any:
        """The item of an entity answered as stored (not in `REBUILT`)."""
        if collection == Collection.CURRENCIES:
            return currency_item(entity_id, raw)
        if collection == Collection.STRATEGIES:
            return strategy_item(raw)
        return stored_map_item(raw)


def next_chunk(built: Built, in_hand: int, budget: int) -> int:
    """How many entities a page's next read should take: READ_CHUNK until its entries tell their
    size, then about as many as the room left after the `in_hand` entities (read, not built yet)
    would hold, a quarter more, never fewer than MIN_READ_CHUNK."""
    if not built.entries:
        return READ_CHUNK
    average = (built.size - Built().size) / len(built.entries)
    room = budget - built.size - in_hand * average
    wanted = int(room / average * 1.25) + 1 if room > 0 else 0
    return max(MIN_READ_CHUNK, min(READ_CHUNK, wanted))


StatsSource = Callable[[], Awaitable[dict[str, Any]]]
# A chunk read for a page: ids, whether more follow, the stored values, the instruments needed.
_Chunk = tuple[list[str], bool, list[Any], dict[str, bytes]]


def retrieved(work: asyncio.Future[Any]) -> None:
    """Take the outcome of work no one waits for (asyncio would log its error as never retrieved)."""
    if not work.cancelled():
        work.exception()


__all__ = [
    "ENDPOINTS",
    "ENDPOINTS_BY_NAME",
    "REBUILT",
    "Built",
    "Endpoint",
    "Loader",
    "Slicer",
    "StatsSource",
    "next_chunk",
    "retrieved",
]
