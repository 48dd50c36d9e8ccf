"""Field codecs: one wire value <-> one model value, with the error that names the field.

A `Codec` is a pair of plain functions. `decode(value, path)` checks the wire value and returns
the model value, raising `PayloadError(invalid_field, path, problem)`; `encode(value, ts_as_str)`
returns the wire value. Message schemas (`schemas.py`) are lists of `Field`s built from these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from enum import IntEnum
from typing import Any, Final, NamedTuple, TypeVar

from tradecache.errors import PayloadError, RejectReason
from tradecache.model.identifiers import Identifier, plain_rule, plainly_valid
from tradecache.model.values import (
    FIXED_SCALAR,
    Currency,
    FixedPoint,
    Money,
    Price,
    Quantity,
    currency_or_inferred,
    currency_registry,
    on_currency_change,
)
from tradecache.serialization.limits import PLAIN_MAP

T = TypeVar("T")
F = TypeVar("F", bound=FixedPoint)
E = TypeVar("E", bound=IntEnum)

MAX_TIMESTAMP = 2**64 - 1  # timestamps are uint64 nanoseconds on the node
_TIMESTAMP_DIGITS = len(str(MAX_TIMESTAMP))
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")

Decoder = Callable[[Any, str], Any]
Encoder = Callable[[Any, bool], Any]


class Codec(NamedTuple):
    decode: Decoder
    encode: Encoder
    # For `optional(codec)`: the wrapped codec, so compiled decoders can inline the nil test.
    inner: Codec | None = None
    # For compiled decoders: an expression of `{v}` (the wire value) and `{e}` (`env`, by name)
    # giving the decoded value when it is the common, valid case, else MISS; `decode` then runs
    # and says what is wrong. It must give what `decode` gives whenever it is not MISS.
    fast: str | None = None
    env: Any = None
    # For decoders straight from bytes (`structs.py`): the msgspec type of the wire values this
    # codec may be handed; msgspec checks it in C, and a payload it refuses is decoded the usual
    # way (None: no such decoder for a schema with this codec).
    wire: Any = None
    # For those decoders: `fast` for a value msgspec has already checked to be of `wire`'s one
    # class (the class test `fast` starts with then always holds); None: `fast` itself. An
    # expression that never gives MISS is used alone.
    fast_wire: str | None = None
    # For an identifier codec (`identifier`): what its decode does with a text `env` (its cache)
    # does not hold, so that a compiled decoder can do it in place: (the class, `plain_rule`'s
    # name for it, the cache's size).
    identifier: tuple[type, str | None, int] | None = None


# What a codec's `fast` expression gives when `decode` must decide.
MISS: Final = object()


class Field(NamedTuple):
    """A key of a message: its codec, and whether the key may be absent (then `default` is used)."""

    key: str
    codec: Codec
    may_be_absent: bool = False
    default: Any = None


def invalid(path: str, problem: str) -> PayloadError:
    return PayloadError(RejectReason.INVALID_FIELD, path, problem)


def _type_name(value: object) -> str:
    return "nil" if value is None else type(value).__name__


_SHOWN_CHARS = 64


def shown(value: object) -> str:
    """A wire value as error messages show it: short, and never the repr of a container (a map
    or array nested a thousand deep has no repr: it raises RecursionError)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= _SHOWN_CHARS else f"{value[:_SHOWN_CHARS]!r}... ({len(value)} chars)"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"a {_type_name(value)}"


def _same(value: Any, ts_as_str: bool) -> Any:
    return value


def _decode_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise invalid(path, f"expected a string, got {_type_name(value)}")
    return value


def _decode_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(path, f"expected a boolean, got {_type_name(value)}")
    return value


def _decode_int(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(path, f"expected an integer, got {_type_name(value)}")
    return value


def _decode_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(path, f"expected a number, got {_type_name(value)}")
    return float(value)


def _decode_map(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, f"expected a map, got {_type_name(value)}")
    return value


def _decode_timestamp(value: Any, path: str) -> int:
    if isinstance(value, str):
        if not (value.isdigit() and value.isascii()):
            raise invalid(path, f"timestamp {shown(value)} is not a string of digits (nanoseconds)")
        if len(value) > _TIMESTAMP_DIGITS:
            # Checked before int(): Python refuses to convert more than 4,300 digits (ValueError).
            raise invalid(path, f"timestamp {shown(value)} has more digits than a uint64 (nanoseconds)")
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise invalid(path, f"expected nanoseconds as a string or integer, got {_type_name(value)}")
    if not 0 <= number <= MAX_TIMESTAMP:
        raise invalid(path, f"timestamp {number} is outside 0..2^64-1 nanoseconds")
    return number


def _encode_timestamp(value: int, ts_as_str: bool) -> int | str:
    return str(value) if ts_as_str else value


def _decode_uuid(value: Any, path: str) -> str:
    text = _decode_str(value, path)
    if not _UUID.match(text):
        raise invalid(path, f"{text!r} is not a UUID")
    return text


# Values are immutable and repeat a lot (quantities, prices near the market, commissions), so
# each codec keeps the ones it parsed: fewer allocations and no re-parsing. Bounded like the
# identifier cache below.
_VALUE_CACHE_SIZE = 16_384


def _cached_parser(parse: Callable[[str], T], seen: dict[str, T]) -> Callable[[Any, str], T]:

    def decode(value: Any, path: str) -> T:
        found = seen.get(value) if isinstance(value, str) else None
        if found is not None:
            return found
        try:
            parsed = parse(value)
        except ValueError as exc:
            raise invalid(path, str(exc)) from None
        except ArithmeticError:  # decimal.Overflow, should a huge exponent get past `in_range`
            raise invalid(path, f"{shown(value)} is out of range") from None
        if len(seen) >= _VALUE_CACHE_SIZE:
            seen.clear()
        seen[value] = parsed
        return parsed

    return decode


# NautilusTrader holds prices, quantities and money as a signed 128-bit `raw` (value x 10^16,
# wire-format.md section 3): larger values cannot exist on a node, and the binary64 arithmetic of
# orders and positions overflows on them ("1e300" makes `float(raw)` raise OverflowError).
MAX_RAW = 2**127 - 1
_MAX_EXPONENT = len(str(MAX_RAW // FIXED_SCALAR))  # a value of 10^23 or more is out of range


def in_range(parse: Callable[..., F]) -> Callable[..., F]:
    """`parse`, refusing (ValueError) values outside NautilusTrader's 128-bit range, and digits
    that are not ASCII. Arguments after the text are handed to `parse` as they are.

    An exponent is looked at before `parse` expands it: "1e999900" would take half a minute of
    CPU to turn into an integer, and "1e9999999" raises decimal.Overflow.
    """

    def parse_in_range(text: str, *args: Any) -> F:
        amount = text.partition(" ")[0] if isinstance(text, str) else text
        if isinstance(amount, str) and not amount.isascii():
            # Python's Decimal reads other scripts' digits ("١٢" is 12); the bytes would be stored
            # as received, and NautilusTrader cannot read them back.
            raise ValueError(f"{shown(amount)} is not an ASCII decimal number")
        if isinstance(amount, str) and ("e" in amount or "E" in amount):
            try:
                too_big = Decimal(amount).adjusted() >= _MAX_EXPONENT
            except ArithmeticError:  # not a number at all: `parse` says why
                too_big = False
            if too_big:
                raise ValueError(f"{shown(amount)} is out of range (at most 128-bit fixed point)")
        value = parse(text, *args)
        if abs(value.raw) > MAX_RAW:
            raise ValueError(f"{shown(amount)} is out of range (at most 128-bit fixed point)")
        return value

    return parse_in_range


_prices: dict[str, Price] = {}
_quantities: dict[str, Quantity] = {}
_moneys: dict[str, Money] = {}
_decode_price = _cached_parser(in_range(Price.from_str), _prices)
_decode_quantity = _cached_parser(in_range(Quantity.from_str), _quantities)
_decode_money = _cached_parser(in_range(Money.parse), _moneys)
# An amount names its currency by code: once a Currency message changes what a code names, the
# amounts parsed before hold the old currency, and a new parse would not.
on_currency_change(_moneys.clear)
# A value already parsed (cache keys are strings only: an unhashable value never looks itself up).
_SEEN = "{e}.get({v}, MISS) if {v}.__class__ is str else MISS"
_SEEN_STR = "{e}.get({v}, MISS)"  # the same, for a value known to be a string


def _decode_currency(value: Any, path: str) -> Currency:
    code = _decode_str(value, path)
    if not code or " " in code:
        raise invalid(path, f"{code!r} is not a currency code")
    return currency_or_inferred(code, 8)


def _encode_str_form(value: Any, ts_as_str: bool) -> str:
    return str(value)


def _encode_currency(value: Currency, ts_as_str: bool) -> str:
    return value.code


def _decode_str_list(value: Any, path: str) -> tuple[str, ...]:
    # NautilusTrader also reads a comma-joined string here.
    if isinstance(value, str):
        return tuple(part for part in value.split(",") if part)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid(path, f"expected a list of strings, got {_type_name(value)}")
    return tuple(value)


def _encode_list(value: tuple[Any, ...], ts_as_str: bool) -> list[Any]:
    return list(value)


TEXT = Codec(_decode_str, _same, fast="{v} if {v}.__class__ is str else MISS", wire=str, fast_wire="{v}")
BOOL = Codec(_decode_bool, _same, fast="{v} if {v}.__class__ is bool else MISS", wire=bool, fast_wire="{v}")
INT = Codec(_decode_int, _same, fast="{v} if {v}.__class__ is int else MISS", wire=int, fast_wire="{v}")
FLOAT = Codec(_decode_float, _same)
MAP = Codec(_decode_map, _same, fast="{v} if {v}.__class__ is dict else MISS", wire=PLAIN_MAP, fast_wire="{v}")
# An integer in range, or up to 19 ASCII digits (below 10^19 < 2^64: always in range).
TIMESTAMP = Codec(
    _decode_timestamp,
    _encode_timestamp,
    fast=(
        "{v} if {v}.__class__ is int and 0 <= {v} <= {e} else "
        "(int({v}) if {v}.__class__ is str and 0 < len({v}) < 20 and {v}.isdigit() and {v}.isascii() else MISS)"
    ),
    env=MAX_TIMESTAMP,
    wire=int | str,
)
UUID = Codec(
    _decode_uuid,
    _same,
    fast="{v} if {v}.__class__ is str and {e}({v}) else MISS",
    env=_UUID.match,
    wire=str,
    fast_wire="{v} if {e}({v}) else MISS",
)
PRICE = Codec(_decode_price, _encode_str_form, fast=_SEEN, env=_prices, wire=str, fast_wire=_SEEN_STR)
QUANTITY = Codec(_decode_quantity, _encode_str_form, fast=_SEEN, env=_quantities, wire=str, fast_wire=_SEEN_STR)
MONEY = Codec(_decode_money, _encode_str_form, fast=_SEEN, env=_moneys, wire=str, fast_wire=_SEEN_STR)
# A registered code (the registry itself, changed in place: `values.register_currency`) is what
# `_decode_currency` gives for it; the space is looked for as there, whatever was registered.
CURRENCY = Codec(
    _decode_currency,
    _encode_currency,
    fast="{e}.get({v}, MISS) if {v}.__class__ is str and ' ' not in {v} else MISS",
    env=currency_registry(),
    wire=str,
    fast_wire="{e}.get({v}, MISS) if ' ' not in {v} else MISS",
)
STR_LIST = Codec(_decode_str_list, _encode_list, wire=str | list[str])


# Identifiers repeat on almost every message (trader, strategy, instrument, account), so each
# codec remembers the ones it has checked. Bounded: cleared when it grows past this many.
_IDENTIFIER_CACHE_SIZE = 16_384


def identifier(kind: type[Identifier]) -> Codec:
    seen: dict[str, Identifier] = {}
    valid = plainly_valid(kind)
    build = str.__new__

    def decode(value: Any, path: str) -> Identifier:
        found = seen.get(value) if isinstance(value, str) else None
        if found is not None:
            return found
        if valid is not None and value.__class__ is str and valid(value):  # surely valid: built as kind() would
            checked: Identifier = build(kind, value)
        elif not isinstance(value, str):
            raise invalid(path, f"expected a string, got {_type_name(value)}")
        else:
            try:
                checked = kind(value)
            except ValueError as exc:
                raise invalid(path, str(exc)) from None
        if len(seen) >= _IDENTIFIER_CACHE_SIZE:
            seen.clear()
        seen[value] = checked
        return checked

    return Codec(
        decode,
        _encode_str_form,
        fast=_SEEN,
        env=seen,
        wire=str,
        fast_wire=_SEEN_STR,
        identifier=(kind, plain_rule(kind), _IDENTIFIER_CACHE_SIZE),
    )


def identifier_list(kind: type[Identifier]) -> Codec:
    item = identifier(kind)

    def decode(value: Any, path: str) -> tuple[Identifier, ...]:
        return tuple(item.decode(text, f"{path}[{i}]") for i, text in enumerate(_decode_str_list(value, path)))

    return Codec(decode, lambda value, ts_as_str: [str(v) for v in value], wire=str | list[str])


def enum(kind: type[E]) -> Codec:
    members = dict(kind.__members__)  # a plain dict: the compiled decoders look it up directly

    def decode(value: Any, path: str) -> E:
        member = members.get(value) if isinstance(value, str) else None
        if member is None:
            raise invalid(path, f"{shown(value)} is not a {kind.__name__} (one of {', '.join(members)})")
        return member

    return Codec(decode, lambda value, ts_as_str: value.name, fast=_SEEN, env=members, wire=str, fast_wire=_SEEN_STR)


def optional(codec: Codec) -> Codec:
    """The same codec, with nil allowed (decoded as None)."""

    def decode(value: Any, path: str) -> Any:
        return None if value is None else codec.decode(value, path)

    def encode(value: Any, ts_as_str: bool) -> Any:
        return None if value is None else codec.encode(value, ts_as_str)

    return Codec(decode, encode, codec, wire=None if codec.wire is None else codec.wire | None)


__all__ = [
    "BOOL",
    "CURRENCY",
    "FLOAT",
    "INT",
    "MAP",
    "MAX_RAW",
    "MISS",
    "MONEY",
    "PRICE",
    "QUANTITY",
    "STR_LIST",
    "TEXT",
    "TIMESTAMP",
    "UUID",
    "Codec",
    "Field",
    "enum",
    "identifier",
    "identifier_list",
    "in_range",
    "invalid",
    "optional",
    "shown",
]
