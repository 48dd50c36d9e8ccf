"""Enumerations of the wire format. On the wire an enum is its member *name*; the integer values
are NautilusTrader's and never appear on the wire."""

from __future__ import annotations

from enum import IntEnum


class OrderSide(IntEnum):
    NO_ORDER_SIDE = 0
    BUY = 1
    SELL = 2


class OrderType(IntEnum):
    MARKET = 1
    LIMIT = 2
    STOP_MARKET = 3
    STOP_LIMIT = 4
    MARKET_TO_LIMIT = 5
    MARKET_IF_TOUCHED = 6
    LIMIT_IF_TOUCHED = 7
    TRAILING_STOP_MARKET = 8
    TRAILING_STOP_LIMIT = 9


class OrderStatus(IntEnum):
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


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    GTD = 4
    DAY = 5
    AT_THE_OPEN = 6
    AT_THE_CLOSE = 7


class LiquiditySide(IntEnum):
    NO_LIQUIDITY_SIDE = 0
    MAKER = 1
    TAKER = 2


class PositionSide(IntEnum):
    NO_POSITION_SIDE = 0
    FLAT = 1
    LONG = 2
    SHORT = 3


class AccountType(IntEnum):
    CASH = 1
    MARGIN = 2
    BETTING = 3


class OmsType(IntEnum):
    UNSPECIFIED = 0
    NETTING = 1
    HEDGING = 2


class CurrencyType(IntEnum):
    CRYPTO = 1
    FIAT = 2
    COMMODITY_BACKED = 3


class ContingencyType(IntEnum):
    NO_CONTINGENCY = 0
    OCO = 1
    OTO = 2
    OUO = 3


class TriggerType(IntEnum):
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


class TrailingOffsetType(IntEnum):
    NO_TRAILING_OFFSET = 0
    PRICE = 1
    BASIS_POINTS = 2
    TICKS = 3
    PRICE_TIER = 4


class AssetClass(IntEnum):
    FX = 1
    EQUITY = 2
    COMMODITY = 3
    DEBT = 4
    INDEX = 5
    CRYPTOCURRENCY = 6
    ALTERNATIVE = 7


class InstrumentClass(IntEnum):
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


class OptionKind(IntEnum):
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
]
