"""Adopting a Redis that another writer filled: our index sets built from the keys themselves.

Loads of a whole collection read the collection's index (`Keys.index`), which only tradecache's
own writes keep. A Redis written by NautilusTrader's cache database (or restored from before the
indexes existed) has the entities but no index, so its loads would come back empty. Here the
indexes are rebuilt from what is stored: a `SCAN` of the trader's keys (never `KEYS`), each key
turned back into (collection, entity id), and `INDEX_SCRIPT` adding the ids in batches.

Safe while the daemon ingests: an id is added only if its key exists at that moment, inside one
atomic script, so an entity deleted between the scan and the batch is not indexed again, and an
id the daemon indexed meanwhile is added twice to a sorted set, which is a no-op. Once a full pass
has finished, `Keys.indexed` is set; executors skip the scan while it exists (a forced rebuild,
`tradecache reindex`, ignores it). A user whose ACL forbids SCAN (it shows every key name of the
database) gets no pass and a warning: a sidecar that only ever wrote its Redis needs none.

This module is pure: the executors (`cache/database.py`, `cache/aio.py`) do the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tradecache.cache.keys import STRATEGY_STATE_SUFFIXES, Keys
from tradecache.model.key_parts import is_key_part
from tradecache.model.ledger import Collection

# For each i: KEYS[2i-1] an entity key, KEYS[2i] its index, ARGV[i] the entity id. Adds the id
# when the key exists; returns how many ids were new to their index.
INDEX_SCRIPT: Final = """
local added = 0
for i = 1, #ARGV do
  if redis.call('TYPE', KEYS[2 * i - 1])['ok'] ~= 'none' then
    added = added + redis.call('ZADD', KEYS[2 * i], 0, ARGV[i])
  end
end
return added
"""
# Keys per SCAN step and per INDEX_SCRIPT call: each call holds Redis for well under 10 ms.
SCAN_COUNT: Final = 1000

# Collections by the part of the key after `T:`, longest first so that `commands:submit_order_list:`
# is not taken for `commands:submit_order:` (their colons already keep them apart; order is belt
# and braces).
_PREFIXES: Final = sorted(
    ((f"{collection.value}:", collection) for collection in Collection),
    key=lambda pair: -len(pair[0]),
)
_STATE_ENDINGS: Final = tuple(f":{suffix}" for suffix in STRATEGY_STATE_SUFFIXES.values())


def entity_of(keys: Keys, key: str) -> tuple[Collection, str] | None:
    """The (collection, entity id) a stored key holds, or None for any other key of the trader
    (our own `tradecache:` keys, NautilusTrader's `index:`, `snapshots:`, `general:`, ...) and for
    a key whose id could not be this trader's."""
    head = keys.prefix + ":"
    if not key.startswith(head):
        return None
    rest = key[len(head) :]
    for prefix, collection in _PREFIXES:
        if not rest.startswith(prefix):
            continue
        entity_id = rest[len(prefix) :]
        if collection == Collection.STRATEGIES:
            ending = next((end for end in _STATE_ENDINGS if entity_id.endswith(end)), None)
            if ending is None:
                return None
            entity_id = entity_id[: -len(ending)]
        # An id tradecache would refuse (`model/key_parts.py`) is not this trader's: the key may
        # be another trader's whose id holds `:` (`trader-FX-1:orders:X:orders:O-1` is trader
        # `FX-1:orders:X`'s order `O-1`, written by another program), so it is not adopted.
        return (collection, entity_id) if entity_id and is_key_part(entity_id) else None
    return None


def foreign(keys: Keys, key: str) -> bool:
    """Whether a key SCAN found under this trader's prefix cannot be this trader's: an entity key
    whose id this trader could not hold (another trader's, whose id holds `:`). `flush()` keeps it."""
    head = keys.prefix + ":"
    if not key.startswith(head):
        return False
    rest = key[len(head) :]
    prefix = next((prefix for prefix, _ in _PREFIXES if rest.startswith(prefix)), None)
    return prefix is not None and not is_key_part(rest[len(prefix) :])


@dataclass
class IndexBatch:
    """The KEYS and ARGV of one `INDEX_SCRIPT` call."""

    keys: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def plan_index(keys: Keys, found: Iterable[str]) -> IndexBatch:
    """The script call that indexes the entities among `found` (scanned key names)."""
    batch = IndexBatch()
    for key in found:
        entity = entity_of(keys, key)
        if entity is None:
            continue
        collection, entity_id = entity
        batch.keys.extend((key, keys.index(collection)))
        batch.ids.append(entity_id)
    return batch


@dataclass
class IndexReport:
    """What one pass found: keys scanned, entity keys among them, ids that were new to an index."""

    scanned: int = 0
    entities: int = 0
    added: int = 0
    skipped: bool = False  # the marker said the indexes were complete: nothing scanned
    refused: str | None = None  # Redis' ACL forbids SCAN for this user: nothing scanned

    def take(self, found: Sequence[str], batch: IndexBatch, added: int) -> None:
        self.scanned += len(found)
        self.entities += len(batch.ids)
        self.added += added

    def summary(self) -> str:
        if self.refused is not None:
            return (
                f"cannot scan ({self.refused}); indexes not built: grant +scan, or run "
                "`tradecache reindex` as a user that may"
            )
        if self.skipped:
            return "indexes already complete (nothing scanned; `tradecache reindex` forces a scan)"
        return f"scanned {self.scanned} keys: {self.entities} entities, {self.added} added to the indexes"


__all__ = ["INDEX_SCRIPT", "SCAN_COUNT", "IndexBatch", "IndexReport", "entity_of", "foreign", "plan_index"]
