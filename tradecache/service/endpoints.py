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
from tradecache.service.protocol import PageRequest

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


class Loader:
    """Answers load endpoints from one trader's Redis."""

    def __init__(self, store: Store, serializer: MsgPackSerializer) -> None:
        self.store = store
        self.serializer = serializer

    async def one(self, collection: Collection, entity_id: str) -> Any:
        """One entity's reply: an item, None when absent (a strategy: an empty map)."""
        raw = await self.store.read_entity(collection, entity_id)
        instruments = await self._instruments_for(collection, [raw])
        return self._item(collection, entity_id, raw, instruments)

    async def page(self, collection: Collection, request: PageRequest) -> tuple[dict[str, Any], str | None]:
        """A page of the collection as `{id: item}` (absent items left out), and the last id
        when more follow."""
        page = await self.store.read_page(collection, request.after, request.limit)
        instruments = await self._instruments_for(collection, page.items.values())
        items: dict[str, Any] = {}
        for count, (entity_id, raw) in enumerate(page.items.items(), start=1):
            item = self._item(collection, entity_id, raw, instruments)
            if item is not None:
                items[entity_id] = item
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return items, page.last

    async def _instruments_for(self, collection: Collection, raws: Iterable[Any]) -> dict[str, bytes]:
        """Positions are rebuilt with their instrument: read those the fills name, in one call."""
        if collection != Collection.POSITIONS:
            return {}
        needed = (first_fill_instrument(raw) for raw in raws)
        return await self.store.read_instruments(iid for iid in needed if iid)

    def _item(self, collection: Collection, entity_id: str, raw: Any, instruments: dict[str, bytes]) -> Any:
        if collection == Collection.ORDERS:
            return order_item(self.serializer, raw)
        if collection == Collection.POSITIONS:
            return position_item(self.serializer, raw, instruments.get(first_fill_instrument(raw) or ""))
        if collection == Collection.ACCOUNTS:
            return account_item(self.serializer, raw)
        if collection == Collection.CURRENCIES:
            return currency_item(entity_id, raw)
        if collection == Collection.STRATEGIES:
            return strategy_item(raw)
        return stored_map_item(raw)


StatsSource = Callable[[], Awaitable[dict[str, Any]]]

__all__ = ["ENDPOINTS", "ENDPOINTS_BY_NAME", "YIELD_EVERY", "Endpoint", "Loader", "StatsSource"]
