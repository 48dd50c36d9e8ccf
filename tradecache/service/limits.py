"""What one load request may cost, and the size below which no reply item can be.

The load service shares the daemon's event loop with ingest, so every request is bounded in
work, memory and time (docs/ARCHITECTURE.md, "Load requests"):
- at most `max_in_flight` requests are handled at once; one more is answered 429 "busy" at once;
- a request body larger than `max_request_bytes` is refused (400) without being parsed;
- at most `max_page_builds` collection requests read and build at once (the rest wait their
  turn), each reading `READ_CHUNK` entities at a time and building at most one reply's worth of
  items (the NATS max payload) before it stops;
- building gives the loop back every `SLICE_SECONDS`, and each request admitted or answered at
  once gives it back too, so an event on its way to Redis waits a few slices at most;
- an unpaged collection whose index holds more items than a reply can (`min_entry_bytes`) is
  refused (413) before anything is read;
- an error reply quotes at most `MAX_ERROR_CHARS` characters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from tradecache.model.ledger import Collection
from tradecache.serialization.codecs import Field
from tradecache.serialization.schemas import (
    ACCOUNT_STATE_FIELDS,
    CURRENCY_FIELDS,
    ORDER_FILLED_FIELDS,
    ORDER_INITIALIZED_FIELDS,
)


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """The configurable limits (config section `load:`; the defaults are the same)."""

    max_in_flight: int = 64
    max_page_builds: int = 1
    max_request_bytes: int = 16384


# Entities read from Redis per round trip while a page is built: small enough that one read
# holds little memory and blocks Redis for well under a millisecond.
READ_CHUNK: Final = 200
# The fewest a read takes near a page's end (`endpoints.next_chunk`): a short read is a round trip.
MIN_READ_CHUNK: Final = 16
# Ids a page takes from its collection's index at a time (`ZRANGE BYLEX`; ~50 KB): then each
# chunk is one round trip (its lists), not two (its ids, then its lists).
ID_BATCH: Final = 1000
# The longest stretch of building between two yields to the event loop: an event waits a few
# loop turns on its way to Redis, and at most `max_page_builds` slices run in each turn.
SLICE_SECONDS: Final = 0.002
MAX_ERROR_CHARS: Final = 300
# Requests admitted or answered at once between two yields to the event loop (~30 us each).
ADMIT_BATCH: Final = 8
# How long an index's size (ZCARD) stays good enough to refuse an unpaged request at once (413).
COUNT_TTL_SECONDS: Final = 0.25


def _required(fields: Iterable[Field], *more: str) -> tuple[str, ...]:
    return (*(field.key for field in fields if not field.may_be_absent), "type", *more)


# The keys every snapshot of the collection has (serialization/snapshots.py), `events` included.
SNAPSHOT_KEYS: Final[dict[Collection, tuple[str, ...]]] = {
    Collection.ORDERS: (
        "status", "order_type", "side", "quantity", "filled_qty", "leaves_qty", "avg_px", "is_open", "is_closed",
        "event_count", "last_event_type", "venue_order_id", "position_id", "events",
    ),
    Collection.POSITIONS: (
        "instrument_id", "side", "signed_qty", "quantity", "peak_qty", "avg_px_open", "avg_px_close",
        "realized_pnl", "commissions", "is_open", "is_closed", "event_count", "opening_order_id",
        "closing_order_id", "ts_opened", "ts_closed", "events",
    ),
    Collection.ACCOUNTS: ("account_type", "base_currency", "balances", "event_count", "events"),
}  # fmt: skip

# The maps (by their keys) every item of a collection holds: a snapshot and the required keys of
# the event its replay starts with (without them the replay fails, and no reply holds the item);
# a currency's map. Instruments, commands and strategy states are answered as stored: any map.
CERTAIN_MAPS: Final[dict[Collection, tuple[tuple[str, ...], ...]]] = {
    Collection.ORDERS: (SNAPSHOT_KEYS[Collection.ORDERS], _required(ORDER_INITIALIZED_FIELDS)),
    Collection.POSITIONS: (SNAPSHOT_KEYS[Collection.POSITIONS], _required(ORDER_FILLED_FIELDS)),
    Collection.ACCOUNTS: (SNAPSHOT_KEYS[Collection.ACCOUNTS], _required(ACCOUNT_STATE_FIELDS, "balances")),
    Collection.CURRENCIES: (_required(CURRENCY_FIELDS),),
}


def _map_floor(keys: Iterable[str]) -> int:
    """The fewest bytes of a map with `keys`: a header, and per key its text, a header and one
    byte of value (msgpack; JSON spends more on each: quotes, a colon, a comma)."""
    return 1 + sum(len(key.encode()) + 2 for key in keys)


def min_entry_bytes(collection: Collection) -> int:
    """A floor on the bytes one `id: item` entry of a `collection` reply takes (JSON or msgpack):
    the id (a header and one character at least) and the maps every item holds."""
    return 2 + sum(_map_floor(keys) for keys in CERTAIN_MAPS.get(collection, ((),)))


__all__ = [
    "ADMIT_BATCH",
    "CERTAIN_MAPS",
    "COUNT_TTL_SECONDS",
    "ID_BATCH",
    "MAX_ERROR_CHARS",
    "MIN_READ_CHUNK",
    "READ_CHUNK",
    "SLICE_SECONDS",
    "SNAPSHOT_KEYS",
    "ServiceLimits",
    "min_entry_bytes",
]
