"""The 16 load endpoints of SPEC section 3 and how each is answered from Redis.

`ENDPOINTS` is the table: a name, the collection it reads, and for one-entity endpoints the
request key naming the id. `Loader` answers them through the daemon's `Store` (pipelined reads:
one round trip for an entity, two or three for a page) and `service/items.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from tradecache.daemon.store import Store
from tradecache.model.ledger import Collection
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service.items import (
    account_item,
    currency_item,
    first_fill_instrument,
    order_item,
    position_item,
    stored_map_item,
    strategy_item,
)
from tradecache.service.protocol import PageRequest, encode_reply, pack_with_raw_list
from tradecache.service.reply_cache import ReplyCache, digest

# Rebuilding thousands of orders is CPU work on the event loop; yield between slices of this
# many items so that ingestion and other requests keep moving during a big load.
YIELD_EVERY: Final = 500


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    collection: Collection | None  # None: `stats`
    id_field: str | None = None  # set: one entity; None: the whole collection (paged)

    @property
    def is_collection(self) -> bool:
        return self.collection is not None and self.id_field is None


ENDPOINTS: Final = (
    Endpoint("currency", Collection.CURRENCIES, "code"),
    Endpoint("currencies", Collection.CURRENCIES),
    Endpoint("instrument", Collection.INSTRUMENTS, "instrument_id"),
    Endpoint("instruments", Collection.INSTRUMENTS),
    Endpoint("account", Collection.ACCOUNTS, "account_id"),
    Endpoint("accounts", Collection.ACCOUNTS),
    Endpoint("order", Collection.ORDERS, "client_order_id"),
    Endpoint("orders", Collection.ORDERS),
    Endpoint("position", Collection.POSITIONS, "position_id"),
    Endpoint("positions", Collection.POSITIONS),
    Endpoint("strategy", Collection.STRATEGIES, "strategy_id"),
    Endpoint("submit_order_command", Collection.SUBMIT_ORDER, "client_order_id"),
    Endpoint("submit_order_commands", Collection.SUBMIT_ORDER),
    Endpoint("submit_order_list_command", Collection.SUBMIT_ORDER_LIST, "order_list_id"),
    Endpoint("submit_order_list_commands", Collection.SUBMIT_ORDER_LIST),
    Endpoint("stats", None),
)
ENDPOINTS_BY_NAME: Final = {endpoint.name: endpoint for endpoint in ENDPOINTS}


# Entities rebuilt by replaying events: worth caching (see reply_cache.py).
REBUILT: Final = frozenset({Collection.ORDERS, Collection.POSITIONS, Collection.ACCOUNTS})


class Loader:
    """Answers load endpoints from one trader's Redis, as encoded items (JSON or msgpack)."""

    def __init__(self, store: Store, serializer: MsgPackSerializer, cache: ReplyCache | None = None) -> None:
        self.store = store
        self.serializer = serializer
        self.cache = cache if cache is not None else ReplyCache()

    async def one(self, collection: Collection, entity_id: str, as_msgpack: bool) -> tuple[bytes, bool]:
        """One entity's encoded reply, and whether it exists (absent: `null`; a strategy: `{}`)."""
        raw = await self.store.read_entity(collection, entity_id)
        instruments = await self._instruments_for(collection, [raw])
        encoded = self._encoded(collection, entity_id, raw, instruments, as_msgpack)
        if encoded is None:
            return encode_reply(None, as_msgpack), False
        return encoded, bool(raw)

    async def page(
        self, collection: Collection, request: PageRequest, as_msgpack: bool, budget: int | None = None
    ) -> tuple[list[tuple[str, bytes]], str | None]:
        """A page of the collection as encoded `(id, item)` pairs (absent items left out), and
        the last id read when more follow. Stops building once the items pass `budget` bytes
        (the reply's room): the caller cuts the page there anyway."""
        page = await self.store.read_page(collection, request.after, request.limit)
        instruments = await self._instruments_for(collection, page.items.values())
        items: list[tuple[str, bytes]] = []
        size = 0
        for count, (entity_id, raw) in enumerate(page.items.items(), start=1):
            encoded = self._encoded(collection, entity_id, raw, instruments, as_msgpack)
            if encoded is not None:
                items.append((entity_id, encoded))
                size += len(encoded) + len(entity_id) + 8
                if budget is not None and size > budget and count < len(page.items):
                    return items, entity_id
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return items, page.last

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
            item = self._item(collection, entity_id, raw, None)
            return None if item is None else encode_reply(item, as_msgpack)
        if not raw:
            return None
        instrument = instruments.get(first_fill_instrument(raw) or "") if collection == Collection.POSITIONS else None
        key = (collection.value, entity_id, as_msgpack)
        fingerprint = digest([*raw, instrument])
        cached = self.cache.get(key, fingerprint)
        if cached is not None:
            return cached
        item = self._item(collection, entity_id, raw, instrument)
        if item is None:
            return None
        if as_msgpack:  # the events as stored, not packed again (`raw` is the list they came from)
            del item["events"]
            encoded = pack_with_raw_list(item, "events", list(raw))
        else:
            encoded = encode_reply(item, as_msgpack)
        self.cache.put(key, fingerprint, encoded)
        return encoded

    def _item(self, collection: Collection, entity_id: str, raw: Any, instrument: bytes | None) -> Any:
        if collection == Collection.ORDERS:
            return order_item(self.serializer, raw)
        if collection == Collection.POSITIONS:
            return position_item(self.serializer, raw, instrument)
        if collection == Collection.ACCOUNTS:
            return account_item(self.serializer, raw)
        if collection == Collection.CURRENCIES:
            return currency_item(entity_id, raw)
        if collection == Collection.STRATEGIES:
            return strategy_item(raw)
        return stored_map_item(raw)


StatsSource = Callable[[], Awaitable[dict[str, Any]]]

__all__ = ["ENDPOINTS", "ENDPOINTS_BY_NAME", "REBUILT", "YIELD_EVERY", "Endpoint", "Loader", "StatsSource"]
