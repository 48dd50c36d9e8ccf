"""Identifiers: strings with a type, checked when built.

They subclass `str` so they hash and compare like their text (a dict keyed by `ClientOrderId`
can be looked up with a plain string) and cost nothing to store. `.value` gives the text, as in
NautilusTrader. A bad value raises `ValueError`; the serializer turns that into a `PayloadError`.
Ids that become part of a Redis key (`KeyPart`: orders, positions, accounts, instruments,
strategies, order lists) must also pass `model/key_parts.py`, so no id can make a key ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Self

from tradecache.model.key_parts import key_part_problem


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


class KeyPart(Identifier):
    """An identifier that becomes part of a Redis key (`model/key_parts.py` says which are safe)."""

    __slots__ = ()

    @classmethod
    def _check(cls, value: str) -> None:
        problem = key_part_problem(value)
        if problem is not None:
            raise ValueError(f"{cls.kind} {problem}")


class TraderId(Identifier):
    """`NAME-TAG`; the tag is the text after the last `-`."""

    __slots__ = ()
    kind = "trader_id"

    @classmethod
    def _check(cls, value: str) -> None:
        if "-" not in value:
            raise ValueError(f"trader_id {value!r} must contain '-' (NAME-TAG)")

    def get_tag(self) -> str:
        """The tag: the part after the last `-` (NAME-TAG).

        Raises:
            Nothing.
        """
        return self.value.rsplit("-", 1)[1]


class StrategyId(KeyPart):
    """`NAME-TAG`, or the literal `EXTERNAL`."""

    __slots__ = ()
    kind = "strategy_id"

    @classmethod
    def _check(cls, value: str) -> None:
        if value != "EXTERNAL" and "-" not in value:
            raise ValueError(f"strategy_id {value!r} must be NAME-TAG or EXTERNAL")
        super()._check(value)

    def get_tag(self) -> str:
        """The tag: the part after the last `-`.

        Raises:
            Nothing.
        """
        return self.value.rsplit("-", 1)[-1]


class AccountId(KeyPart):
    """`ISSUER-NUMBER`; the issuer is the text before the first `-`."""

    __slots__ = ()
    kind = "account_id"

    @classmethod
    def _check(cls, value: str) -> None:
        if "-" not in value:
            raise ValueError(f"account_id {value!r} must contain '-' (ISSUER-NUMBER)")
        super()._check(value)

    def get_issuer(self) -> str:
        """The issuer: the part before the first `-`.

        Raises:
            Nothing.
        """
        return self.value.split("-", 1)[0]


class InstrumentId(KeyPart):
    """`SYMBOL.VENUE`, split at the last `.` (symbols may hold `/`, `-`, `:`, `$`, spaces)."""

    __slots__ = ()
    kind = "instrument_id"

    @classmethod
    def _check(cls, value: str) -> None:
        symbol, dot, venue = value.rpartition(".")
        if not dot or not symbol or not venue:
            raise ValueError(f"instrument_id {value!r} must be SYMBOL.VENUE")
        super()._check(value)

    @property
    def symbol(self) -> str:
        return self.value.rpartition(".")[0]

    @property
    def venue(self) -> str:
        return self.value.rpartition(".")[2]


class ClientOrderId(KeyPart):
    __slots__ = ()
    kind = "client_order_id"


class VenueOrderId(Identifier):
    __slots__ = ()
    kind = "venue_order_id"


class PositionId(KeyPart):
    __slots__ = ()
    kind = "position_id"


class TradeId(Identifier):
    __slots__ = ()
    kind = "trade_id"


class OrderListId(KeyPart):
    __slots__ = ()
    kind = "order_list_id"


class ClientId(Identifier):
    __slots__ = ()
    kind = "client_id"


class ExecAlgorithmId(Identifier):
    __slots__ = ()
    kind = "exec_algorithm_id"


def plain_rule(kind: type[Identifier]) -> str | None:
    """Which test `plainly_valid` gives for `kind`: "text" (any non-empty text), "key_part" (non-empty,
    no `:`, printable), or None (`kind` checks more than `Identifier` or `KeyPart` do)."""
    check = kind._check.__func__  # type: ignore[attr-defined]  # a classmethod's function
    if check is Identifier._check.__func__:  # type: ignore[attr-defined]
        return "text"
    if check is KeyPart._check.__func__:  # type: ignore[attr-defined]
        return "key_part"
    return None


def plainly_valid(kind: type[Identifier]) -> Callable[[str], bool] | None:
    """A test that a text is, with certainty, a valid `kind`, cheaper than building it (for the
    decoders' first sight of an id: a load meets each order's ids once); None when `kind` checks
    more than `Identifier` or `KeyPart` do. A text it passes is built as `str.__new__(kind, text)`,
    which is what `kind(text)` returns then; one it does not pass may still be valid."""
    rule = plain_rule(kind)
    if rule == "text":
        return bool
    if rule == "key_part":
        # `key_part_problem`'s own shortcut for usual ids: nothing more to look at
        return lambda text: text != "" and ":" not in text and text.isprintable()
    return None


__all__ = [
    "AccountId",
    "ClientId",
    "ClientOrderId",
    "ExecAlgorithmId",
    "Identifier",
    "InstrumentId",
    "KeyPart",
    "OrderListId",
    "PositionId",
    "StrategyId",
    "TradeId",
    "TraderId",
    "VenueOrderId",
    "plain_rule",
    "plainly_valid",
]
