"""Every Redis key name tradecache reads or writes, in one place.

The collections follow NautilusTrader's layout (SPEC section 2): `trader-<id>:<collection>:<id>`.
Everything the project keeps for itself (indexes, dedupe data, the stream checkpoint) lives
under `trader-<id>:tradecache:`, never under a collection prefix.

With `hash_tag=True` (Redis Cluster) the `trader-<id>` part is wrapped in braces,
`{trader-<id>}:orders:O-1`, so that all of one trader's keys hash to one slot and a batch can be
written by one atomic script. That brace pair is the only layout change Cluster needs.
"""

from __future__ import annotations

from tradecache.model.ledger import Collection

# Strategy state hashes carry this suffix in NautilusTrader's layout.
STRATEGY_STATE_SUFFIX = "State"


def _escape_glob(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


class Keys:
    """Key names for one trader."""

    __slots__ = ("hash_tag", "prefix", "trader_id")

    def __init__(self, trader_id: str, *, hash_tag: bool = False) -> None:
        self.trader_id = trader_id
        self.hash_tag = hash_tag
        base = f"trader-{trader_id}"
        self.prefix = f"{{{base}}}" if hash_tag else base

    def entity(self, collection: Collection, entity_id: str) -> str:
        """The key holding one entity: `T:orders:O-1`, `T:strategies:S-1:State`, ..."""
        if collection == Collection.STRATEGIES:
            return f"{self.prefix}:{collection.value}:{entity_id}:{STRATEGY_STATE_SUFFIX}"
        return f"{self.prefix}:{collection.value}:{entity_id}"

    def index(self, collection: Collection) -> str:
        """The entity ids stored in `collection`: a sorted set, every score 0, so ids come back in
        byte order and a page can start after any id (`ZRANGE ... BYLEX`)."""
        return f"{self.prefix}:tradecache:index:{collection.value}"

    def seen(self, collection: Collection) -> str:
        """The hash of (entity, event id) pairs already stored in `collection` (see plan.APPLY_SCRIPT)."""
        return f"{self.prefix}:tradecache:seen:{collection.value}"

    def checkpoint(self) -> str:
        """The last JetStream stream sequence whose writes are committed."""
        return f"{self.prefix}:tradecache:checkpoint"

    def pending_openings(self) -> str:
        """Opening halves of split fills waiting for the node to name their position."""
        return f"{self.prefix}:tradecache:pending_openings"

    def scan_pattern(self) -> str:
        """A SCAN pattern matching every key of this trader and no other trader's."""
        return f"{_escape_glob(self.prefix)}:*"


__all__ = ["STRATEGY_STATE_SUFFIX", "Keys"]
