"""Price, Quantity, Money and Currency with NautilusTrader's exact arithmetic.

Values are fixed point: `raw = value x 10^16` (an int) plus a `precision`, the number of digits
shown after the point. Strings round-trip exactly. Where NautilusTrader goes through binary64
(averages, money sums), the rules of wire-format.md section 3 are followed to the bit:
- value -> double is `float(raw) / 1e16`, not the correctly rounded parse of the decimal;
- double -> value at precision p is `round_half_away_from_zero(x * 10^p) / 10^p`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import ClassVar, Final, Self, TypeVar

from tradecache.model.enums import CurrencyType

F = TypeVar("F", bound="FixedPoint")

FIXED_PRECISION = 16
FIXED_SCALAR = 10**FIXED_PRECISION
MAX_PRECISION = 16


def round_half_away_from_zero(x: float) -> int:
    """Round a double to the nearest integer, ties away from zero, without `x + 0.5` errors."""
    if not math.isfinite(x):
        raise ValueError(f"cannot round non-finite value {x!r}")
    magnitude = abs(x)
    whole = math.floor(magnitude)
    # `magnitude - whole` is exact for doubles, so the tie test is exact too.
    if magnitude - whole >= 0.5:
        whole += 1
    return -whole if x < 0 else whole


# 10^(16 - p) and 10.0^p for each precision p (0..16): what the expressions give, looked up.
_SCALES: Final = tuple(10 ** (FIXED_PRECISION - p) for p in range(MAX_PRECISION + 1))
_FLOAT_SCALES: Final = tuple(10.0**p for p in range(MAX_PRECISION + 1))


def _parse_decimal(text: str, kind: str) -> tuple[int, int]:
    """Parse a decimal string into (raw, precision). Accepts `1e3` and `1_000` as NautilusTrader does."""
    if not isinstance(text, str):
        raise ValueError(f"{kind} must be a decimal string, got {type(text).__name__}")
    negative = text[:1] == "-"
    head, dot, tail = (text[1:] if negative else text).partition(".")
    if head.isdigit() and head.isascii() and (not dot or (tail.isdigit() and tail.isascii())):
        precision = len(tail)
        if precision > MAX_PRECISION:
            raise ValueError(f"{kind} {text!r} has more than {MAX_PRECISION} decimals")
        raw = int(head + tail) * _SCALES[precision]
        return (-raw if negative else raw), precision
    if text != text.strip():
        raise ValueError(f"{kind} {text!r} has surrounding white space")
    try:
        number = Decimal(text.replace("_", "")) if "_" in text else Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{kind} {text!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{kind} {text!r} is not finite")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    precision = max(0, -exponent)
    if precision > MAX_PRECISION:
        raise ValueError(f"{kind} {text!r} has more than {MAX_PRECISION} decimals")
    return int(number.scaleb(FIXED_PRECISION)), precision


def _format_raw(raw: int, precision: int) -> str:
    units = abs(raw) // 10 ** (FIXED_PRECISION - precision)
    sign = "-" if raw < 0 and units else ""
    if precision == 0:
        return f"{sign}{units}"
    digits = str(units).rjust(precision + 1, "0")
    return f"{sign}{digits[:-precision]}.{digits[-precision:]}"


def _check_precision(precision: int, kind: str) -> None:
    if not isinstance(precision, int) or isinstance(precision, bool) or not 0 <= precision <= MAX_PRECISION:
        raise ValueError(f"{kind} precision must be an integer 0..{MAX_PRECISION}, got {precision!r}")


# Values' texts by (raw, precision): quantities and prices repeat (every snapshot of a load reply
# shows a few), and formatting one costs ~5x a lookup. Bounded: cleared past this many.
_SHOWN: dict[tuple[int, int], str] = {}
_SHOWN_SIZE = 16_384


class FixedPoint:
    """A decimal value held as `raw` (value x 10^16) with a display precision."""

    __slots__ = ("precision", "raw")
    kind: ClassVar[str] = "value"
    raw: int
    precision: int

    def __init__(self, raw: int, precision: int) -> None:
        _check_precision(precision, self.kind)
        self.raw = raw
        self.precision = precision

    @classmethod
    def from_str(cls, text: str) -> Self:
        """Parse a decimal string (`1e3` and `1_000` too, as NautilusTrader does).

        Raises:
            ValueError: the text is not a decimal NautilusTrader accepts, or is negative for a Quantity.
        """
        raw, precision = _parse_decimal(text, cls.kind)
        return cls(raw, precision)

    @classmethod
    def from_raw(cls, raw: int, precision: int) -> Self:
        """The value of `raw` (value x 10^16) shown at `precision`.

        Raises:
            ValueError: `precision` is not an integer 0..16 (or a Quantity would be negative).
        """
        return cls(raw, precision)

    @classmethod
    def from_double(cls, value: float, precision: int) -> Self:
        """The value NautilusTrader makes from a double: half away from zero at `precision`.

        Raises:
            ValueError: `precision` is not an integer 0..16 (or a Quantity would be negative).
        """
        _check_precision(precision, cls.kind)
        units = round_half_away_from_zero(value * 10.0**precision)
        return cls(units * 10 ** (FIXED_PRECISION - precision), precision)

    @classmethod
    def zero(cls, precision: int = 0) -> Self:
        """Zero at `precision`.

        Raises:
            ValueError: `precision` is not an integer 0..16.
        """
        return cls(0, precision)

    def as_double(self) -> float:
        """The value as a float (rounded).

        Raises:
            Nothing.
        """
        return float(self.raw) / 1e16

    def as_decimal(self) -> Decimal:
        """The value as a Decimal, as it is shown at its precision.

        Raises:
            Nothing.
        """
        return Decimal(_format_raw(self.raw, self.precision))

    def is_zero(self) -> bool:
        """Whether the value is 0.

        Raises:
            Nothing.
        """
        return self.raw == 0

    def is_positive(self) -> bool:
        """Whether the value is above 0.

        Raises:
            Nothing.
        """
        return self.raw > 0

    def __str__(self) -> str:
        key = (self.raw, self.precision)
        text = _SHOWN.get(key)
        if text is None:
            text = _format_raw(self.raw, self.precision)
            if len(_SHOWN) >= _SHOWN_SIZE:
                _SHOWN.clear()
            _SHOWN[key] = text
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self}')"

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.raw))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FixedPoint) and type(other) is type(self):
            return self.raw == other.raw
        return NotImplemented

    def __lt__(self, other: Self) -> bool:
        return self.raw < other.raw

    def __le__(self, other: Self) -> bool:
        return self.raw <= other.raw

    def __gt__(self, other: Self) -> bool:
        return self.raw > other.raw

    def __ge__(self, other: Self) -> bool:
        return self.raw >= other.raw


def trusted_quantity(raw: int, precision: int) -> Quantity:
    """`Quantity(raw, precision)` for values known to be valid (raw >= 0, precision 0..16), built
    without checking them again: replaying fills makes two per fill."""
    quantity = _new(Quantity)
    quantity.raw = raw
    quantity.precision = precision
    return quantity


_new = object.__new__


def _parsed(cls: type[F], raw: int, precision: int) -> F:
    """`cls(raw, precision)` for what `_parse_decimal` gave, built without `__init__`'s precision
    check: its precision is always an integer 0..16 (a cache miss of the decoders parses ~30%
    faster)."""
    value = _new(cls)
    value.raw = raw
    value.precision = precision
    return value


class Price(FixedPoint):
    """A price; may be negative (spreads)."""

    __slots__ = ()
    kind = "price"

    @classmethod
    def from_str(cls, text: str) -> Self:
        """As `FixedPoint.from_str`.

        Raises:
            ValueError: the text is not a decimal NautilusTrader accepts.
        """
        raw, precision = _parse_decimal(text, cls.kind)
        return _parsed(cls, raw, precision)


class Quantity(FixedPoint):
    """A non-negative quantity."""

    __slots__ = ()
    kind = "quantity"

    def __init__(self, raw: int, precision: int) -> None:
        if raw < 0:
            raise ValueError(f"quantity must not be negative, got {_format_raw(raw, precision)}")
        super().__init__(raw, precision)

    @classmethod
    def from_str(cls, text: str) -> Self:
        """As `FixedPoint.from_str`.

        Raises:
            ValueError: the text is not a decimal NautilusTrader accepts, or is negative.
        """
        raw, precision = _parse_decimal(text, cls.kind)
        if raw < 0:
            return cls(raw, precision)  # which refuses it
        return _parsed(cls, raw, precision)


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency: its code and how many decimals its amounts show."""

    code: str
    precision: int
    iso4217: int
    name: str
    currency_type: CurrencyType

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code:
            raise ValueError("currency code must be a non-empty string")
        _check_precision(self.precision, "currency")

    def __str__(self) -> str:
        return self.code

    @staticmethod
    def from_str(code: str) -> Currency:
        """The registered currency with this code.

        Raises:
            KeyError: no currency with this code is registered.
        """
        return _CURRENCIES[code]


_FIAT = CurrencyType.FIAT
_CRYPTO = CurrencyType.CRYPTO
_COMMODITY = CurrencyType.COMMODITY_BACKED

_BUILT_IN: tuple[tuple[str, int, int, str, CurrencyType], ...] = (
    ("AUD", 2, 36, "Australian dollar", _FIAT),
    ("BRL", 2, 986, "Brazilian real", _FIAT),
    ("CAD", 2, 124, "Canadian dollar", _FIAT),
    ("CHF", 2, 756, "Swiss franc", _FIAT),
    ("CNH", 2, 0, "Chinese yuan (offshore)", _FIAT),
    ("CNY", 2, 156, "Chinese yuan", _FIAT),
    ("CZK", 2, 203, "Czech koruna", _FIAT),
    ("DKK", 2, 208, "Danish krone", _FIAT),
    ("EUR", 2, 978, "Euro", _FIAT),
    ("GBP", 2, 826, "British Pound", _FIAT),
    ("HKD", 2, 344, "Hong Kong dollar", _FIAT),
    ("HUF", 2, 348, "Hungarian forint", _FIAT),
    ("ILS", 2, 376, "Israeli new shekel", _FIAT),
    ("INR", 2, 356, "Indian rupee", _FIAT),
    ("JPY", 0, 392, "Japanese yen", _FIAT),
    ("KRW", 0, 410, "South Korean won", _FIAT),
    ("MXN", 2, 484, "Mexican peso", _FIAT),
    ("NOK", 2, 578, "Norwegian krone", _FIAT),
    ("NZD", 2, 554, "New Zealand dollar", _FIAT),
    ("PLN", 2, 985, "Polish zloty", _FIAT),
    ("RUB", 2, 643, "Russian ruble", _FIAT),
    ("SEK", 2, 752, "Swedish krona", _FIAT),
    ("SGD", 2, 702, "Singapore dollar", _FIAT),
    ("TRY", 2, 949, "Turkish lira", _FIAT),
    ("USD", 2, 840, "United States dollar", _FIAT),
    ("ZAR", 2, 710, "South African rand", _FIAT),
    ("XAG", 2, 961, "Silver (one troy ounce)", _COMMODITY),
    ("XAU", 2, 959, "Gold (one troy ounce)", _COMMODITY),
    ("XPT", 2, 962, "Platinum (one troy ounce)", _COMMODITY),
    ("ADA", 6, 0, "Cardano", _CRYPTO),
    ("AVAX", 8, 0, "Avalanche", _CRYPTO),
    ("BCH", 8, 0, "Bitcoin Cash", _CRYPTO),
    ("BNB", 8, 0, "Binance Coin", _CRYPTO),
    ("BTC", 8, 0, "Bitcoin", _CRYPTO),
    ("BUSD", 8, 0, "Binance USD", _CRYPTO),
    ("DOGE", 8, 0, "Dogecoin", _CRYPTO),
    ("DOT", 8, 0, "Polkadot", _CRYPTO),
    ("ETH", 8, 0, "Ethereum", _CRYPTO),
    ("LINK", 8, 0, "Chainlink", _CRYPTO),
    ("LTC", 8, 0, "Litecoin", _CRYPTO),
    ("SOL", 8, 0, "Solana", _CRYPTO),
    ("TRX", 8, 0, "TRON", _CRYPTO),
    ("USDC", 8, 0, "USD Coin", _CRYPTO),
    ("USDT", 8, 0, "Tether", _CRYPTO),
    ("XBT", 8, 0, "Bitcoin", _CRYPTO),
    ("XLM", 8, 0, "Stellar Lumen", _CRYPTO),
    ("XRP", 6, 0, "Ripple", _CRYPTO),
)

_CURRENCIES: dict[str, Currency] = {
    code: Currency(code, precision, iso, name, kind) for code, precision, iso, name, kind in _BUILT_IN
}


# Called when what a code names changes (a new code, or another precision, name or type): a
# cache of amounts parsed earlier (`serialization/codecs.py`) must not keep the old currency.
_CURRENCY_LISTENERS: list[Callable[[], None]] = []


def on_currency_change(listener: Callable[[], None]) -> None:
    """Call `listener` whenever `register_currency` changes what a code names."""
    _CURRENCY_LISTENERS.append(listener)


def register_currency(currency: Currency) -> None:
    """Register (or replace) a currency, as a `Currency` message does."""
    changed = _CURRENCIES.get(currency.code) != currency
    _CURRENCIES[currency.code] = currency
    if changed:
        for listener in _CURRENCY_LISTENERS:
            listener()


def currency_registry() -> dict[str, Currency]:
    """The registry itself, by code (for lookups; `register_currency` changes it in place)."""
    return _CURRENCIES


def currency_or_inferred(code: str, precision: int) -> Currency:
    """The registered currency `code`, or an ad-hoc crypto currency of `precision` decimals.

    Money strings carry their own precision, so an amount in a currency nobody registered is
    still understood exactly.
    """
    found = _CURRENCIES.get(code)
    if found is not None:
        return found
    return Currency(code, precision, 0, code, CurrencyType.CRYPTO)


class Money(FixedPoint):
    """An amount in a currency; string form `"<amount> <CODE>"` at the currency's precision."""

    __slots__ = ("currency",)
    kind = "money"
    currency: Currency

    def __init__(self, raw: int, precision: int, currency: Currency) -> None:
        super().__init__(raw, precision)
        self.currency = currency

    @classmethod
    def of(cls, amount: FixedPoint | int, currency: Currency) -> Money:
        """`amount` (a fixed-point value, or whole units) in `currency`, at the currency's precision.

        Raises:
            Nothing.
        """
        raw = amount.raw if isinstance(amount, FixedPoint) else amount * FIXED_SCALAR
        return cls(raw, currency.precision, currency)

    @classmethod
    def parse(cls, text: str) -> Money:
        """Parse `"2.00 USD"`.

        Raises:
            ValueError: the text is not `<amount> <CODE>` with a decimal amount.
        """
        if not isinstance(text, str):
            raise ValueError(f"money must be a string like '2.00 USD', got {type(text).__name__}")
        amount, space, code = text.partition(" ")
        if not space or not code or " " in code:
            raise ValueError(f"money {text!r} must be '<amount> <CURRENCY>'")
        raw, precision = _parse_decimal(amount, "money")
        money = _parsed(cls, raw, precision)
        money.currency = currency_or_inferred(code, precision)
        return money

    @classmethod
    def from_amount_str(cls, amount: str, currency_code: str) -> Money:
        """Parse a bare amount with a separate currency code (account balances).

        Raises:
            ValueError: the amount is not a decimal string.
        """
        raw, precision = _parse_decimal(amount, "money")
        money = _parsed(cls, raw, precision)
        money.currency = currency_or_inferred(currency_code, precision)
        return money

    @classmethod
    def from_double_in(cls, value: float, currency: Currency) -> Money:
        """A float amount in `currency`, rounded half away from zero at the currency's precision.

        Raises:
            Nothing.
        """
        precision = currency.precision  # checked when the currency was made: 0..16
        units = round_half_away_from_zero(value * _FLOAT_SCALES[precision])
        money = _new(cls)
        money.raw = units * _SCALES[precision]
        money.precision = precision
        money.currency = currency
        return money

    def amount_str(self) -> str:
        """The amount without the currency, at this amount's precision.

        Raises:
            Nothing.
        """
        return _format_raw(self.raw, self.precision)

    def __str__(self) -> str:
        return f"{_format_raw(self.raw, self.precision)} {self.currency.code}"

    def __hash__(self) -> int:
        return hash((self.raw, self.currency.code))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Money):
            return self.raw == other.raw and self.currency.code == other.currency.code
        return NotImplemented


__all__ = [
    "FIXED_PRECISION",
    "FIXED_SCALAR",
    "Currency",
    "FixedPoint",
    "Money",
    "Price",
    "Quantity",
    "currency_or_inferred",
    "currency_registry",
    "on_currency_change",
    "register_currency",
    "round_half_away_from_zero",
    "trusted_quantity",
]
