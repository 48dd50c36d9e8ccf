"""The pure pieces that keep ingest going (issue 16): decode limits, field caps, dead-letter
letters, the stall and stuck-ack watches, the memory budget, the backoff, the script call's
fence and rewind, and the ledger after a restart between a flip and its PositionClosed."""

from __future__ import annotations

import hashlib
import tracemalloc
from typing import Any

import msgpack
import pytest

from tests.unit.factories import SERIALIZER, TRADER_ID, OrderEvents, currency_pair, position_event
from tests.unit.test_ledger import NETTING_ID, market_fill, new_ledger, working_order
from tradecache.backoff import Backoff
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall
from tradecache.errors import EventRejected, PayloadError, RejectReason
from tradecache.ingest.deadletter import Form, build_letter, header_bytes, sanitized
from tradecache.ingest.intake import Accepted, Delivery, Intake, Refused
from tradecache.ingest.pipeline import chunks_by_size
from tradecache.ingest.watch import ConsumerView, StallWatch, StuckAcks
from tradecache.logs import LineBudget
from tradecache.model.budget import MemoryBudget
from tradecache.model.enums import OrderSide
from tradecache.model.events import OrderFilled, PositionClosed
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger, StoredState, Write, WriteOp
from tradecache.model.positions import Position
from tradecache.serialization.limits import DecodeLimits, check_fields, depth_of, unpack_limited
from tradecache.wire import Subjects

LIMITS = DecodeLimits.derive(max_field_bytes=1024, max_state_fields=1000, max_state_value_bytes=2048)
SUBJECTS = Subjects("tradecache", TRADER_ID)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def refused_by_limits(data: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        unpack_limited(data, LIMITS)
    return caught.value


# -- decode limits ----------------------------------------------------------------------------


def test_a_megabyte_of_empty_maps_is_refused_before_it_expands() -> None:
    bomb = b"\xdd" + (1_000_000).to_bytes(4, "big") + b"\x80" * 1_000_000
    tracemalloc.start()
    try:
        error = refused_by_limits(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.reason == RejectReason.LIMIT_EXCEEDED
    assert peak < 2_000_000  # refused at the array header: nothing built (80 MB when unpacked)


def test_many_small_containers_stop_at_the_element_limit() -> None:
    nested = pack({"type": "x", "junk": [[{}] for _ in range(900)]})  # 1,800 containers, small arrays
    error = refused_by_limits(nested)
    assert error.reason == RejectReason.LIMIT_EXCEEDED and "more than" in error.problem


def test_nesting_deeper_than_the_schemas_allow_is_refused() -> None:
    deep: Any = {}
    for _ in range(LIMITS.max_depth + 1):
        deep = {"a": deep}
    error = refused_by_limits(pack({"type": "x", "info": deep}))
    assert error.reason == RejectReason.LIMIT_EXCEEDED and "nesting" in error.problem
    assert unpack_limited(pack({"type": "x", "info": {"a": {"b": [1]}}}), LIMITS)["info"] == {"a": {"b": [1]}}
    assert depth_of({"a": [{"b": []}]}) == 4 and depth_of(3) == 0


@pytest.mark.parametrize(
    ("value", "words"),
    [("x" * 2000, "a string"), (b"x" * 4000, "a bin"), (msgpack.ExtType(1, b"abc"), "an extension type")],
)
def test_strings_bins_and_extension_types_over_their_limit_are_refused(value: Any, words: str) -> None:
    error = refused_by_limits(pack({"type": "x", "v": value}))
    assert error.reason == RejectReason.LIMIT_EXCEEDED and words in error.problem


def test_a_hundred_thousand_field_state_fits_the_default_limits() -> None:
    state = {f"f{i:06d}": b"v" for i in range(100_000)}
    data = pack({"type": "StrategyState", "trader_id": TRADER_ID, "strategy_id": "S-1", "state": state,
                 "ts_event": "1"})  # fmt: skip
    limits = DecodeLimits.derive()
    decoded = unpack_limited(data, limits)
    check_fields(decoded, len(data), None, limits)
    assert len(decoded["state"]) == 100_000


def test_field_caps_name_the_field() -> None:
    def check(data: dict[str, Any], known: frozenset[str] | None = frozenset({"type", "info"})) -> None:
        check_fields(data, len(pack(data)), known, LIMITS)

    check({"type": "OrderFilled", "info": {"k": "v" * 500}})  # under the cap
    with pytest.raises(PayloadError) as caught:
        check({"type": "OrderFilled", "info": {"k": "v" * 1500}})
    assert caught.value.reason == RejectReason.FIELD_TOO_LARGE and caught.value.field == "info"
    with pytest.raises(PayloadError) as caught:  # a key the schema does not know is stored as received
        check({"type": "OrderFilled", "params": ["x" * 700, "y" * 700]})
    assert caught.value.field == "params"
    state = {"type": "StrategyState", "state": {f"f{i}": b"" for i in range(1001)}}
    with pytest.raises(PayloadError, match="max_state_fields"):
        check(state)
    with pytest.raises(PayloadError) as caught:
        check({"type": "StrategyState", "state": {"big": b"x" * 3000}})
    assert caught.value.field == "state.big"


def test_intake_refuses_with_the_new_reasons_and_keeps_no_traceback() -> None:
    intake = Intake(SUBJECTS, SERIALIZER, max_payload_bytes=1 << 20, limits=LIMITS)
    subject = SUBJECTS.inbound_for_name("order")
    fill = SERIALIZER.to_map(OrderEvents("O-1").filled(info={f"note{n}": "x" * 100 for n in range(20)}))
    item = intake.check(Delivery(subject, pack(fill), None, 1, 1, 0, 0, ""))
    assert isinstance(item, Refused) and item.error.reason == RejectReason.FIELD_TOO_LARGE
    assert item.type_name == "OrderFilled"
    assert item.error.__traceback__ is None and item.error.__context__ is None
    bomb = b"\xdc" + (50_000).to_bytes(2, "big") + b"\x80" * 50_000
    item = intake.check(Delivery(subject, bomb, None, 2, 2, 0, 0, ""))
    assert isinstance(item, Refused) and item.error.reason == RejectReason.LIMIT_EXCEEDED
    assert isinstance(intake.check(Delivery(subject, SERIALIZER.serialize(OrderEvents("O-2").initialized()),
                                            None, 3, 3, 0, 0, "")), Accepted)  # fmt: skip


# -- dead letters ---------------------------------------------------------------------------


def refusal(data: bytes, headers: dict[str, str] | None = None) -> Refused:
    delivery = Delivery(f"tradecache.in.{TRADER_ID}.order", data, headers, 42, 7, 0, 0, "")
    return Refused(delivery, "order", "OrderFilled", EventRejected(RejectReason.INVALID_FIELD, "bad\r\nthing"))


def test_headers_nats_cannot_carry_are_dropped_and_those_jetstream_acts_on_renamed() -> None:
    kept, dropped = sanitized({"a/b": "1", "Producer": "x\r\ny", "Nats-Expected-Stream": "OTHER", "Nats-Msg-Id": "m"})
    assert dropped == ["a%2Fb"]
    assert kept == {
        "Producer": "x  y",
        "Tradecache-Original-Expected-Stream": "OTHER",
        "Tradecache-Original-Msg-Id": "m",
    }
    letter = build_letter(refusal(b"body", {"a/b": "1", "Nats-Rollup": "all"}), "TRADECACHE", 1 << 20)
    assert letter.form == Form.FULL and letter.body == b"body"
    assert letter.headers["Tradecache-Dropped-Headers"] == "a%2Fb"
    assert letter.headers["Nats-Msg-Id"] == "tradecache-dead-TRADECACHE-42"
    assert "Nats-Rollup" not in letter.headers and letter.headers["Tradecache-Original-Rollup"] == "all"
    assert all("\n" not in value and "\r" not in value for value in letter.headers.values())


def test_a_letter_that_would_not_fit_is_reduced_to_fit_with_size_and_digest() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    letter = build_letter(refusal(body, {"Producer": "p"}), "TRADECACHE", len(body))
    assert letter.form == Form.REDUCED
    assert header_bytes(letter.headers) + len(letter.body) <= len(body)
    assert body.startswith(letter.body) and 0 < len(letter.body) < len(body)
    assert letter.headers["Tradecache-Original-Size"] == str(len(body))
    assert letter.headers["Tradecache-Digest"] == "sha256=" + hashlib.sha256(body).hexdigest()
    assert letter.headers["Tradecache-Stream"] == "TRADECACHE" and letter.headers["Tradecache-Stream-Seq"] == "42"
    smallest = build_letter(refusal(body), "TRADECACHE", len(body), Form.HEADERS_ONLY)
    assert smallest.body == b"" and smallest.form == Form.HEADERS_ONLY


# -- watches --------------------------------------------------------------------------------


def view(undelivered: int = 0, ack_pending: int = 0, delivered: int = 10, floor: int = 10) -> ConsumerView:
    return ConsumerView(undelivered, ack_pending, 0, delivered, floor)


def test_a_stall_is_work_waiting_with_no_commit_for_the_threshold() -> None:
    watch = StallWatch(30.0)
    watch.observed(view(), 0.0)
    assert not watch.stalled(1000.0)  # idle: nothing waits
    watch.observed(view(undelivered=5), 1000.0)
    assert not watch.stalled(1029.0)
    assert watch.stalled(1030.0)  # waiting 30 s, nothing committed
    watch.committed(1031.0)
    assert not watch.stalled(1060.0) and watch.stalled(1061.0)
    watch.observed(view(), 1062.0)
    assert not watch.stalled(2000.0)
    watch.in_hand(True, 2000.0)  # deliveries in hand count too, whatever the consumer says
    assert watch.stalled(2030.0)
    watch.in_hand(False, 2031.0)
    assert not watch.stalled(2031.0)


def test_stuck_acks_are_below_the_floor_and_confirmed_twice() -> None:
    assert view(ack_pending=5, delivered=10, floor=10).stuck == 5
    assert view(ack_pending=5, delivered=15, floor=10).stuck == 0  # above the floor: in flight
    assert not view(ack_pending=5, delivered=10, floor=10).waiting  # and not work for the stall watch
    stuck = StuckAcks(confirm_after=5.0)
    assert stuck.observed(view(ack_pending=5), 0.0) == 0
    assert stuck.observed(view(ack_pending=5), 4.0) == 0
    assert stuck.observed(view(ack_pending=5), 5.0) == 5
    assert stuck.observed(view(), 6.0) == 0 and stuck.observed(view(ack_pending=5), 7.0) == 0


# -- memory ---------------------------------------------------------------------------------


def test_the_budget_evicts_the_least_recently_used_first() -> None:
    budget = MemoryBudget(limit=100)
    for name in "abc":
        budget.set(("orders", name), 40)
    assert budget.evict() == []  # all three used by the batch just committed
    budget.touch(("orders", "a"))
    assert budget.evict() == []  # ... or by the one before it (applied ahead of its commit)
    budget.touch(("orders", "a"))
    assert budget.evict() == [("orders", "b")]
    assert budget.total == 80 and ("orders", "a") in budget


def test_what_the_last_two_batches_used_stays_even_when_it_alone_passes_the_budget() -> None:
    # An entity larger than the budget was dropped after each batch and read back, its whole
    # history, by the next one: ingest of an order filled 100,000 times fell to 2,800 events/s.
    budget = MemoryBudget(limit=100)
    budget.set(("orders", "small"), 10)
    assert budget.evict() == [] and budget.evict() == []
    budget.set(("orders", "huge"), 500)
    assert budget.evict() == [("orders", "small")]  # the rest goes, oldest first
    assert budget.evict() == [] and budget.total == 500  # a batch without it, applied ahead
    budget.add(("orders", "huge"), 100)
    assert budget.evict() == [] and budget.total == 600
    budget.set(("orders", "next"), 10)  # two batches without it: now it goes
    assert budget.evict() == []
    assert budget.evict() == [("orders", "huge")] and budget.total == 10


def test_a_ledger_keeps_an_order_larger_than_its_budget_while_batches_use_it() -> None:
    ledger = Ledger(TraderId(TRADER_ID), memory_budget=20_000)
    events = working_order(ledger, "O-BIG", OrderSide.BUY, "1000")
    for n in range(100):  # 100 partial fills: ~40 KB estimated, twice the budget
        ledger.apply(market_fill(events, OrderSide.BUY, "1", "1.10000", "0.10 USD", NETTING_ID))
        ledger.evict(open_orders_limit=1000)
        assert "O-BIG" in ledger.orders, n
    assert ledger.budget.total > 20_000
    next_fill = market_fill(events, OrderSide.BUY, "1", "1.10000", "0.10 USD", NETTING_ID)
    assert ledger.missing([next_fill]).orders == set()  # nothing to read back
    working_order(ledger, "O-OTHER", OrderSide.BUY, "1")
    ledger.evict(open_orders_limit=1000)  # a batch without it: kept (the one before used it)
    assert "O-BIG" in ledger.orders
    ledger.evict(open_orders_limit=1000)  # two without it: the budget is enforced again
    assert "O-BIG" not in ledger.orders and ledger.budget.total <= 20_000


def test_instruments_beyond_the_budget_are_evicted_and_read_back_when_a_message_needs_them() -> None:
    ledger = Ledger(TraderId(TRADER_ID), memory_budget=200_000)
    for n in range(1000):
        ledger.apply(currency_pair(f"C{n:04d}/USD.SIM"))
        ledger.evict(open_orders_limit=10)
    assert 10 < len(ledger.instruments) < 200 and ledger.budget.total <= 200_000
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    fill = market_fill(events, OrderSide.BUY, "100", "1.10000", "0.10 USD", NETTING_ID)
    request = ledger.missing([fill])
    assert request.instruments == {fill.instrument_id.value}  # evicted: asked for again
    ledger.hydrate(StoredState(instruments={fill.instrument_id.value: currency_pair(fill.instrument_id.value)}))
    ledger.apply(fill)
    assert NETTING_ID in ledger.positions


def test_a_position_is_charged_for_the_fills_of_its_current_cycle_only() -> None:
    # A NETTING position's stored list keeps every cycle, but memory holds the fills since it
    # last went FLAT: charging every cycle evicted busy positions and re-read them per batch.
    ledger = new_ledger()
    stored: list[OrderFilled] = []

    def fill(coid: str, side: OrderSide, px: str) -> None:
        order = working_order(ledger, coid, side, "100000")
        outcome = ledger.apply(market_fill(order, side, "100000", px, "2.20 USD", NETTING_ID))
        stored.extend(w.value for w in outcome.writes if w.collection == Collection.POSITIONS)  # type: ignore[misc]

    for cycle in range(30):
        fill(f"B-{cycle}", OrderSide.BUY, "1.10000")
        fill(f"S-{cycle}", OrderSide.SELL, "1.10100")
    one_cycle = ledger.budget.cost(("positions", NETTING_ID))
    fill("B-last", OrderSide.BUY, "1.10000")
    assert len(stored) == 61 and ledger.positions[NETTING_ID].event_count == 1
    reopened = ledger.budget.cost(("positions", NETTING_ID))
    assert reopened < one_cycle  # one fill's worth, not 61 fills'

    restarted = new_ledger()
    pair = currency_pair()
    restarted.hydrate(StoredState(positions={NETTING_ID: stored}, instruments={pair.id.value: pair}))
    assert restarted.positions[NETTING_ID].event_count == 1
    assert restarted.budget.cost(("positions", NETTING_ID)) == reopened


def test_a_position_closed_after_a_restart_between_the_flip_and_it_is_no_divergence() -> None:
    ledger = new_ledger()
    buy = working_order(ledger, "O-1", OrderSide.BUY, "100000")
    opening = market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", NETTING_ID)
    ledger.apply(opening)
    sell = working_order(ledger, "O-2", OrderSide.SELL, "150000")
    outcome = ledger.apply(market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", NETTING_ID))
    closing_half, opening_half = (w.value for w in outcome.writes if w.collection == Collection.POSITIONS)
    assert isinstance(closing_half, OrderFilled) and isinstance(opening_half, OrderFilled)
    flat = Position(currency_pair(), opening)
    flat.apply(closing_half)
    closed = position_event(PositionClosed, flat)  # what the node publishes right after the flip
    assert ledger.apply(closed).divergence is None  # without a restart
    # Killed after committing the flip, before the PositionClosed: a new ledger reads the fills back.
    restarted = new_ledger()
    restarted.hydrate(StoredState(positions={NETTING_ID: [opening, closing_half, opening_half]}))
    assert restarted.positions[NETTING_ID].is_open  # the opening half reopened it
    assert restarted.apply(closed).divergence is None


# -- small helpers --------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert backoff.failing
    backoff.reset()
    assert not backoff.failing and backoff.next() == 0.05
    with pytest.raises(ValueError):
        Backoff(1.0, 0.5)


def test_a_script_call_rewinds_a_message_that_failed_half_way_and_takes_a_fence() -> None:
    keys = Keys(TRADER_ID)
    call = ScriptCall()
    call.set_hash(Write(WriteOp.MERGE, Collection.STRATEGIES, "S-1", {}), keys, {"a": b"1"}, replace=False)
    mark = call.mark()
    before = (list(call.keys), list(call.args), list(call.operations))
    call.set_hash(Write(WriteOp.MERGE, Collection.STRATEGIES, "S-2", {}), keys, {"b": b"2", "c": b"3"}, replace=False)
    call.rewind(mark)
    assert (call.keys, call.args, call.operations) == before
    call.fence(keys, "token")
    assert call.count == 2 and call.writes == 1 and call.keys[-1] == keys.lease()


def test_chunks_keep_order_and_stay_within_their_bytes() -> None:
    deliveries = [Delivery("s", b"x" * size, None, seq, seq, 0, 0, "") for seq, size in enumerate([5, 5, 20, 1, 1], 1)]
    chunks = list(chunks_by_size(deliveries, 10))
    assert [[d.stream_seq for d in chunk] for chunk in chunks] == [[1, 2], [3], [4, 5]]


# -- logs under a flood ---------------------------------------------------------------------------


def test_a_line_budget_logs_so_many_lines_a_window_then_tells_how_many_it_held_back() -> None:
    lines = LineBudget(lines=3, window=10.0)
    assert [lines.allow(100.0 + n, "malformed") for n in range(3)] == [True, True, True]
    assert not lines.allow(103.0, "malformed") and not lines.allow(104.0, "unknown_type")
    assert not lines.allow(105.0, "malformed")
    assert lines.due(109.9) == {}  # the window is not over
    assert lines.due(110.0) == {"malformed": 2, "unknown_type": 1}
    assert lines.due(110.0) == {}  # told once
    assert lines.allow(110.0, "malformed")  # a new window: lines again
    assert lines.due(200.0) == {}  # nothing held back in it
