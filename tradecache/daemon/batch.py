"""A batch of deliveries applied through the ledger, in stream order (pure).

`apply_batch` takes checked deliveries and returns what to do with them: the script call that
writes everything the batch changes plus the checkpoint (its last stream sequence), the
refused deliveries to dead-letter, and per-delivery outcomes for metrics. Nothing is written
or acknowledged here; the ingest loop does that in this order: dead letters, the one Redis
call, then the ack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tradecache.cache.keys import Keys
from tradecache.cache.plan import Encoder, ScriptCall, plan_writes
from tradecache.daemon.intake import Accepted, Refused
from tradecache.errors import EventRejected
from tradecache.model.ledger import Divergence, Ledger, Outcome
from tradecache.model.messages import Message


@dataclass(slots=True)
class Applied:
    item: Accepted
    outcome: Outcome


@dataclass
class BatchResult:
    call: ScriptCall
    applied: list[Applied] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    skipped: int = 0  # at or below the checkpoint: already committed before a restart
    divergences: list[Divergence] = field(default_factory=list)
    last_seq: int = 0


def apply_batch(
    ledger: Ledger,
    items: Sequence[Accepted | Refused],
    *,
    checkpoint: int,
    keys: Keys,
    encode: Encoder,
) -> BatchResult:
    """Apply `items` (stream order) on `ledger`; deliveries at or below `checkpoint` are skipped."""
    result = BatchResult(ScriptCall())
    originals: dict[int, bytes] = {}
    for item in items:
        seq = item.delivery.stream_seq
        result.last_seq = max(result.last_seq, seq)
        if seq <= checkpoint:
            result.skipped += 1
            continue
        if isinstance(item, Refused):
            result.refused.append(item)
            continue
        try:
            outcome = ledger.apply(item.message)
        except EventRejected as exc:
            result.refused.append(Refused(item.delivery, item.kind.value, item.type_name, exc))
            continue
        result.applied.append(Applied(item, outcome))
        if outcome.divergence is not None:
            result.divergences.append(outcome.divergence)
        if item.canonical:
            originals[id(item.message)] = item.delivery.data
    writes = [write for applied in result.applied for write in applied.outcome.writes]

    def encode_keeping_bytes(message: Message) -> bytes:
        # The bytes received are stored as they are when they are already canonical.
        raw = originals.get(id(message))
        return raw if raw is not None else encode(message)

    plan_writes(writes, keys, encode_keeping_bytes, result.call)
    if result.last_seq > checkpoint:
        result.call.checkpoint(keys, result.last_seq)
    return result


__all__ = ["Applied", "BatchResult", "apply_batch"]
