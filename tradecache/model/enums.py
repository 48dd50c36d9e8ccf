"""Enumerations of the wire format. On the wire an enum is its member *name*; the integer values
are NautilusTrader's and never appear on the wire.

`str()` and f-strings give the name too (`str(OrderStatus.FILLED)` is `"FILLED"`, as in NautilusTrader),
since that is what people read in logs and command output; `int()` and comparisons keep the value.
"""

from __future__ import annotations

from enum import IntEnum


class WireEnum(IntEnum):
    """An IntEnum that prints as its member name."""

    def __str__(self) -> str:
        return self.name

    def __format__(self, format_spec: str) -> str:
        return format(self.name, format_spec)


class OrderSide(WireEnum):
    NO_ORDER_SIDE = 0
    BUY = 1
    SELL = 2


class OrderType(WireEnum):
    MARKET = 1
    LIMIT = 2
    STOP_MARKET = 3
    STOP_LIMIT = 4
    MARKET_TO_LIMIT = 5
    MARKET_IF_TOUCHED = 6
    LIMIT_IF_TOUCHED = 7
    TRAILING_STOP_MARKET = 8
    TRAILING_STOP_LIMIT = 9


class OrderStatus(WireEnum):
    INITIALIZED = 1
    DENIED = 2
    EMULATED = 3
    RELEASED = 4
    SUBMITTED = 5
    ACCEPTED = 6
    REJECTED = 7
    CANCELED = 8
    EXPIRED = 9
    TRIGGERED = 10
    PENDING_UPDATE = 11
    PENDING_CANCEL = 12
    PARTIALLY_FILLED = 13
    FILLED = 14


class TimeInForce(WireEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    GTD = 4
    DAY = 5
    AT_THE_OPEN = 6
    AT_THE_CLOSE = 7


class LiquiditySide(WireEnum):
    NO_LIQUIDITY_SIDE = 0
    MAKER = 1
    TAKER = 2


class PositionSide(WireEnum):
    NO_POSITION_SIDE = 0
    FLAT = 1
    LONG = 2
    SHORT = 3


class AccountType(WireEnum):
    CASH = 1
    MARGIN = 2
    BETTING = 3


class OmsType(WireEnum):
    UNSPECIFIED = 0
    NETTING = 1
    HEDGING = 2


class CurrencyType(WireEnum):
    CRYPTO = 1
    FIAT = 2
    COMMODITY_BACKED = 3


class ContingencyType(WireEnum):
    NO_CONTINGENCY = 0
    OCO = 1
    OTO = 2
    OUO = 3


class TriggerType(WireEnum):
    NO_TRIGGER = 0
    DEFAULT = 1
    LAST_PRICE = 2
    MARK_PRICE = 3
    INDEX_PRICE = 4
    BID_ASK = 5
    DOUBLE_LAST = 6
    DOUBLE_BID_ASK = 7
    LAST_OR_BID_ASK = 8
    MID_POINT = 9


class TrailingOffsetType(WireEnum):
    NO_TRAILING_OFFSET = 0
    PRICE = 1
    BASIS_POINTS = 2
    TICKS = 3
    PRICE_TIER = 4


class AssetClass(WireEnum):
    FX = 1
    EQUITY = 2
    COMMODITY = 3
    DEBT = 4
    INDEX = 5
    CRYPTOCURRENCY = 6
    ALTERNATIVE = 7


class InstrumentClass(WireEnum):
    SPOT = 1
    SWAP = 2
    FUTURE = 3
    FUTURES_SPREAD = 4
    FORWARD = 5
    CFD = 6
    BOND = 7
    OPTION = 8
    OPTION_SPREAD = 9
    WARRANT = 10
    SPORTS_BETTING = 11
    BINARY_OPTION = 12


class OptionKind(WireEnum):
    CALL = 1
    PUT = 2


__all__ = [
    "AccountType",
    "AssetClass",
    "ContingencyType",
    "CurrencyType",
    "InstrumentClass",
    "LiquiditySide",
    "OmsType",
    "OptionKind",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "PositionSide",
    "TimeInForce",
    "TrailingOffsetType",
    "TriggerType",
    "WireEnum",
]
