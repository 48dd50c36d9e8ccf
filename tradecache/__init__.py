"""tradecache: a state-persistence sidecar for trading nodes.

It consumes a node's execution state from NATS JetStream, stores it in Redis with the layout and
semantics of NautilusTrader's RedisCacheDatabase, and serves it back over NATS request-reply.

What users import is exported here (and pinned by tests/unit/test_public_face.py): the database
and its config, the serializer, the clients, the errors and the model types. Each name is loaded
on first use (PEP 562), so `import tradecache` costs nothing and a trading pod that uses only the
client never loads redis. Everything else is internal and may change.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("tradecache")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from tradecache.cache.config import CacheDatabaseConfig
    from tradecache.cache.database import RedisCacheDatabase
    from tradecache.cache.retention import RetentionPolicy, SweepReport
    from tradecache.client import CacheClient, Publisher
    from tradecache.errors import (
        BusRefused,
        BusUnavailable,
        ConfigError,
        EventRejected,
        LeaseLost,
        LoadError,
        OrderEventRefused,
        PayloadError,
        RebuildRefused,
        RejectReason,
        StoreRefused,
        StoreUnavailable,
        TradecacheError,
    )
    from tradecache.model.accounts import Account
    from tradecache.model.events import (
        AccountState,
        OrderEvent,
        OrderFilled,
        OrderInitialized,
        PositionEvent,
        StrategyState,
        SubmitOrder,
        SubmitOrderList,
    )
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
    from tradecache.model.messages import Kind, Message
    from tradecache.model.orders import Order
    from tradecache.model.positions import Position
    from tradecache.model.values import Currency, Money, Price, Quantity
    from tradecache.serialization.msgpack import MsgPackSerializer

# Where each public name is defined, by module.
_EXPORTS: dict[str, tuple[str, ...]] = {
    # the Python API: NautilusTrader's RedisCacheDatabase, its config, retention
    "tradecache.cache.database": ("RedisCacheDatabase",),
    "tradecache.cache.config": ("CacheDatabaseConfig",),
    "tradecache.cache.retention": ("RetentionPolicy", "SweepReport"),
    "tradecache.serialization.msgpack": ("MsgPackSerializer",),
    # the trading pod's side
    "tradecache.client": ("CacheClient", "Publisher"),
    # errors (the tree is drawn in errors.py)
    "tradecache.errors": (
        "TradecacheError", "ConfigError", "EventRejected", "PayloadError", "OrderEventRefused", "StoreUnavailable",
        "StoreRefused", "LeaseLost", "BusUnavailable", "BusRefused", "LoadError", "RebuildRefused", "RejectReason",
    ),
    # the model
    "tradecache.model.orders": ("Order",),
    "tradecache.model.positions": ("Position",),
    "tradecache.model.accounts": ("Account",),
    "tradecache.model.instruments": ("Instrument",),
    "tradecache.model.messages": ("Message", "Kind"),
    "tradecache.model.values": ("Currency", "Money", "Price", "Quantity"),
    "tradecache.model.identifiers": (
        "TraderId", "StrategyId", "InstrumentId", "ClientOrderId", "PositionId", "AccountId", "OrderListId",
    ),
    "tradecache.model.events": (
        "OrderEvent", "OrderInitialized", "OrderFilled", "PositionEvent", "AccountState", "SubmitOrder",
        "SubmitOrderList", "StrategyState",
    ),
}  # fmt: skip
_WHERE: dict[str, str] = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Account",
    "AccountId",
    "AccountState",
    "BusRefused",
    "BusUnavailable",
    "CacheClient",
    "CacheDatabaseConfig",
    "ClientOrderId",
    "ConfigError",
    "Currency",
    "EventRejected",
    "Instrument",
    "InstrumentId",
    "Kind",
    "LeaseLost",
    "LoadError",
    "Message",
    "Money",
    "MsgPackSerializer",
    "Order",
    "OrderEvent",
    "OrderEventRefused",
    "OrderFilled",
    "OrderInitialized",
    "OrderListId",
    "PayloadError",
    "Position",
    "PositionEvent",
    "PositionId",
    "Price",
    "Publisher",
    "Quantity",
    "RebuildRefused",
    "RedisCacheDatabase",
    "RejectReason",
    "RetentionPolicy",
    "StoreRefused",
    "StoreUnavailable",
    "StrategyId",
    "StrategyState",
    "SubmitOrder",
    "SubmitOrderList",
    "SweepReport",
    "TradecacheError",
    "TraderId",
    "__version__",
]
