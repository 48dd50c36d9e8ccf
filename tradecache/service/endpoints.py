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
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from tradecache.model.ledger import Collection
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service.futures import retrieved
from tradecache.service.items import (
    currency_item,
    first_fill_instrument,
    rebuilt_entry,
    stored_map_item,
    strategy_item,
)
from tradecache.service.limits import ID_BATCH, MIN_READ_CHUNK, READ_CHUNK, SLICE_SECONDS
from tradecache.service.ports import LoadStore
from tradecache.service.protocol import PageRequest, encode_entry, encode_reply
from tradecache.service.reply_cache import CacheKey, ReplyCache, digest
from tradecache.wire import ENDPOINTS, ENDPOINTS_BY_NAME, Endpoint

if TYPE_CHECKING:
    from tradecache.service.build_worker import BuildWorker, Submitted

# Entities rebuilt by replaying events: worth caching (see reply_cache.py).
REBUILT: Final = frozenset({Collection.ORDERS, Collection.POSITIONS, Collection.ACCOUNTS})
# A chunk's cache misses below this are all rebuilt on the loop: a job would cost more than it saves.
MIN_SHARED: Final = 8
# An item left for `Loader.build` to rebuild itself, in order (its rebuild failed, or the worker did).
_BUILD_HERE: Final = object()


class _Rebuild(NamedTuple):
    """A rebuilt entity whose reply is not cached: what rebuilding it needs, and its cache entry.
    (A tuple: one is made per cache miss, and a frozen dataclass took 1 us to make.)"""

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
        self.worker = worker  # rebuilds a share of each chunk's misses beside the loop (`build_worker.py`)

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
        here): a request holds at most three chunks (one read, two built). Once the page's entries
        tell their size, the next read takes about what the room left would hold (`next_chunk`):
        a full page leaves a few entities read for nothing, not a whole chunk.

        With the build worker, a chunk's cache misses are rebuilt partly here, partly there
        (`_split`, `_build_own`), and a chunk is added to the page only once the next one is under way: the
        worker gets the next chunk's share before the loop waits for this one's, so it is never
        idle between two chunks and the loop rarely waits. Without it (or for a collection not
        rebuilt) each chunk is added as it is read, each item built when the page reaches it."""
        built = Built()
        slicer = Slicer()
        index = _IdsAfter(self.store, collection, request.after, request.limit)
        ahead: asyncio.Future[_Read] | None = asyncio.ensure_future(self._read_chunk(collection, index))
        held: _Chunk | None = None  # built, not added yet: its worker share may still be out
        chunk: _Chunk | None = None
        try:
            while ahead is not None:
                ids, more, raws, instruments = await ahead
                ahead = None
                if more and not index.limit_reached:
                    in_hand = len(ids) + (len(held.ids) if held is not None else 0)
                    size = next_chunk(built, in_hand, budget)
                    ahead = asyncio.ensure_future(self._read_chunk(collection, index, size))
                    # Let the read go out now: else it is only sent at the building's first
                    # yield (SLICE_SECONDS on), and its answer read at the next one.
                    await asyncio.sleep(0)
                slicer.restart()
                chunk = self._split(collection, ids, more, raws, instruments, as_msgpack)
                await self._build_own(collection, chunk, as_msgpack, slicer)
                if held is not None:
                    added = await self._add(collection, held, built, as_msgpack, budget, slicer)
                    held = None
                    if not added:
                        await self._collected(chunk)  # no room for it: the worker's share is cached for the next page
                        return built
                if chunk.submitted is None:
                    added = await self._add(collection, chunk, built, as_msgpack, budget, slicer)
                    if not added:
                        return built
                else:
                    held = chunk
                chunk = None
            if held is not None:
                await self._add(collection, held, built, as_msgpack, budget, slicer)
            return built
        finally:
            if ahead is not None:  # a read not needed after all
                ahead.cancel()
                ahead.add_done_callback(retrieved)
            for left_out in (held, chunk):  # an error or a cancellation: their worker jobs are given up
                if left_out is not None and left_out.submitted is not None and self.worker is not None:
                    self.worker.drop(left_out.submitted)

    def _split(
        self,
        collection: Collection,
        ids: list[str],
        more: bool,
        raws: list[Any],
        instruments: dict[str, bytes],
        as_msgpack: bool,
    ) -> _Chunk:
        """A chunk read, with the worker: its cached replies looked up, and the worker's share
        (`BuildWorker.share`) of its cache misses, the last ones, sent to it (collected by
        `_add`), the first ones left to `_build_own`. Without the worker, or with fewer than
        MIN_SHARED misses, everything is left to `_add`, built when the page reaches it."""
        chunk = _Chunk(ids, more, raws, instruments, [_BUILD_HERE] * len(ids))
        if collection not in REBUILT or self.worker is None or not self.worker.usable():
            return chunk
        misses: list[tuple[int, _Rebuild]] = []
        for n, (entity_id, raw) in enumerate(zip(ids, raws, strict=True)):
            if not raw:
                chunk.items[n] = None
                continue
            found = self._cached(collection, entity_id, raw, instruments, as_msgpack)
            if isinstance(found, _Rebuild):
                misses.append((n, found))
            else:
                chunk.items[n] = found
        if len(misses) < MIN_SHARED:
            chunk.misses = misses  # built in order by `_add`
            return chunk
        theirs = misses[round(len(misses) * (1 - self.worker.share)) :]
        chunk.submitted = self.worker.submit(
            collection, as_msgpack, [(miss.raw, miss.instrument) for _, miss in theirs]
        )
        if chunk.submitted is None:  # the worker could not take it: all built in order by `_add`
            chunk.misses = misses
            return chunk
        chunk.theirs = theirs
        chunk.mine = misses[: len(misses) - len(theirs)]
        return chunk

    async def _build_own(self, collection: Collection, chunk: _Chunk, as_msgpack: bool, slicer: Slicer) -> None:
        """The loop's share of a chunk's misses, while the worker builds its own. What fails here
        is left to `_add`, which rebuilds it in order and so raises only if the page gets that
        far, as it always did."""
        for n, miss in chunk.mine:
            try:
                chunk.items[n] = self._rebuilt(collection, miss, as_msgpack)
            except Exception:
                chunk.items[n] = _BUILD_HERE
            await slicer.tick()

    async def _collected(self, chunk: _Chunk) -> None:
        """The worker's share of `chunk` in its items (and the reply cache); what it could not
        build, or all of it when it failed, left for `_add` to rebuild in order."""
        submitted, chunk.submitted = chunk.submitted, None
        if submitted is None or self.worker is None:
            return
        built_there = await self.worker.collect(submitted)
        for index, (n, miss) in enumerate(chunk.theirs):
            item = _BUILD_HERE if built_there is None or built_there[index] is False else built_there[index]
            if type(item) is bytes:  # False: the worker could not rebuild it; None: absent
                self.cache.put(miss.key, miss.fingerprint, item)
            chunk.items[n] = item

    async def _add(
        self, collection: Collection, chunk: _Chunk, built: Built, as_msgpack: bool, budget: int, slicer: Slicer
    ) -> bool:
        """Add a chunk's entries to the page in order, building what is left to build; False when
        the page is full (`built.last` is the last entry that fit), else True with `built.last`
        the chunk's last id, or None when no entity follows it."""
        await self._collected(chunk)
        missing = dict(chunk.misses)
        for n, (entity_id, raw) in enumerate(zip(chunk.ids, chunk.raws, strict=True)):
            encoded = chunk.items[n]
            if encoded is _BUILD_HERE:
                miss = missing.get(n)
                if miss is not None:
                    encoded = self._rebuilt(collection, miss, as_msgpack)
                else:
                    encoded = self._encoded(collection, entity_id, raw, chunk.instruments, as_msgpack)
                await slicer.tick()
            if encoded is not None and not built.add(entity_id, encoded, as_msgpack, budget):
                return False
        built.last = chunk.ids[-1] if chunk.more else None
        return True

    async def _read_chunk(self, collection: Collection, index: _IdsAfter, size: int = READ_CHUNK) -> _Read:
        """The next `size` entities of the page (`index`): their ids, whether more follow, what is
        stored for each, and the instruments positions need."""
        ids, more = await index.take(size)
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


class _IdsAfter:
    """A page's ids, in index order after the request's cursor, up to its limit: taken from the
    index ID_BATCH at a time (one more than asked: is there a next?), handed out a chunk at a
    time. A page's reads are chunk by chunk anyway (never one snapshot), so ids read a batch
    ahead answer as they always did: an id removed since is an absent entity, left out."""

    def __init__(self, store: LoadStore, collection: Collection, after: str | None, limit: int | None) -> None:
        self._store = store
        self._collection = collection
        self._after = after  # the last id read from the index
        self._left = limit  # ids the page may still hand out (None: no limit)
        self._read: list[str] = []
        self._exhausted = False  # the index has no id after `_read`

    @property
    def limit_reached(self) -> bool:
        return self._left is not None and self._left <= 0

    async def take(self, size: int) -> tuple[list[str], bool]:
        """Up to `size` ids (fewer at the limit or the index's end), and whether more follow."""
        wanted = size if self._left is None else min(size, self._left)
        if len(self._read) <= wanted and not self._exhausted:
            batch = max(ID_BATCH, wanted + 1)
            if self._left is not None:
                batch = min(batch, self._left + 1)
            batch = max(batch - len(self._read), 1)
            found = await self._store.read_ids(self._collection, self._after, batch)
            self._exhausted = len(found) < batch
            if found:
                self._after = found[-1]
                self._read += found
        ids, self._read = self._read[:wanted], self._read[wanted:]
        if self._left is not None:
            self._left -= len(ids)
        return ids, bool(self._read)


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
_Read = tuple[list[str], bool, list[Any], dict[str, bytes]]


@dataclass(slots=True)
class _Chunk:
    """A chunk of a page being built (`Loader._split`, `Loader._build_own`, `Loader._add`): what was read, and its
    items so far (encoded bytes, None when absent, `_BUILD_HERE` when still to build)."""

    ids: list[str]
    more: bool  # whether entities follow the chunk's last
    raws: list[Any]
    instruments: dict[str, bytes]
    items: list[Any]
    misses: list[tuple[int, _Rebuild]] = field(default_factory=list)  # to rebuild in order, by `_add`
    mine: list[tuple[int, _Rebuild]] = field(default_factory=list)  # to rebuild now, by `_build_own`
    theirs: list[tuple[int, _Rebuild]] = field(default_factory=list)  # sent to the worker
    submitted: Submitted | None = None  # the worker's job, until collected


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
]
