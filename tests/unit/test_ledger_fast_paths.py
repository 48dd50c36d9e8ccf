"""The ledger's and the batch's fast paths give exactly what the straightforward paths give.

`Ledger.apply` finds a handler by the message's class, `Order.apply` looks transitions up by
status, positions compute in place, and `apply_batch` plans the append of an event inline. Each
is checked here two ways, on the vector scenarios, on the scenarios with the fuzzer's mutants in
between, on the benchmark's feed and on the chaos feed:

- against the straightforward path of the same code (`Ledger._apply`, the isinstance chain; the
  generic planners `plan_writes`/`plan_checks`/`plan_marks`/`plan_openings`);
- against expectations recorded with the code before the fast paths (main at 7b231cf): a digest
  per stream of every outcome, refusal, script call (the KEYS and packed ARGV sent) and the
  ledger's state at the end (not for the benchmark's feed: its ids are random).
  `python -m tests.unit.test_ledger_fast_paths` prints them anew. Recorded again once since, when
  `Y` (a position's closed cycle) gained a fourth key, the positions' seen hash: with `Y` built
  the old way, every digest of the new code was the recorded one (41 of 133 streams hold a `Y`).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from benchmarks.feed import Feed
from tests.chaos import ChaosFeed
from tests.unit.test_decoder_fuzz import SEEDS, Mutator
from tests.vectors.scenarios import SCENARIO_KINDS, Scenario, scenario_paths
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall, plan_checks, plan_marks, plan_openings, plan_writes
from tradecache.errors import EventRejected
from tradecache.ingest.batch import BatchResult, apply_batch
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
from tradecache.model.enums import OrderStatus
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger, Outcome, Write
from tradecache.model.messages import Kind, Message
from tradecache.model.order_fsm import TRANSITIONS
from tradecache.model.positions import Position
from tradecache.model.values import Currency
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.snapshots import account_snapshot, order_snapshot, position_snapshot
from tradecache.wire import Subjects

SERIALIZER = MsgPackSerializer(timestamps_as_str=True)
RECORDED = Path(__file__).parents[1] / "data" / "ledger_fast_paths.json"
BATCH = 64
MUTANT_SEEDS = (1, 2, 3)

Stream = tuple[str, list[tuple[Kind, bytes]]]


# -- the streams -------------------------------------------------------------------------------


def _scenarios() -> list[Scenario]:
    return [Scenario.load(path) for path in scenario_paths()]


def _with_mutants(scenario: Scenario, seed: int) -> list[tuple[Kind, bytes]]:
    """The scenario's messages with a mutant after every third one (on the subject of the message
    it was made from). Mutants that decode as a Currency are left out: one would register process-wide."""
    rng = random.Random(f"{scenario.name}-{seed}")
    mutator = Mutator(rng)
    intake = Intake(Subjects("tradecache", scenario.trader_id), SERIALIZER, 1 << 20)
    out: list[tuple[Kind, bytes]] = []
    own = [(SCENARIO_KINDS[kind], payload) for kind, _type, payload in scenario.messages]
    for n, (kind, payload) in enumerate(own):
        out.append((kind, payload))
        if n % 3 == 2:
            source_kind, source = rng.choice(own)
            data = mutator.mutate(source, SEEDS).data
            checked = intake.check(_delivery(Subjects("tradecache", scenario.trader_id).inbound_for(source_kind), data))
            if not (isinstance(checked, Accepted) and isinstance(checked.message, Currency)):
                out.append((source_kind, data))
    return out


def streams() -> Iterator[tuple[str, str, list[tuple[Kind, bytes]]]]:
    """(name, trader id, messages as (subject kind, payload)), always the same."""
    for scenario in _scenarios():
        own = [(SCENARIO_KINDS[kind], payload) for kind, _type, payload in scenario.messages]
        yield scenario.name, scenario.trader_id, own
        for seed in MUTANT_SEEDS:
            yield f"{scenario.name}+mutants{seed}", scenario.trader_id, _with_mutants(scenario, seed)
    yield "benchmark_feed", "BENCH-001", [(Kind(kind.rsplit(".", 1)[-1]), data) for kind, data in _feed()]
    chaos = ChaosFeed(seed=7, trader_id="CHAOS-001").messages(3000)
    yield "chaos_feed", "CHAOS-001", [(message.kind, message.payload) for message in chaos]


def _feed() -> list[tuple[str, bytes]]:
    return Feed("fast-paths").messages(3000)


def _delivery(subject: str, data: bytes, seq: int = 1) -> Delivery:
    return Delivery(subject, data, None, seq, seq, 0, 0, "")


def checked_items(trader_id: str, messages: Sequence[tuple[Kind, bytes]]) -> list[Accepted | Refused]:
    subjects = Subjects("tradecache", trader_id)
    intake = Intake(subjects, SERIALIZER, 1 << 20)
    return [
        intake.check(_delivery(subjects.inbound_for(kind), payload, seq))
        for seq, (kind, payload) in enumerate(messages, start=1)
    ]


# -- summaries to compare by ---------------------------------------------------------------------


def _value(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value if value is None else sorted(value.items())
    return SERIALIZER.serialize(value)


def _write(write: Write) -> tuple[Any, ...]:
    return (write.op.value, write.collection.value, write.key, _value(write.value))


def outcome_summary(outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome.kind.value,
        outcome.duplicate,
        [_write(write) for write in outcome.writes],
        [_write(write) for write in outcome.checks],
        [(mark.collection.value, mark.key, mark.closed, mark.event_id, mark.later) for mark in outcome.marks],
        [SERIALIZER.serialize(held) for held in outcome.held],
        list(outcome.released),
        None if outcome.divergence is None else tuple(outcome.divergence),
    )


def call_summary(result: BatchResult) -> tuple[Any, ...]:
    """What is sent (KEYS and the packed ARGV) and which write or check of which message each
    operation is (`owner_of` and `duplicates` go by identity)."""
    owners = []
    for write in result.call.operations:
        owners.append(
            None
            if write is None
            else next(
                (n, part, list(getattr(applied.outcome, part)).index(write))
                for n, applied in enumerate(result.applied)
                for part in ("writes", "checks")
                if any(mine is write for mine in getattr(applied.outcome, part))
            )
        )
    return (result.call.packed(), result.call.count, owners)


def batch_summary(result: BatchResult) -> tuple[Any, ...]:
    return (
        call_summary(result),
        [outcome_summary(applied.outcome) for applied in result.applied],
        [(refused.delivery.stream_seq, refused.error.reason.value, str(refused.error)) for refused in result.refused],
        result.last_seq,
        [tuple(divergence) for divergence in result.divergences],
    )


def state_summary(ledger: Ledger) -> tuple[Any, ...]:
    return (
        [(key, order_snapshot(order)) for key, order in sorted(ledger.orders.items())],
        [
            (key, position_snapshot(position), _position_detail(position))
            for key, position in sorted(ledger.positions.items())
        ],
        [(key, account_snapshot(account)) for key, account in sorted(ledger.accounts.items())],
        sorted(ledger.closed_summaries.items()),
        sorted((str(key), SERIALIZER.serialize(fill)) for key, fill in ledger.pending_openings.items()),
        ledger.budget.total,
    )


def _position_detail(position: Position) -> tuple[Any, ...]:
    """What a snapshot leaves out: the quantities as built (precision included) and the doubles."""
    quantities = (position.quantity, position.peak_qty, position.buy_qty, position.sell_qty)
    return (
        [(quantity.raw, quantity.precision) for quantity in quantities],
        (position.signed_qty, position.avg_px_open, position.avg_px_close, position.realized_return),
        None if position.realized_pnl is None else (position.realized_pnl.raw, position.realized_pnl.precision),
        sorted((code, money.raw, money.precision) for code, money in position.commissions_by_code.items()),
        (position.side.name, position.entry.name, position.ts_opened, position.ts_closed, position.duration_ns),
    )


def run_stream(trader_id: str, messages: Sequence[tuple[Kind, bytes]]) -> list[Any]:
    """Everything `apply_batch` gives for the stream, in batches of `BATCH`, then the ledger's state."""
    items = checked_items(trader_id, messages)
    ledger = Ledger(TraderId(trader_id))
    keys = Keys(trader_id)
    out: list[Any] = []
    for start in range(0, len(items), BATCH):
        result = apply_batch(ledger, items[start : start + BATCH], checkpoint=0, keys=keys, encode=SERIALIZER.serialize)
        assert result.failure is None, result.failure
        out.append(batch_summary(result))
    out.append(state_summary(ledger))
    return out


def digest(summary: Any) -> str:
    return hashlib.sha256(repr(summary).encode()).hexdigest()


# -- the straightforward paths -------------------------------------------------------------------


def reference_batch(ledger: Ledger, items: Sequence[Accepted | Refused], keys: Keys) -> BatchResult:
    """`apply_batch` as it was: the isinstance chain of `Ledger._apply`, every write through the
    generic planners (no item of these streams fails unexpectedly)."""
    from tradecache.ingest.batch import Applied
    from tradecache.ingest.intake import released

    result = BatchResult(ScriptCall())
    for item in items:
        result.last_seq = max(result.last_seq, item.delivery.stream_seq)
        if isinstance(item, Refused):
            result.refused.append(item)
            continue

        def encode(message: Message, item: Accepted = item) -> bytes:
            return item.delivery.data if message is item.message and item.canonical else SERIALIZER.serialize(message)

        try:
            outcome = ledger._apply(item.message)
            plan_writes(outcome.writes, keys, encode, result.call)
            plan_checks(outcome.checks, keys, encode, result.call)
            plan_marks(outcome.marks, keys, result.call)
            if outcome.held or outcome.released:
                plan_openings(outcome.held, outcome.released, keys, encode, result.call)
        except EventRejected as exc:
            result.refused.append(Refused(item.delivery, item.kind.value, item.type_name, released(exc)))
            continue
        result.applied.append(Applied(item, outcome))
        if outcome.divergence is not None:
            result.divergences.append(outcome.divergence)
    if result.last_seq > 0:
        result.call.checkpoint(keys, result.last_seq)
    return result


STREAMS = list(streams())
# The streams recorded: not the benchmark's feed, whose ids are random (uuid4) on every run.
RECORDABLE = [(name, trader_id, messages) for name, trader_id, messages in STREAMS if name != "benchmark_feed"]


@pytest.mark.parametrize(("name", "trader_id", "messages"), STREAMS, ids=[name for name, _t, _m in STREAMS])
def test_the_fast_paths_give_what_the_straightforward_paths_give(
    name: str, trader_id: str, messages: list[tuple[Kind, bytes]]
) -> None:
    items = checked_items(trader_id, messages)
    fast, slow = Ledger(TraderId(trader_id)), Ledger(TraderId(trader_id))
    keys = Keys(trader_id)
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        mine = apply_batch(fast, batch, checkpoint=0, keys=keys, encode=SERIALIZER.serialize)
        reference = reference_batch(slow, batch, keys)
        assert batch_summary(mine) == batch_summary(reference), f"{name}: batch from {start}"
    assert state_summary(fast) == state_summary(slow)


def test_the_streams_have_fills_flips_duplicates_refusals_and_marks() -> None:
    """The streams reach the paths in question (so that equal means something)."""
    seen: set[str] = set()
    for _name, trader_id, messages in STREAMS:
        for batch in run_stream(trader_id, messages)[:-1]:
            _call, outcomes, refused, _last, _divergences = batch
            seen |= {"refused"} if refused else set()
            for kind, duplicate, writes, checks, marks, held, released, _divergence in outcomes:
                seen |= {"duplicate"} if duplicate and checks else set()
                seen |= {"position fill"} if any(write[1] == "positions" for write in writes) else set()
                seen |= {"flip"} if sum(write[1] == "positions" for write in writes) > 1 else set()
                seen |= {"mark"} if marks else set()
                seen |= {"held"} if held else set()
                seen |= {"released"} if released else set()
                seen |= {kind}
    # No stream holds a flip waiting for the node's PositionOpened (`held`, `released`): those
    # outcomes are test_ledger.py's (HEDGING_ID); they take the generic planner in `apply_batch`.
    assert seen >= {"refused", "duplicate", "position fill", "flip", "mark", *Kind}


def test_the_recorded_expectations_hold() -> None:
    recorded = json.loads(RECORDED.read_text())
    assert set(recorded) == {name for name, _t, _m in RECORDABLE}
    different = [
        name for name, trader_id, messages in RECORDABLE if digest(run_stream(trader_id, messages)) != recorded[name]
    ]
    assert different == []


def test_the_transition_rows_are_the_transition_table() -> None:
    from tradecache.model.order_fsm import TRANSITIONS_BY_STATUS  # here: the recording runs on code without it

    rows = {
        (current, requested): result
        for current in OrderStatus
        for requested, result in TRANSITIONS_BY_STATUS[current].items()
    }
    assert rows == TRANSITIONS
    assert all(
        not TRANSITIONS_BY_STATUS[value] for value in range(len(TRANSITIONS_BY_STATUS)) if value not in set(OrderStatus)
    )


def record() -> dict[str, str]:
    return {name: digest(run_stream(trader_id, messages)) for name, trader_id, messages in RECORDABLE}


if __name__ == "__main__":  # the expectations, printed as JSON (run with the code to record from first on sys.path)
    json.dump(record(), sys.stdout, indent=1, sort_keys=True)
    print()
