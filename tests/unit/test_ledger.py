"""The Ledger: what storing each message means (duplicates, refusals, flips, divergence)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.unit.factories import (
    SERIALIZER,
    TRADER_ID,
    OrderEvents,
    account_state,
    currency_pair,
    position_event,
)
from tradecache.errors import EventRejected, OrderEventRefused, RejectReason
from tradecache.model import Collection, Ledger, Outcome, Write, WriteOp
from tradecache.model import ledger as ledger_module
from tradecache.model.enums import AccountType, OrderSide, OrderStatus, OrderType, PositionSide
from tradecache.model.events import OrderFilled, PositionChanged, PositionClosed, PositionOpened
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import StoredState
from tradecache.model.messages import Kind
from tradecache.model.positions import derive_opening_event_id
from tradecache.model.values import Money, Quantity

HEDGING_ID = "P-20260101-120000-001-001-1"
NEW_HEDGING_ID = "P-20260101-120001-001-001-2F"
NETTING_ID = "EUR/USD.SIM-Tester-001"


def new_ledger() -> Ledger:
    ledger = Ledger(TraderId(TRADER_ID))
    ledger.apply(currency_pair())
    return ledger


def working_order(ledger: Ledger, coid: str, side: OrderSide, quantity: str) -> OrderEvents:
    """Initialize, submit and accept a MARKET order in the ledger."""
    events = OrderEvents(coid)
    ledger.apply(events.initialized(OrderType.MARKET, side, quantity))
    ledger.apply(events.submitted())
    ledger.apply(events.accepted(f"V-{coid}"))
    return events


def market_fill(events: OrderEvents, side: OrderSide, qty: str, px: str, fee: str, position_id: str) -> OrderFilled:
    return events.filled(
        qty,
        px,
        side=side,
        order_type=OrderType.MARKET,
        commission=fee,
        position_id=position_id,
        venue_order_id=f"V-{events.client_order_id}",
    )


def snapshot(ledger: Ledger) -> dict[str, Any]:
    return {
        "orders": {key: (o.status, o.event_count, str(o.filled_qty)) for key, o in ledger.orders.items()},
        "positions": {key: (p.side, str(p.quantity), p.event_count) for key, p in ledger.positions.items()},
        "accounts": {key: a.event_count for key, a in ledger.accounts.items()},
        "pending": dict(ledger.pending_openings),
        "closed": dict(ledger.closed_summaries),
    }


def appended(outcome: Outcome) -> list[tuple[Collection, str]]:
    assert all(write.op == WriteOp.APPEND for write in outcome.writes)
    return [(write.collection, write.key) for write in outcome.writes]


# -- duplicates --------------------------------------------------------------------------------


def test_an_order_event_delivered_twice_is_a_duplicate_with_no_writes() -> None:
    ledger = new_ledger()
    events = OrderEvents()
    init = events.initialized()
    submitted = events.submitted()
    for event in (init, submitted):
        assert ledger.apply(event).writes
    for event in (init, submitted):
        outcome = ledger.apply(event)
        assert outcome.duplicate is True
        assert outcome.writes == []
        # ... and the store checks that what it holds under that id is the same (else a conflict)
        assert outcome.checks == [Write(WriteOp.APPEND, Collection.ORDERS, "O-1", event)]
    assert ledger.orders["O-1"].event_count == 2


def test_a_fill_delivered_twice_is_a_duplicate_and_the_position_counts_it_once() -> None:
    ledger = new_ledger()
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    fill = market_fill(events, OrderSide.BUY, "40", "1.10000", "0.10 USD", NETTING_ID)
    assert appended(ledger.apply(fill)) == [(Collection.ORDERS, "O-1"), (Collection.POSITIONS, NETTING_ID)]
    again = ledger.apply(fill)
    assert (again.duplicate, again.writes) == (True, [])
    assert str(ledger.positions[NETTING_ID].quantity) == "40"
    assert str(ledger.orders["O-1"].filled_qty) == "40"


def test_an_account_state_delivered_twice_is_a_duplicate() -> None:
    ledger = new_ledger()
    state = account_state(AccountType.CASH, [("USD", "100.00", "0.00")])
    first = ledger.apply(state)
    assert first.writes == [Write(WriteOp.APPEND, Collection.ACCOUNTS, "SIM-001", state)]
    second = ledger.apply(state)
    assert (second.kind, second.duplicate, second.writes) == (Kind.ACCOUNT, True, [])
    assert second.checks == first.writes
    assert ledger.accounts["SIM-001"].event_count == 1


# -- refusals ----------------------------------------------------------------------------------


def test_an_event_for_an_order_never_initialized_is_refused_as_unknown_order() -> None:
    ledger = new_ledger()
    with pytest.raises(OrderEventRefused) as caught:
        ledger.apply(OrderEvents("O-404").submitted())
    assert caught.value.reason == RejectReason.UNKNOWN_ORDER
    assert caught.value.client_order_id == "O-404"
    assert ledger.orders == {}


def test_a_message_for_another_trader_is_refused_as_trader_mismatch() -> None:
    ledger = new_ledger()
    with pytest.raises(EventRejected) as caught:
        ledger.apply(OrderEvents(trader_id="OTHER-002").initialized())
    assert caught.value.reason == RejectReason.TRADER_MISMATCH
    assert ledger.orders == {}


def test_a_refused_fill_changes_nothing_and_the_same_fill_is_applied_once_the_order_can_take_it() -> None:
    ledger = new_ledger()
    events = OrderEvents()
    ledger.apply(events.initialized(OrderType.MARKET, OrderSide.BUY, "100"))
    fill = market_fill(events, OrderSide.BUY, "100", "1.10000", "0.20 USD", NETTING_ID)
    before = snapshot(ledger)
    with pytest.raises(OrderEventRefused) as caught:
        ledger.apply(fill)  # INITIALIZED -> FILLED is not allowed
    assert caught.value.reason == RejectReason.INVALID_TRANSITION
    assert snapshot(ledger) == before
    assert NETTING_ID not in ledger.positions

    ledger.apply(events.submitted())
    outcome = ledger.apply(fill)
    assert appended(outcome) == [(Collection.ORDERS, "O-1"), (Collection.POSITIONS, NETTING_ID)]
    assert ledger.orders["O-1"].status == OrderStatus.FILLED
    assert ledger.positions[NETTING_ID].side == PositionSide.LONG


def test_an_overfill_is_refused_and_leaves_order_and_position_as_they_were() -> None:
    ledger = new_ledger()
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    ledger.apply(market_fill(events, OrderSide.BUY, "60", "1.10000", "0.10 USD", NETTING_ID))
    before = snapshot(ledger)
    with pytest.raises(OrderEventRefused):
        ledger.apply(market_fill(events, OrderSide.BUY, "60", "1.10000", "0.10 USD", NETTING_ID))
    assert snapshot(ledger) == before


def test_a_refused_flipping_fill_leaves_no_opening_half_waiting() -> None:
    ledger = new_ledger()
    buy = working_order(ledger, "O-1", OrderSide.BUY, "100000")
    ledger.apply(market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", HEDGING_ID))
    sell = OrderEvents("O-2")
    ledger.apply(sell.initialized(OrderType.MARKET, OrderSide.SELL, "150000"))  # never submitted
    before = snapshot(ledger)
    with pytest.raises(OrderEventRefused):
        ledger.apply(market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", HEDGING_ID))
    assert snapshot(ledger) == before
    # So a PositionOpened naming that order has no opening half of a never-stored fill to write.
    opened = position_event(
        PositionOpened,
        ledger.positions[HEDGING_ID],
        position_id=NEW_HEDGING_ID,
        opening_order_id=sell.client_order_id,
        entry=OrderSide.SELL,
    )
    assert ledger.apply(opened).writes == []


# -- flips -------------------------------------------------------------------------------------


def test_a_netting_flip_stores_both_halves_under_the_same_position_id() -> None:
    ledger = new_ledger()
    buy = working_order(ledger, "O-1", OrderSide.BUY, "100000")
    ledger.apply(market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", NETTING_ID))
    sell = working_order(ledger, "O-2", OrderSide.SELL, "150000")
    flipping = market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", NETTING_ID)
    outcome = ledger.apply(flipping)
    assert appended(outcome) == [
        (Collection.ORDERS, "O-2"),
        (Collection.POSITIONS, NETTING_ID),
        (Collection.POSITIONS, NETTING_ID),
    ]
    order_write, closing, opening = (write.value for write in outcome.writes)
    assert order_write is flipping  # the order keeps the unsplit fill
    assert isinstance(closing, OrderFilled)
    assert isinstance(opening, OrderFilled)
    assert (str(closing.last_qty), str(closing.commission)) == ("100000", "2.20 USD")
    assert (str(opening.last_qty), str(opening.commission)) == ("50000", "1.10 USD")
    position = ledger.positions[NETTING_ID]
    assert (position.side, str(position.quantity), str(position.realized_pnl)) == (
        PositionSide.SHORT,
        "50000",
        "-1.10 USD",
    )


def test_a_hedging_flip_holds_the_opening_half_until_position_opened_names_the_new_id() -> None:
    ledger = new_ledger()
    buy = working_order(ledger, "O-1", OrderSide.BUY, "100000")
    ledger.apply(market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", HEDGING_ID))
    sell = working_order(ledger, "O-2", OrderSide.SELL, "150000")
    flipping = market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", HEDGING_ID)

    outcome = ledger.apply(flipping)
    assert appended(outcome) == [(Collection.ORDERS, "O-2"), (Collection.POSITIONS, HEDGING_ID)]
    [held] = outcome.held  # stored with the fill, so a restart before PositionOpened keeps it
    assert (held.client_order_id, held.order_side, str(held.last_qty)) == ("O-2", OrderSide.SELL, "50000")
    closing = outcome.writes[1].value
    assert isinstance(closing, OrderFilled)
    assert str(closing.last_qty) == "100000"
    old = ledger.positions[HEDGING_ID]
    assert old.side == PositionSide.FLAT
    assert str(old.realized_pnl) == "95.60 USD"
    assert NEW_HEDGING_ID not in ledger.positions

    closed = ledger.apply(position_event(PositionClosed, old))
    assert (closed.writes, closed.divergence) == ([], None)

    opened = position_event(
        PositionOpened,
        old,
        position_id=NEW_HEDGING_ID,
        opening_order_id=sell.client_order_id,
        entry=OrderSide.SELL,
        side=PositionSide.SHORT,
        signed_qty=-50000.0,
        quantity=Quantity.from_str("50000"),
        peak_qty=Quantity.from_str("50000"),
        last_qty=Quantity.from_str("50000"),
        avg_px_open=1.101,
        realized_pnl=Money.parse("-1.10 USD"),
    )
    released = ledger.apply(opened)
    assert released.released == ["O-2"]
    assert released.kind == Kind.POSITION
    assert released.divergence is None
    assert appended(released) == [(Collection.POSITIONS, NEW_HEDGING_ID)]
    opening = released.writes[0].value
    assert isinstance(opening, OrderFilled)
    assert opening.position_id == NEW_HEDGING_ID
    assert (str(opening.last_qty), str(opening.commission)) == ("50000", "1.10 USD")
    assert opening.event_id == derive_opening_event_id(flipping.event_id)
    assert opening.trade_id == flipping.trade_id
    new = ledger.positions[NEW_HEDGING_ID]
    assert (new.side, str(new.quantity), new.event_count) == (PositionSide.SHORT, "50000", 1)
    assert ledger.pending_openings == {}
    assert ledger.positions[HEDGING_ID].side == PositionSide.FLAT


def test_a_held_opening_half_read_back_after_a_restart_is_released_by_position_opened() -> None:
    ledger = new_ledger()
    buy = working_order(ledger, "O-1", OrderSide.BUY, "100000")
    ledger.apply(market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", HEDGING_ID))
    sell = working_order(ledger, "O-2", OrderSide.SELL, "150000")
    [held] = ledger.apply(market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", HEDGING_ID)).held
    old = ledger.positions[HEDGING_ID]
    opened = position_event(
        PositionOpened, old, position_id=NEW_HEDGING_ID, opening_order_id=sell.client_order_id,
        entry=OrderSide.SELL, side=PositionSide.SHORT, signed_qty=-50000.0, quantity=Quantity.from_str("50000"),
        peak_qty=Quantity.from_str("50000"), last_qty=Quantity.from_str("50000"), avg_px_open=1.101,
        realized_pnl=Money.parse("-1.10 USD"),
    )  # fmt: skip

    restarted = new_ledger()  # memory lost; the store holds the half (written with the fill)
    request = restarted.missing([opened])
    assert request.pending_openings
    restarted.hydrate(StoredState(pending_openings=[held]))
    assert not restarted.missing([opened]).pending_openings  # read once
    released = restarted.apply(opened)
    assert released.released == ["O-2"]
    assert appended(released) == [(Collection.POSITIONS, NEW_HEDGING_ID)]
    assert released.writes[0].value == dataclasses.replace(held, position_id=opened.position_id)


def _flip(ledger: Ledger, index: int) -> tuple[OrderFilled, PositionOpened]:
    """Position `index` opened long 100,000, flipped by a SELL of 150,000: the half held, and the
    PositionOpened the node would send for it."""
    position_id = f"P-20260101-120000-001-001-{index}"
    buy = working_order(ledger, f"O-B{index}", OrderSide.BUY, "100000")
    ledger.apply(market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", position_id))
    sell = working_order(ledger, f"O-S{index}", OrderSide.SELL, "150000")
    [held] = ledger.apply(market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", position_id)).held
    opened = position_event(
        PositionOpened, ledger.positions[position_id], position_id=f"{position_id}F",
        opening_order_id=sell.client_order_id, entry=OrderSide.SELL, side=PositionSide.SHORT, signed_qty=-50000.0,
        quantity=Quantity.from_str("50000"), peak_qty=Quantity.from_str("50000"),
        last_qty=Quantity.from_str("50000"), avg_px_open=1.101, realized_pnl=Money.parse("-1.10 USD"),
    )  # fmt: skip
    assert isinstance(opened, PositionOpened)
    return held, opened


def test_held_opening_halves_past_the_bound_wait_in_the_store_and_are_read_by_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer that never sends PositionOpened cannot grow memory: past the bound the oldest
    halves are left to the store, and a PositionOpened whose half memory lacks reads that one."""
    monkeypatch.setattr(ledger_module, "MAX_PENDING_OPENINGS", 2)
    ledger = new_ledger()
    flips = [_flip(ledger, index) for index in range(3)]
    assert [str(key) for key in ledger.pending_openings] == ["O-S1", "O-S2"]  # the oldest left
    (held, opened), (_, opened_in_memory) = flips[0], flips[2]
    request = ledger.missing([opened, opened_in_memory])
    assert not request.pending_openings and request.pending_ids == {"O-S0"}  # by id, not the hash
    ledger.hydrate(StoredState(pending_by_id=[held]))
    released = ledger.apply(opened)
    assert released.released == ["O-S0"]
    assert released.writes[0].value == dataclasses.replace(held, position_id=opened.position_id)
    assert ledger.apply(opened_in_memory).released == ["O-S2"]
    ledger.reset()  # read by id after a reset too: the store was found to hold more than the bound
    assert ledger.missing([flips[1][1]]).pending_ids == {"O-S1"}


def test_a_store_holding_more_halves_than_the_bound_is_read_by_id_from_then_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_module, "MAX_PENDING_OPENINGS", 2)
    made = new_ledger()
    flips = [_flip(made, index) for index in range(3)]
    restarted = new_ledger()
    request = restarted.missing([flips[0][1]])
    assert request.pending_openings and request.pending_limit == 2  # once after a start: the hash, if small
    restarted.hydrate(StoredState(pending_openings_over=True))  # the store had more: it sent none
    assert restarted.pending_openings == {}
    assert restarted.missing([flips[0][1]]).pending_ids == {"O-S0"}
    restarted.hydrate(StoredState(pending_by_id=[flips[0][0]]))
    assert restarted.apply(flips[0][1]).released == ["O-S0"]
    # More than the bound sent all the same (a store without the limit): none taken whole either.
    other = new_ledger()
    other.hydrate(StoredState(pending_openings=[held for held, _ in flips]))
    assert other.pending_openings == {} and other.missing([flips[0][1]]).pending_ids == {"O-S0"}
    # Within the bound, the whole hash is taken and nothing is read again.
    small = new_ledger()
    small.hydrate(StoredState(pending_openings=[held for held, _ in flips[:2]]))
    request = small.missing([flips[1][1]])
    assert not request.pending_openings and not request.pending_ids  # (its new position is read)


def test_a_position_opened_for_another_order_does_not_release_a_held_opening_half() -> None:
    ledger = new_ledger()
    buy = working_order(ledger, "O-1", OrderSide.BUY, "100000")
    ledger.apply(market_fill(buy, OrderSide.BUY, "100000", "1.10000", "2.20 USD", HEDGING_ID))
    sell = working_order(ledger, "O-2", OrderSide.SELL, "150000")
    ledger.apply(market_fill(sell, OrderSide.SELL, "150000", "1.10100", "3.30 USD", HEDGING_ID))
    other = position_event(PositionOpened, ledger.positions[HEDGING_ID], position_id=NEW_HEDGING_ID)
    assert other.opening_order_id == "O-1"
    assert ledger.apply(other).writes == []
    assert list(ledger.pending_openings) == ["O-2"]


# -- position events ---------------------------------------------------------------------------


def test_a_position_changed_that_agrees_with_the_stored_fills_reports_no_divergence() -> None:
    ledger = new_ledger()
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    ledger.apply(market_fill(events, OrderSide.BUY, "60", "1.10000", "0.10 USD", NETTING_ID))
    outcome = ledger.apply(position_event(PositionChanged, ledger.positions[NETTING_ID]))
    assert (outcome.kind, outcome.writes, outcome.divergence) == (Kind.POSITION, [], None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", Quantity.from_str("50")),
        ("signed_qty", 50.0),
        ("side", PositionSide.SHORT),
        ("avg_px_open", 1.2),
        ("realized_pnl", Money.parse("-0.11 USD")),
    ],
)
def test_a_position_changed_that_disagrees_is_reported_as_divergence(field: str, value: Any) -> None:
    ledger = new_ledger()
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    ledger.apply(market_fill(events, OrderSide.BUY, "60", "1.10000", "0.10 USD", NETTING_ID))
    outcome = ledger.apply(position_event(PositionChanged, ledger.positions[NETTING_ID], **{field: value}))
    assert outcome.writes == []
    assert outcome.divergence is not None
    assert outcome.divergence.position_id == NETTING_ID
    assert outcome.divergence.event_type == "PositionChanged"
    assert len(outcome.divergence.differences) == 1
    assert outcome.divergence.differences[0].startswith(f"{field}:")


def test_a_position_event_without_stored_position_is_reported_as_divergence() -> None:
    ledger = new_ledger()
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    ledger.apply(market_fill(events, OrderSide.BUY, "60", "1.10000", "0.10 USD", NETTING_ID))
    event = position_event(PositionChanged, ledger.positions[NETTING_ID], position_id="P-UNKNOWN")
    outcome = ledger.apply(event)
    assert outcome.divergence is not None
    assert outcome.divergence.position_id == "P-UNKNOWN"


def test_a_fill_on_an_instrument_a_position_cannot_use_is_stored_without_a_position() -> None:
    """An unknown instrument type is kept whole and may lack a quote currency; the fill must not
    stop the ledger (it did, after the order had taken it): it is stored, the position skipped."""
    ledger = Ledger(TraderId(TRADER_ID))
    odd = dict(currency_pair().data)
    odd["type"] = "SyntheticThing"
    del odd["quote_currency"]
    ledger.apply(SERIALIZER.from_map(odd))
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    fill = market_fill(events, OrderSide.BUY, "100", "1.10000", "0.10 USD", NETTING_ID)
    assert appended(ledger.apply(fill)) == [(Collection.ORDERS, "O-1"), (Collection.POSITIONS, NETTING_ID)]
    assert ledger.orders["O-1"].status == OrderStatus.FILLED
    assert NETTING_ID not in ledger.positions


def test_a_ledger_that_knows_the_store_empty_asks_only_for_what_it_wrote_and_dropped() -> None:
    """`assume_empty_store` (a rebuild): a new order needs no read; one written then dropped from
    memory does (the store holds it); a fill's position stored without an in-memory position
    (no usable instrument yet) does; after `reset` everything is asked for again."""
    ledger = new_ledger()
    ledger.assume_empty_store()
    fresh = OrderEvents("O-NEW")
    assert not ledger.missing([fresh.initialized(OrderType.MARKET, OrderSide.BUY, "100")])
    events = working_order(ledger, "O-1", OrderSide.BUY, "100")
    ledger._drop(Collection.ORDERS, "O-1")  # as `evict` drops a closed or old order
    assert ledger.missing([events.canceled()]).orders == {"O-1"}
    # A position written while no position could be kept in memory (the instrument unknown).
    unknown = Ledger(TraderId(TRADER_ID))
    unknown.assume_empty_store()
    first = working_order(unknown, "O-2", OrderSide.BUY, "100")
    unknown.apply(market_fill(first, OrderSide.BUY, "100", "1.10000", "0.10 USD", NETTING_ID))
    assert NETTING_ID not in unknown.positions
    second = working_order(unknown, "O-3", OrderSide.BUY, "100")
    request = unknown.missing([market_fill(second, OrderSide.BUY, "100", "1.10000", "0.10 USD", NETTING_ID)])
    assert request.positions == {NETTING_ID}
    ledger.reset()
    assert ledger.missing([fresh.initialized(OrderType.MARKET, OrderSide.BUY, "100")]).orders == {"O-NEW"}


def test_an_order_first_seen_by_its_initialized_event_is_taken_for_new_only_when_asked() -> None:
    """`missing(assume_new=True)`: an order memory lacks whose first event in the batch is its
    OrderInitialized is not read but taken for new (the caller's call checks it); one first seen by
    any other event is read, even if its OrderInitialized follows; one memory holds, or that
    retention purged, is not taken for new. Without `assume_new`, every one is read as before."""
    ledger = new_ledger()
    new, late, held, purged = (OrderEvents(coid) for coid in ("O-NEW", "O-LATE", "O-HELD", "O-PURGED"))
    working_order(ledger, "O-HELD", OrderSide.BUY, "100")
    ledger.hydrate(StoredState(purged_orders={"O-PURGED": 1}))
    batch = [
        new.initialized(OrderType.MARKET, OrderSide.BUY, "100"),
        new.submitted(),
        late.submitted(),
        late.initialized(OrderType.MARKET, OrderSide.BUY, "100"),
        held.canceled(),
        purged.initialized(OrderType.MARKET, OrderSide.BUY, "100"),
    ]
    request = ledger.missing(batch, assume_new=True)
    assert request.assumed_orders == {"O-NEW"}
    assert request.orders == {"O-LATE", "O-PURGED"}
    only_new = ledger.missing(batch[:2], assume_new=True)
    assert only_new.assumed_orders == {"O-NEW"}
    assert not only_new  # nothing to read
    plain = ledger.missing(batch)
    assert plain.orders == {"O-NEW", "O-LATE", "O-PURGED"}
    assert not plain.assumed_orders
