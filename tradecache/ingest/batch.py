"""A batch of deliveries applied through the ledger, in stream order (pure).

`apply_batch` takes checked deliveries and returns what to do with them: the script call that
writes everything the batch changes plus the checkpoint (its last stream sequence), the
refused deliveries to dead-letter, and per-delivery outcomes for metrics. Nothing is written
or acknowledged here; the ingest loop does that in this order: dead letters, the one Redis
call, then the ack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from tradecache.cache.keys import Keys
from tradecache.cache.plan import Encoder, ScriptCall, plan_checks, plan_marks, plan_openings, plan_writes
from tradecache.errors import EventRejected, RejectReason
from tradecache.ingest.intake import Accepted, Refused, released
from tradecache.model.events import AccountState, OrderEvent
from tradecache.model.ledger import Divergence, Ledger, Outcome, WriteOp
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
    # After a message that failed unexpectedly (a bug, not a refusal): the items not applied yet,
    # to be applied by another call once this result is committed (see `apply_batch`).
    rest: list[Accepted | Refused] = field(default_factory=list)
    failure: Exception | None = None  # that unexpected error, for the log


def owner_of(result: BatchResult, operation: int) -> Applied | None:
    """The applied message whose write or check is `result.call.operations[operation]`."""
    if not 0 <= operation < len(result.call.operations):
        return None
    write = result.call.operations[operation]
    if write is None:
        return None
    for applied in result.applied:
        if any(mine is write for mine in (*applied.outcome.writes, *applied.outcome.checks)):
            return applied
    return None


def duplicates(result: BatchResult, results: Sequence[int]) -> list[bool]:
    """For each applied message (in order), whether it changed nothing once committed: the
    ledger knew it, or the store found every append and set it made already there (`results`
    are the script's answers). A message that only merges or deletes (StrategyState) writes."""
    unchanged = {id(write) for write in result.call.unchanged(results)}
    if not unchanged:  # the usual case (the store had none of them): only what the ledger knew
        return [applied.outcome.duplicate for applied in result.applied]
    flags = []
    for applied in result.applied:
        stores = [w for w in applied.outcome.writes if w.op in (WriteOp.APPEND, WriteOp.SET)]
        flags.append(applied.outcome.duplicate or (bool(stores) and all(id(w) in unchanged for w in stores)))
    return flags


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


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
    call = result.call
    # The append of an event (most writes) goes straight to `ScriptCall.append_event`; the rest
    # through `plan_writes`, which finds what each write is.
    append_event = call.append_event
    applied = result.applied.append

    def encode_keeping_bytes(message: Message) -> bytes:
        # The bytes received are stored as they are when they are already canonical.
        return original if message is current.message and current.canonical else encode(message)

    original = b""
    last_seq = result.last_seq
    for index, item in enumerate(items):
        seq = item.delivery.stream_seq
        if seq > last_seq:
            last_seq = seq
        if seq <= checkpoint:
            result.skipped += 1
            continue
        if isinstance(item, Refused):
            result.refused.append(item)
            continue
        current, original = item, item.delivery.data
        planned = call.mark()
        try:
            outcome = ledger.apply(item.message)
            # Planned here, per message, so that a value that cannot be encoded is this message's problem.
            for write in outcome.writes:
                value = write.value
                if write.op is _APPEND and value.__class__ in _APPENDABLE:
                    payload = original if value is item.message and item.canonical else encode(value)  # type: ignore[arg-type]
                    append_event(write, keys, value.event_id, payload)  # type: ignore[union-attr]
                else:
                    plan_writes((write,), keys, encode_keeping_bytes, call)
            if outcome.checks:
                plan_checks(outcome.checks, keys, encode_keeping_bytes, call)
            if outcome.marks:
                plan_marks(outcome.marks, keys, call)
            if outcome.held or outcome.released:
                plan_openings(outcome.held, outcome.released, keys, encode_keeping_bytes, call)
        except EventRejected as exc:
            result.refused.append(Refused(item.delivery, item.kind.value, item.type_name, released(exc)))
            continue
        except Exception as exc:  # a bug must not stop the sidecar on every restart
            # The message is dead-lettered with the error; what it touched may be half-changed in
            # memory, so it is forgotten and read back from Redis. The items after it wait for
            # this batch's commit, so that read back includes the messages before it.
            call.rewind(planned)
            problem = f"internal error while applying it: {type(exc).__name__}: {exc}"
            refusal = EventRejected(RejectReason.INVALID_FIELD, problem)
            result.refused.append(Refused(item.delivery, item.kind.value, item.type_name, refusal))
            ledger.forget(item.message)
            result.failure = exc
            result.rest = list(items[index + 1 :])
            break
        applied(Applied(item, outcome))
        if outcome.divergence is not None:
            result.divergences.append(outcome.divergence)
    result.last_seq = last_seq
    if last_seq > checkpoint:
        call.checkpoint(keys, last_seq)
    return result


# The classes of the values an append stores (`plan.event_id_of` takes their `event_id`).
_APPEND: Final = WriteOp.APPEND
_APPENDABLE: Final = frozenset(cls for base in (OrderEvent, AccountState) for cls in (base, *_subclasses(base)))


__all__ = ["Applied", "BatchResult", "apply_batch", "duplicates", "owner_of"]
