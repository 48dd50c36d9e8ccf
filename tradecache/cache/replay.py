"""Model objects rebuilt from what Redis holds (pure: bytes in, objects out).

Shared by the Python API (`RedisCacheDatabase`) and the load service, so both read the same way:
an order is its events replayed, a position its fills replayed with its instrument, an account
its states replayed (wire-format.md section 9).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from tradecache.cache.plan import as_text
from tradecache.model.accounts import Account, replay_account
from tradecache.model.enums import CurrencyType
from tradecache.model.events import AccountState, OrderEvent, OrderFilled, SubmitOrder, SubmitOrderList
from tradecache.model.instruments import Instrument
from tradecache.model.orders import Order, replay_order
from tradecache.model.positions import Position, replay_position
from tradecache.model.values import Currency
from tradecache.serialization.msgpack import MsgPackSerializer, unpack

T = TypeVar("T")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a bulk load allocates.

    Rebuilding thousands of orders allocates a million small objects, none of them in cycles;
    each allocation burst triggers full collections that walk everything already loaded, which
    made load_orders() of 10k orders ~40% slower. Reference counting still frees garbage.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def decode_events(serializer: MsgPackSerializer, raw: Sequence[bytes], kind: type[T], what: str) -> list[T]:
    deserialize = serializer.deserialize
    items = [deserialize(item) for item in raw]
    for item in items:
        if not isinstance(item, kind):
            raise ValueError(f"{what} holds a {type(item).__name__}, expected {kind.__name__}")
    return items  # type: ignore[return-value]  # checked just above


def events_from_maps(
    serializer: MsgPackSerializer, maps: Sequence[dict[str, Any]], kind: type[T], what: str
) -> list[T]:
    """Stored events already unpacked (the load service keeps the maps for its replies)."""
    items = [serializer.from_map(item) for item in maps]  # from_map never changes its map
    for item in items:
        if not isinstance(item, kind):
            raise ValueError(f"{what} holds a {type(item).__name__}, expected {kind.__name__}")
    return items  # type: ignore[return-value]  # checked just above


def order_from_events(serializer: MsgPackSerializer, raw: Sequence[bytes]) -> Order | None:
    if not raw:
        return None
    return replay_order(decode_events(serializer, raw, OrderEvent, "an order list"))


def fills_of(serializer: MsgPackSerializer, raw: Sequence[bytes]) -> list[OrderFilled]:
    return decode_events(serializer, raw, OrderFilled, "a position list")


def position_from_fills(fills: Sequence[OrderFilled], instrument: Instrument | None) -> Position | None:
    if not fills or instrument is None:
        return None
    return replay_position(instrument, fills)


def account_from_states(serializer: MsgPackSerializer, raw: Sequence[bytes]) -> Account | None:
    if not raw:
        return None
    return replay_account(decode_events(serializer, raw, AccountState, "an account list"))


def instrument_from_bytes(serializer: MsgPackSerializer, raw: bytes | None) -> Instrument | None:
    return None if raw is None else serializer.deserialize_instrument(raw)


def currency_from_hash(code: str, fields: Mapping[Any, bytes | str] | bytes | None) -> Currency | None:
    """A currency from what its key holds in either layout: the seed layout's hash (`precision`,
    `iso4217`, `name`, `currency_type` as strings) or NautilusTrader's msgpack map (numbers as
    integers)."""
    if not fields:
        return None
    if isinstance(fields, bytes):
        values = {key: str(value) for key, value in unpack(fields).items()}
    else:
        values = {as_text(key): as_text(value) for key, value in fields.items()}
    return Currency(
        code=code,
        precision=int(values["precision"]),
        iso4217=int(values["iso4217"]),
        name=values["name"],
        currency_type=CurrencyType[values["currency_type"]],
    )


def strategy_state_from(stored: Mapping[Any, bytes] | bytes | None) -> dict[str, bytes]:
    """A strategy's state (field -> bytes) from either layout: the seed layout's hash or
    NautilusTrader's msgpack map. Absent: an empty map."""
    if not stored:
        return {}
    if isinstance(stored, bytes):
        fields: Mapping[Any, Any] = unpack(stored)
    else:
        fields = stored
    state = {}
    for name, value in fields.items():
        if not isinstance(value, (bytes, bytearray, str)):
            raise ValueError(f"strategy state field {as_text(name)!r} holds a {type(value).__name__}, not bytes")
        state[as_text(name)] = value.encode() if isinstance(value, str) else bytes(value)
    return state


def submit_order_from_bytes(serializer: MsgPackSerializer, raw: bytes | None) -> SubmitOrder | None:
    if raw is None:
        return None
    command = serializer.deserialize(raw)
    if not isinstance(command, SubmitOrder):
        raise ValueError(f"a submit_order key holds a {type(command).__name__}")
    return command


def submit_order_list_from_bytes(serializer: MsgPackSerializer, raw: bytes | None) -> SubmitOrderList | None:
    if raw is None:
        return None
    command = serializer.deserialize(raw)
    if not isinstance(command, SubmitOrderList):
        raise ValueError(f"a submit_order_list key holds a {type(command).__name__}")
    return command


__all__ = [
    "account_from_states",
    "currency_from_hash",
    "decode_events",
    "events_from_maps",
    "fills_of",
    "gc_paused",
    "instrument_from_bytes",
    "order_from_events",
    "position_from_fills",
    "strategy_state_from",
    "submit_order_from_bytes",
    "submit_order_list_from_bytes",
]
