"""Identifiers: strings with a type, checked when built.

They subclass `str` so they hash and compare like their text (a dict keyed by `ClientOrderId`
can be looked up with a plain string) and cost nothing to store. `.value` gives the text, as in
NautilusTrader. A bad value raises `ValueError`; the serializer turns that into a `PayloadError`.
"""

from __future__ import annotations

from typing import ClassVar, Self


class Identifier(str):
    """A non-empty identifier string."""

    __slots__ = ()
    kind: ClassVar[str] = "identifier"

    def __new__(cls, value: str) -> Self:
        if not isinstance(value, str):
            raise ValueError(f"{cls.kind} must be a string, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{cls.kind} must not be empty")
        cls._check(value)
        return super().__new__(cls, value)

    @classmethod
    def _check(cls, value: str) -> None:
        """Raise ValueError when `value` is not a valid identifier of this kind."""

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"


class TraderId(Identifier):
    """`NAME-TAG`; the tag is the text after the last `-`."""

    __slots__ = ()
    kind = "trader_id"

    @classmethod
    def _check(cls, value: str) -> None:
        if "-" not in value:
            raise ValueError(f"trader_id {value!r} must contain '-' (NAME-TAG)")

    def get_tag(self) -> str:
        return self.value.rsplit("-", 1)[1]


class StrategyId(Identifier):
    """`NAME-TAG`, or the literal `EXTERNAL`."""

    __slots__ = ()
    kind = "strategy_id"

    @classmethod
    def _check(cls, value: str) -> None:
        if value != "EXTERNAL" and "-" not in value:
            raise ValueError(f"strategy_id {value!r} must be NAME-TAG or EXTERNAL")

    def get_tag(self) -> str:
        return self.value.rsplit("-", 1)[-1]


class AccountId(Identifier):
    """`ISSUER-NUMBER`; the issuer is the text before the first `-`."""

    __slots__ = ()
    kind = "account_id"

    @classmethod
    def _check(cls, value: str) -> None:
        if "-" not in value:
            raise ValueError(f"account_id {value!r} must contain '-' (ISSUER-NUMBER)")

    def get_issuer(self) -> str:
        return self.value.split("-", 1)[0]


class InstrumentId(Identifier):
    """`SYMBOL.VENUE`, split at the last `.` (symbols may hold `/`, `-`, `:`, `$`, spaces)."""

    __slots__ = ()
    kind = "instrument_id"

    @classmethod
    def _check(cls, value: str) -> None:
        symbol, dot, venue = value.rpartition(".")
        if not dot or not symbol or not venue:
            raise ValueError(f"instrument_id {value!r} must be SYMBOL.VENUE")

    @property
    def symbol(self) -> str:
        return self.value.rpartition(".")[0]

    @property
    def venue(self) -> str:
        return self.value.rpartition(".")[2]


class ClientOrderId(Identifier):
    __slots__ = ()
    kind = "client_order_id"


class VenueOrderId(Identifier):
    __slots__ = ()
    kind = "venue_order_id"


class PositionId(Identifier):
    __slots__ = ()
    kind = "position_id"


class TradeId(Identifier):
    __slots__ = ()
    kind = "trade_id"


class OrderListId(Identifier):
    __slots__ = ()
    kind = "order_list_id"


class ClientId(Identifier):
    __slots__ = ()
    kind = "client_id"


class ExecAlgorithmId(Identifier):
    __slots__ = ()
    kind = "exec_algorithm_id"


__all__ = [
    "AccountId",
    "ClientId",
    "ClientOrderId",
    "ExecAlgorithmId",
    "Identifier",
    "InstrumentId",
    "OrderListId",
    "PositionId",
    "StrategyId",
    "TradeId",
    "TraderId",
    "VenueOrderId",
]
