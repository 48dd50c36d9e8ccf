"""What a load reply holds for one stored entity (pure: stored bytes in, plain maps out).

Orders, positions and accounts are rebuilt by replaying their stored events with the model, as
the Python API does, and answered as snapshots in the vectors' `expected` schema plus `events`:
the stored events as maps. Each stored payload is unpacked once; the same map feeds the model and
the reply. Instruments and commands are answered as their stored maps, currencies as the map of
their `Currency` message, strategies as their state hash (field -> bytes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from tradecache.cache.replay import currency_from_hash, decode_events, events_from_maps, strategy_state_from
from tradecache.model.accounts import replay_account
from tradecache.model.events import AccountState, OrderEvent, OrderFilled
from tradecache.model.ledger import Collection
from tradecache.model.orders import replay_order
from tradecache.model.positions import replay_position
from tradecache.serialization.msgpack import MsgPackSerializer, encode_currency, unpack
from tradecache.serialization.snapshots import account_snapshot, order_snapshot, position_snapshot
from tradecache.service.protocol import encode_reply, pack_with_raw_list

T = TypeVar("T")
Item = dict[str, Any]


def _events(
    serializer: MsgPackSerializer, raw: Sequence[bytes], kind: type[T], what: str
) -> tuple[list[Item], list[T]]:
    """The stored events as maps (for the reply) and as model events (for the replay)."""
    maps = [unpack(payload) for payload in raw]
    return maps, events_from_maps(serializer, maps, kind, what)


def order_item(serializer: MsgPackSerializer, raw: Sequence[bytes], *, with_events: bool = True) -> Item | None:
    """The order's snapshot plus `events`; without them (`with_events=False`) for a msgpack reply,
    which splices the stored bytes in (`protocol.pack_with_raw_list`): nothing is unpacked into maps."""
    if not raw:
        return None
    if not with_events:
        return order_snapshot(replay_order(decode_events(serializer, raw, OrderEvent, "an order list")))
    maps, events = _events(serializer, raw, OrderEvent, "an order list")
    snapshot = order_snapshot(replay_order(events))
    snapshot["events"] = maps
    return snapshot


def rebuilt_entry(
    serializer: MsgPackSerializer, collection: Collection, raw: Any, instrument: bytes | None, as_msgpack: bool
) -> bytes | None:
    """The encoded reply item of a rebuilt entity (an order, position or account), None when
    absent: pure, what both the loop and the build worker run. In msgpack the events go as stored,
    not unpacked nor packed again (`raw` is the list they came from); in JSON they are maps."""
    with_events = not as_msgpack
    if collection == Collection.ORDERS:
        item = order_item(serializer, raw, with_events=with_events)
    elif collection == Collection.POSITIONS:
        item = position_item(serializer, raw, instrument, with_events=with_events)
    else:
        item = account_item(serializer, raw, with_events=with_events)
    if item is None:
        return None
    return pack_with_raw_list(item, "events", list(raw)) if as_msgpack else encode_reply(item, False)


def first_fill_instrument(raw: Sequence[bytes]) -> str | None:
    """The instrument a stored position needs to be rebuilt (from its first fill)."""
    if not raw:
        return None
    instrument_id = unpack(raw[0]).get("instrument_id")
    return instrument_id if isinstance(instrument_id, str) else None


def position_item(
    serializer: MsgPackSerializer, raw: Sequence[bytes], instrument: bytes | None, *, with_events: bool = True
) -> Item | None:
    """A position snapshot, or None when it has no fills or its instrument is not stored
    (the Python API's `load_position` answers None then too). `with_events`: as `order_item`."""
    if not raw or instrument is None:
        return None
    if not with_events:
        fills = decode_events(serializer, raw, OrderFilled, "a position list")
        return position_snapshot(replay_position(serializer.deserialize_instrument(instrument), fills))
    maps, fills = _events(serializer, raw, OrderFilled, "a position list")
    position = replay_position(serializer.deserialize_instrument(instrument), fills)
    snapshot = position_snapshot(position)
    snapshot["events"] = maps
    return snapshot


def account_item(serializer: MsgPackSerializer, raw: Sequence[bytes], *, with_events: bool = True) -> Item | None:
    """An account snapshot; `with_events`: as `order_item`."""
    if not raw:
        return None
    if not with_events:
        return account_snapshot(replay_account(decode_events(serializer, raw, AccountState, "an account list")))
    maps, states = _events(serializer, raw, AccountState, "an account list")
    snapshot = account_snapshot(replay_account(states))
    snapshot["events"] = maps
    return snapshot


def currency_item(code: str, fields: Mapping[str, bytes] | bytes | None) -> Item | None:
    """The map of the `Currency` message the stored hash (seed) or msgpack map (nautilus) describes."""
    currency = currency_from_hash(code, fields)
    return None if currency is None else encode_currency(currency)


def stored_map_item(raw: bytes | None) -> Item | None:
    """An instrument or a command: the stored payload as its map."""
    return None if raw is None else unpack(raw)


def strategy_item(stored: Mapping[str, bytes] | bytes | None) -> dict[str, bytes]:
    """A strategy's state from the seed layout's hash or NautilusTrader's msgpack map."""
    return strategy_state_from(stored)


__all__ = [
    "Item",
    "account_item",
    "currency_item",
    "first_fill_instrument",
    "order_item",
    "position_item",
    "rebuilt_entry",
    "stored_map_item",
    "strategy_item",
]
