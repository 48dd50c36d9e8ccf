"""Stored state for the load benchmarks: orders written through `RedisCacheDatabase`, so Redis holds
what a tradecache sidecar (or a NautilusTrader node) writes, in NautilusTrader's layout.

`four_event_orders`: MARKET orders initialized, submitted, accepted and filled (the shape of issue
15's loads); `ten_event_order`: a LIMIT order modified twice and filled in three trades.
"""

from __future__ import annotations

import logging
from typing import Any

from tests.unit.factories import OrderEvents
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.model.enums import OrderType
from tradecache.model.identifiers import TraderId
from tradecache.model.orders import Order
from tradecache.serialization import MsgPackSerializer


def database(redis_url: str, trader: str) -> RedisCacheDatabase:
    return RedisCacheDatabase(
        TraderId(trader), logging.getLogger("bench"), MsgPackSerializer(), CacheDatabaseConfig.from_url(redis_url)
    )


def ten_event_order(trader: str, client_order_id: str) -> list[Any]:
    make = OrderEvents(client_order_id, trader_id=trader)
    return [
        make.initialized(OrderType.LIMIT, quantity="1000", options={"price": "1.10000", "display_qty": None,
                                                                     "expire_time_ns": 0}),
        make.submitted(),
        make.accepted(),
        make.pending_update(),
        make.updated("1000", price="1.10010"),
        make.pending_update(),
        make.updated("1000", price="1.10020"),
        make.filled("200", order_type=OrderType.LIMIT),
        make.filled("300", order_type=OrderType.LIMIT),
        make.filled("100", order_type=OrderType.LIMIT),
    ]  # fmt: skip


def store_ten_event_orders(db: RedisCacheDatabase, trader: str, client_order_ids: list[str]) -> None:
    for client_order_id in client_order_ids:
        events = ten_event_order(trader, client_order_id)
        order = Order(events[0])
        db.add_order(order)
        for event in events[1:]:
            order.apply(event)
            db.update_order(order)


def store_four_event_orders(db: RedisCacheDatabase, trader: str, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        make = OrderEvents(f"O-{n:07d}", trader_id=trader)
        order = Order(make.initialized(OrderType.MARKET, options={}))
        db.add_order(order)
        for event in (make.submitted(), make.accepted(), make.filled(order_type=OrderType.MARKET)):
            order.apply(event)
            db.update_order(order)


def fill(redis_url: str, trader: str, count: int, chunk: int = 10_000) -> None:
    """`count` four-event orders for `trader`, written in batches of `chunk` orders."""
    db = database(redis_url, trader)
    try:
        for first in range(0, count, chunk):
            with db.batch():
                store_four_event_orders(db, trader, min(chunk, count - first), first)
    finally:
        db.close()


__all__ = ["database", "fill", "store_four_event_orders", "store_ten_event_orders", "ten_event_order"]
