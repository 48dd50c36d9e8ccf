"""Which ids may become part of a Redis key (pure).

Keys are `trader-<trader id>:<collection>:<entity id>` (SPEC section 2, NautilusTrader's own
layout), and NautilusTrader reads an entity back by exactly that text, so an id cannot be escaped
without breaking compatibility. Two rules make every key name unambiguous instead:

- **A trader id has no `:`** (nor anything but letters, digits, `-`, `_`, `.`: SPEC section 7).
  The trader part of a key then ends at its first `:`, so no key of one trader can be a key of
  another, whatever the entity ids hold. (NautilusTrader itself would accept `FX-118:orders:X`,
  whose order `O-1` is stored at `trader-FX-118:orders:X:orders:O-1`: FX-118's order
  `X:orders:O-1`.)
- **No `:`-separated part of an entity id is a namespace word** (`orders`, `tradecache`, `index`,
  ... below: the words that open a key's namespace in tradecache's layout or NautilusTrader's).
  Keys of one trader are already distinct by construction (each collection has its own prefix and
  `:` ends it); this rule keeps a stored key from also *reading* as a key of a trader whose id
  holds `:` (written by another program, since tradecache refuses such ids), so that a SCAN of
  `trader-FX-118:*` never adopts another trader's entity, and a load by id never reads one.
  Real ids never hold these words as parts: `O-20240101-000001-001-001-1`, `AUD/USD.SIM`,
  `SPY   240119C00470000.XCBO`, `ESZ4.GLBX`, `BTCUSDT-PERP.BINANCE`, `EUR/USD.SIM-EMACross-001`
  are all fine, and so is an id with a `:` in it (`x:1`, as a venue's client order id may be).

Entity ids with control characters (a newline, a tab, NUL) are refused too: no node makes them,
and they would forge lines in text logs and cannot be typed at a shell.
"""

from __future__ import annotations

import re
from typing import Final

# The first part after `trader-<id>:` of every key in tradecache's layout (SPEC section 2, and
# `tradecache:`) and in NautilusTrader's RedisCacheDatabase (`general`, `synthetics`, `actors`,
# `index`, `snapshots`, `health`, and `trader`, the start of every key).
NAMESPACE_WORDS: Final = frozenset(
    {
        "currencies",
        "instruments",
        "synthetics",
        "accounts",
        "orders",
        "positions",
        "actors",
        "strategies",
        "commands",
        "general",
        "index",
        "snapshots",
        "health",
        "trader",
        "tradecache",
    }
)
# SPEC section 7: letters, digits, `-`, `_`, `.` (ASCII only).
_TRADER_ID: Final = re.compile(r"[A-Za-z0-9_.-]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def trader_id_problem(value: str) -> str | None:
    """Why `value` cannot be a trader id in a key (None: it can)."""
    if not isinstance(value, str) or _TRADER_ID.fullmatch(value) is None:
        return f"trader id {value!r} may hold only letters, digits, '-', '_' and '.' (SPEC section 7)"
    return None


def key_part_problem(value: str) -> str | None:
    """Why the entity id `value` cannot be part of a key (None: it can). Fast for usual ids."""
    if ":" not in value and value.isprintable():
        return None
    if _CONTROL.search(value) is not None:
        return f"{value!r} holds a control character"
    words = sorted(NAMESPACE_WORDS.intersection(value.split(":")))
    if words:
        return (
            f"{value!r} has '{words[0]}' as a ':'-separated part: a key holding it could be read as a "
            "key of another collection or trader"
        )
    return None


def is_key_part(value: str) -> bool:
    """Whether the entity id `value` may be part of a key."""
    return key_part_problem(value) is None


__all__ = ["NAMESPACE_WORDS", "is_key_part", "key_part_problem", "trader_id_problem"]
