"""Every Redis key name tradecache reads or writes, in one place.

The collections follow NautilusTrader's layout (SPEC section 2): `trader-<id>:<collection>:<id>`.
Everything the project keeps for itself (indexes, dedupe data, the stream checkpoint) lives
under `trader-<id>:tradecache:`, never under a collection prefix.

With `hash_tag=True` (Redis Cluster) the `trader-<id>` part is wrapped in braces,
`{trader-<id>}:orders:O-1`, so that all of one trader's keys hash to one slot and a batch can be
written by one atomic script. That brace pair is the only layout change Cluster needs.

`Layout` (SPEC section 7) chooses how currencies and strategy state are written: `seed` as SPEC
section 2 (a hash at `T:currencies:<code>`, a hash at `T:strategies:<id>:State`) or `nautilus` as
NautilusTrader >= 1.221 writes them (a msgpack string at `T:currencies:<code>`, a msgpack string at
`T:strategies:<id>:state`). Readers accept both forms whatever the layout.

Key names are unambiguous because the trader id may not hold `:` (checked here) and entity ids
may not hold a namespace word as a `:`-separated part (checked when they are decoded, and by
readers before they build a key from a requested id): see `model/key_parts.py`.
"""

from __future__ import annotations

from enum import StrEnum

from tradecache.model.key_parts import trader_id_problem
from tradecache.model.ledger import Collection


class Layout(StrEnum):
    """How currencies and strategy state are written (both forms are always read)."""

    SEED = "seed"
    NAUTILUS = "nautilus"


# The last part of a strategy state key, per layout.
STRATEGY_STATE_SUFFIXES: dict[Layout, str] = {Layout.SEED: "State", Layout.NAUTILUS: "state"}
# The seed layout's suffix (SPEC section 2).
STRATEGY_STATE_SUFFIX = STRATEGY_STATE_SUFFIXES[Layout.SEED]


def _escape_glob(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


class Keys:
    """Key names for one trader."""

    __slots__ = ("_appended", "_closed", "_entity", "_index", "_seen", "_trimmed", "hash_tag", "layout", "prefix",
                 "trader_id")  # fmt: skip

    def __init__(self, trader_id: str, *, hash_tag: bool = False, layout: Layout | str = Layout.SEED) -> None:
        problem = trader_id_problem(trader_id)
        if problem is not None:  # a `:` in it would let this trader's keys be another trader's
            raise ValueError(problem)
        self.trader_id = trader_id
        self.hash_tag = hash_tag
        self.layout = Layout(layout)
        base = f"trader-{trader_id}"
        self.prefix = f"{{{base}}}" if hash_tag else base
        # Names built once: every message of a batch asks for a few of them.
        self._entity = {collection: f"{self.prefix}:{collection.value}:" for collection in Collection}
        self._index = {collection: f"{self.prefix}:tradecache:index:{collection.value}" for collection in Collection}
        self._seen = {collection: f"{self.prefix}:tradecache:seen:{collection.value}" for collection in Collection}
        self._closed = {collection: f"{self.prefix}:tradecache:closed:{collection.value}" for collection in Collection}
        self._trimmed = {
            collection: f"{self.prefix}:tradecache:trimmed:{collection.value}" for collection in Collection
        }
        self._appended: dict[Collection, tuple[str, str, str]] = {
            collection: (self._entity[collection], self._seen[collection], self._index[collection])
            for collection in Collection
            if collection != Collection.STRATEGIES
        }

    def entity(self, collection: Collection, entity_id: str) -> str:
        """The key holding one entity: `T:orders:O-1`, `T:strategies:S-1:State` (this layout's form), ..."""
        if collection == Collection.STRATEGIES:
            return self.strategy_state(entity_id, self.layout)
        return self._entity[collection] + entity_id

    def appended(self, collection: Collection) -> tuple[str, str, str]:
        """What an event appended to an entity of `collection` (not strategies) names at once: the
        prefix of its entity keys (`entity` is the prefix + the entity id), its `seen` hash and its
        `index`. Built once: the append is the operation of most messages."""
        return self._appended[collection]

    def strategy_state(self, strategy_id: str, layout: Layout) -> str:
        """The key of a strategy's state in `layout`'s form."""
        return f"{self.prefix}:{Collection.STRATEGIES.value}:{strategy_id}:{STRATEGY_STATE_SUFFIXES[layout]}"

    def strategy_states(self, strategy_id: str) -> tuple[str, str]:
        """Both forms of a strategy's state key, this layout's first (the order reads prefer)."""
        other = Layout.SEED if self.layout == Layout.NAUTILUS else Layout.NAUTILUS
        return self.strategy_state(strategy_id, self.layout), self.strategy_state(strategy_id, other)

    def index(self, collection: Collection) -> str:
        """The entity ids stored in `collection`: a sorted set, every score 0, so ids come back in
        byte order and a page can start after any id (`ZRANGE ... BYLEX`)."""
        return self._index[collection]

    def seen(self, collection: Collection) -> str:
        """The hash of (entity, event id) pairs already stored in `collection` (see plan.APPLY_SCRIPT)."""
        return self._seen[collection]

    def closed(self, collection: Collection) -> str:
        """Closed entities of `collection` (orders, positions): a sorted set scored by when each
        closed (ms, Redis' clock), which retention purges from (`cache/retention.py`)."""
        return self._closed[collection]

    def trimmed(self, collection: Collection) -> str:
        """How many fills retention trimmed from the head of each position's list (a hash, id ->
        count): a closed cycle's mark names its last fill by its index since the list began."""
        return self._trimmed[collection]

    def purged(self, collection: Collection) -> str:
        """Ids retention removed, scored by when (ms): a late event for one is refused as purged."""
        return f"{self.prefix}:tradecache:purged:{collection.value}"

    def checkpoint(self) -> str:
        """The last JetStream stream sequence whose writes are committed."""
        return f"{self.prefix}:tradecache:checkpoint"

    def lease(self) -> str:
        """The token of the one daemon allowed to write this trader (see ingest/lease.py)."""
        return f"{self.prefix}:tradecache:lease"

    def pending_openings(self) -> str:
        """Opening halves of split fills waiting for the node to name their position."""
        return f"{self.prefix}:tradecache:pending_openings"

    def indexed(self) -> str:
        """Set once every entity key of this trader is in the indexes (see `cache.adoption`)."""
        return f"{self.prefix}:tradecache:indexed"

    def scan_pattern(self) -> str:
        """A SCAN pattern matching every key of this trader and no other trader's."""
        return f"{_escape_glob(self.prefix)}:*"


# The `collection` label of `tradecache_keys` and what each counts; the metric's label set is
# derived from it. Collections counted for `tradecache_keys` (commands: both command collections together).
COUNTED: dict[str, tuple[Collection, ...]] = {
    "currencies": (Collection.CURRENCIES,),
    "instruments": (Collection.INSTRUMENTS,),
    "accounts": (Collection.ACCOUNTS,),
    "orders": (Collection.ORDERS,),
    "positions": (Collection.POSITIONS,),
    "strategies": (Collection.STRATEGIES,),
    "commands": (Collection.SUBMIT_ORDER, Collection.SUBMIT_ORDER_LIST),
}


__all__ = ["COUNTED", "STRATEGY_STATE_SUFFIX", "STRATEGY_STATE_SUFFIXES", "Keys", "Layout"]
