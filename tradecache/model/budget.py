"""The memory budget of a Ledger: estimated bytes per entity, least recently used first (pure).

The Ledger keeps orders, positions, accounts and instruments in memory so that a message can be
checked without a Redis read. Anything it drops is read back when a message needs it, so memory
is a cache, and this bounds it: after each batch, the least recently used entities go until the
estimate is within the budget.

Estimates, not measurements: `sys.getsizeof` does not follow references and a deep walk would
cost more than the message. The figures below were measured with tracemalloc on the chaos feed
(an order event held ~300 bytes, an order ~1 KB with its first event, a CurrencyPair ~1.7 KB for
a 387-byte payload) and rounded up. A free-form map (`info`) counts twice its packed size.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import msgpack

ENTITY_BYTES: Final = 1_000  # the object itself, its ids and its computed state
EVENT_BYTES: Final = 400  # each event (or fill, or account state) it keeps
BALANCE_BYTES: Final = 300  # each balance or margin an account keeps
INSTRUMENT_BYTES_PER_PACKED_BYTE: Final = 5  # an instrument is kept as its decoded map

Key = tuple[str, str]  # (collection, entity id)


def free_form_bytes(value: Any) -> int:
    """What a free-form map (`info`) adds to an event: nothing when empty."""
    if not value:
        return 0
    try:
        return 2 * len(msgpack.packb(value, use_bin_type=True))
    except (ValueError, TypeError):  # not packable: refused elsewhere; count it as large
        return 1 << 20


def event_bytes(event: Any) -> int:
    info = getattr(event, "info", None)
    return EVENT_BYTES + free_form_bytes(info) if info else EVENT_BYTES


def instrument_bytes(data: dict[str, Any]) -> int:
    try:
        packed = len(msgpack.packb(data, use_bin_type=True))
    except (ValueError, TypeError):
        packed = 1 << 18
    return ENTITY_BYTES + INSTRUMENT_BYTES_PER_PACKED_BYTE * packed


class MemoryBudget:
    """Estimated bytes per entity, in least-recently-used order.

    What was used since the call to `evict` before the last one is never evicted, even over the
    limit: an entity larger than the budget by itself (an order filled 100,000 times, a
    position's long cycle) was dropped after every batch and read back, its whole history, by
    the next (ingest fell from ~28,000 to 2,800 events/s). Two calls, since the daemon applies a
    batch ahead while the one before commits: `evict` after a commit must keep the entities of
    that batch, used before the previous call, and of the one applied ahead. Memory then holds
    the budget plus the entities of the last two batches, which applying them needed anyway.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._costs: OrderedDict[Key, int] = OrderedDict()
        self._used: set[Key] = set()  # since the last `evict`
        self._used_before: set[Key] = set()  # between the two calls before

    def __len__(self) -> int:
        return len(self._costs)

    def __contains__(self, key: object) -> bool:
        return key in self._costs

    def touch(self, key: Key) -> None:
        """`key` was just used (it is not evicted before entities used longer ago)."""
        if key in self._costs:
            self._costs.move_to_end(key)
            self._used.add(key)

    def set(self, key: Key, cost: int) -> None:
        """`key` now costs `cost` and is the most recently used."""
        self.total += cost - self._costs.get(key, 0)
        self._costs[key] = cost
        self._costs.move_to_end(key)
        self._used.add(key)

    def add(self, key: Key, cost: int) -> None:
        """`key` costs `cost` more (a new event) and is the most recently used."""
        costs = self._costs
        costs[key] = costs.get(key, 0) + cost
        costs.move_to_end(key)
        self._used.add(key)
        self.total += cost

    def cost(self, key: Key) -> int:
        return self._costs.get(key, 0)

    def drop(self, key: Key) -> None:
        self.total -= self._costs.pop(key, 0)

    def clear(self) -> None:
        self._costs.clear()
        self._used.clear()
        self._used_before.clear()
        self.total = 0

    @property
    def excess(self) -> int:
        """Bytes over the limit (0 when within it)."""
        return max(0, self.total - self.limit)

    def largest(self) -> tuple[Key, int] | None:
        """The entity estimated largest, and its bytes (a walk of every entity: for a log line).

        Raises:
            Nothing.
        """
        return max(self._costs.items(), key=lambda item: item[1], default=None)

    def evict(self) -> list[Key]:
        """Drop least recently used keys until within the limit or only keys used since the call
        before the last are left; the keys dropped, oldest first."""
        costs, used, before, dropped = self._costs, self._used, self._used_before, []
        while self.total > self.limit and costs:
            key = next(iter(costs))
            if key in used or key in before:  # every key after it was used later
                break
            self.total -= costs.pop(key)
            dropped.append(key)
        before.clear()
        self._used, self._used_before = before, used
        return dropped


__all__ = [
    "BALANCE_BYTES",
    "ENTITY_BYTES",
    "EVENT_BYTES",
    "MemoryBudget",
    "event_bytes",
    "free_form_bytes",
    "instrument_bytes",
]
