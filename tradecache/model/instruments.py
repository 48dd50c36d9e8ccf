"""Instruments, kept whole.

An instrument message is stored as it came and replaced by a later one with the same `id`, so
the model keeps the decoded map and reads from it only what positions need: precisions, the
multiplier, the inverse flag, the quote currency and the cost (settlement of PnL) currency.
A type the model does not know is kept as a plain `Instrument` and round-trips unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tradecache.model.identifiers import InstrumentId
from tradecache.model.values import Currency, Price, Quantity, currency_or_inferred


class Instrument:
    """An instrument of any type: the wire map plus typed accessors."""

    __slots__ = ("data", "id")
    type_name: ClassVar[str] = "Instrument"
    # Keys beyond the common ones that a valid message of this type must carry.
    required_keys: ClassVar[tuple[str, ...]] = ()
    # Key naming the currency prices are quoted in.
    quote_key: ClassVar[str] = "quote_currency"

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.id = InstrumentId(data["id"])

    @property
    def type(self) -> str:
        return str(self.data.get("type", type(self).type_name))

    @property
    def raw_symbol(self) -> str:
        return str(self.data.get("raw_symbol", ""))

    @property
    def price_precision(self) -> int:
        return int(self.data["price_precision"])

    @property
    def size_precision(self) -> int:
        value = self.data.get("size_precision")
        return 0 if value is None else int(value)

    @property
    def price_increment(self) -> Price:
        return Price.from_str(self.data["price_increment"])

    @property
    def multiplier(self) -> Quantity:
        value = self.data.get("multiplier")
        return Quantity.from_str(value) if value is not None else Quantity.from_str("1")

    @property
    def is_inverse(self) -> bool:
        return bool(self.data.get("is_inverse", False))

    def _currency(self, key: str) -> Currency:
        code = self.data.get(key)
        if not isinstance(code, str):
            raise ValueError(f"instrument {self.id} has no currency in '{key}'")
        return currency_or_inferred(code, 8)

    @property
    def quote_currency(self) -> Currency:
        # Unknown types may name it either way; known types say which in `quote_key`.
        key = self.quote_key if self.quote_key in self.data else "currency"
        return self._currency(key)

    @property
    def base_currency(self) -> Currency | None:
        for key in ("base_currency", "underlying"):
            code = self.data.get(key)
            if isinstance(code, str):
                return currency_or_inferred(code, 8)
        return None

    def get_cost_currency(self) -> Currency:
        """The currency realized PnL is booked in: the base for inverse instruments, else the quote.

        Raises:
            ValueError: an inverse instrument without a base currency, or an instrument whose map names
                no quote currency.
        """
        if self.is_inverse:
            base = self.base_currency
            if base is None:
                raise ValueError(f"inverse instrument {self.id} has no base currency")
            return base
        return self.quote_currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instrument) and self.data == other.data

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"{self.type}(id={self.id.value!r})"


_SIZE = ("size_precision", "size_increment")


class CurrencyPair(Instrument):
    __slots__ = ()
    type_name = "CurrencyPair"
    required_keys = ("base_currency", "quote_currency", *_SIZE, "multiplier")


class Equity(Instrument):
    __slots__ = ()
    type_name = "Equity"
    quote_key = "currency"
    required_keys = ("currency",)


class FuturesContract(Instrument):
    __slots__ = ()
    type_name = "FuturesContract"
    quote_key = "currency"
    required_keys: ClassVar[tuple[str, ...]] = (
        "currency",
        *_SIZE,
        "multiplier",
        "underlying",
        "activation_ns",
        "expiration_ns",
    )


class FuturesSpread(FuturesContract):
    __slots__ = ()
    type_name = "FuturesSpread"
    required_keys = (*FuturesContract.required_keys, "strategy_type")


class OptionContract(Instrument):
    __slots__ = ()
    type_name = "OptionContract"
    quote_key = "currency"
    required_keys = ("currency", *_SIZE, "multiplier", "option_kind", "strike_price", "underlying")


class OptionSpread(Instrument):
    __slots__ = ()
    type_name = "OptionSpread"
    quote_key = "currency"
    required_keys = ("currency", *_SIZE, "multiplier", "strategy_type", "underlying")


class CryptoPerpetual(Instrument):
    __slots__ = ()
    type_name = "CryptoPerpetual"
    required_keys = ("base_currency", "quote_currency", "settlement_currency", "is_inverse", *_SIZE)


class CryptoFuture(Instrument):
    __slots__ = ()
    type_name = "CryptoFuture"
    required_keys = ("underlying", "quote_currency", "settlement_currency", "is_inverse", *_SIZE)


class CryptoOption(Instrument):
    __slots__ = ()
    type_name = "CryptoOption"
    required_keys = ("underlying", "quote_currency", "settlement_currency", "option_kind", *_SIZE)

    def get_cost_currency(self) -> Currency:
        # Options settle in the quote currency whatever `is_inverse` says (wire-format.md 5.2).
        return self.quote_currency


class Cfd(Instrument):
    __slots__ = ()
    type_name = "Cfd"
    required_keys = ("quote_currency", *_SIZE)


class Commodity(Instrument):
    __slots__ = ()
    type_name = "Commodity"
    required_keys = ("quote_currency", *_SIZE)


class IndexInstrument(Instrument):
    __slots__ = ()
    type_name = "IndexInstrument"
    quote_key = "currency"
    required_keys = ("currency", *_SIZE)


class BettingInstrument(Instrument):
    __slots__ = ()
    type_name = "BettingInstrument"
    quote_key = "currency"
    required_keys = ("currency", *_SIZE, "market_id", "selection_id")


class BinaryOption(Instrument):
    __slots__ = ()
    type_name = "BinaryOption"
    quote_key = "currency"
    required_keys = ("currency", *_SIZE, "outcome")


INSTRUMENT_TYPES: dict[str, type[Instrument]] = {
    cls.type_name: cls
    for cls in (
        CurrencyPair,
        Equity,
        FuturesContract,
        FuturesSpread,
        OptionContract,
        OptionSpread,
        CryptoPerpetual,
        CryptoFuture,
        CryptoOption,
        Cfd,
        Commodity,
        IndexInstrument,
        BettingInstrument,
        BinaryOption,
    )
}

# Keys every instrument message carries whatever its type.
COMMON_INSTRUMENT_KEYS: tuple[str, ...] = ("id", "raw_symbol", "price_precision", "price_increment")


def instrument_class(type_name: str) -> type[Instrument]:
    """The model class for an instrument type; unknown types get the generic `Instrument`."""
    return INSTRUMENT_TYPES.get(type_name, Instrument)


__all__ = [
    "COMMON_INSTRUMENT_KEYS",
    "INSTRUMENT_TYPES",
    "BettingInstrument",
    "BinaryOption",
    "Cfd",
    "Commodity",
    "CryptoFuture",
    "CryptoOption",
    "CryptoPerpetual",
    "CurrencyPair",
    "Equity",
    "FuturesContract",
    "FuturesSpread",
    "IndexInstrument",
    "Instrument",
    "OptionContract",
    "OptionSpread",
    "instrument_class",
]
