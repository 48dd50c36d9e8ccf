"""The order state machine (wire-format.md 6.2-6.5), driven through real orders and real events.

The transition table below is copied from wire-format.md 6.3, independently of
`tradecache.model.order_fsm.TRANSITIONS`; the first test checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.factories import VENUE_ORDER_ID, OrderEvents
from tradecache.errors import OrderEventRefused, RejectReason
from tradecache.model.enums import OrderSide, OrderStatus, OrderType, TimeInForce, TriggerType
from tradecache.model.events import OrderEvent
from tradecache.model.order_fsm import TRANSITIONS
from tradecache.model.orders import Order, replay_order

S = OrderStatus

# wire-format.md 6.3, statuses abbreviated: INI=INITIALIZED DEN=DENIED EMU=EMULATED REL=RELEASED
# SUB=SUBMITTED ACC=ACCEPTED REJ=REJECTED CAN=CANCELED EXP=EXPIRED TRG=TRIGGERED PU=PENDING_UPDATE
# PC=PENDING_CANCEL PF=PARTIALLY_FILLED FIL=FILLED; rows: from; columns: requested, in the order of
# REQUESTABLE (DEN EMU REL SUB ACC REJ CAN EXP TRG PU PC PF FIL); x: refused.
_SPEC_TABLE = """
INI | DEN | EMU | REL | SUB | ACC | REJ | CAN | EXP | TRG | x   | x   | x   | x
DEN | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x
EMU | x   | x   | REL | x   | x   | x   | CAN | EXP | x   | x   | x   | x   | x
REL | DEN | x   | x   | SUB | x   | x   | CAN | x   | x   | x   | x   | x   | x
SUB | x   | x   | x   | x   | ACC | REJ | CAN | x   | x   | PU  | PC  | PF  | FIL
ACC | x   | x   | x   | x   | x   | REJ | CAN | EXP | TRG | PU  | PC  | PF  | FIL
REJ | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x
CAN | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | PF  | FIL
EXP | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x
TRG | x   | x   | x   | x   | x   | REJ | CAN | EXP | x   | PU  | PC  | PF  | FIL
PU  | x   | x   | x   | PU  | ACC | REJ | CAN | EXP | TRG | PU  | PC  | PF  | FIL
PC  | x   | x   | x   | x   | ACC | REJ | CAN | EXP | x   | x   | PC  | PF  | FIL
PF  | x   | x   | x   | x   | x   | x   | CAN | EXP | x   | PU  | PC  | PF  | FIL
FIL | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x   | x
"""
_ABBREVIATIONS = {
    "INI": S.INITIALIZED,
    "DEN": S.DENIED,
    "EMU": S.EMULATED,
    "REL": S.RELEASED,
    "SUB": S.SUBMITTED,
    "ACC": S.ACCEPTED,
    "REJ": S.REJECTED,
    "CAN": S.CANCELED,
    "EXP": S.EXPIRED,
    "TRG": S.TRIGGERED,
    "PU": S.PENDING_UPDATE,
    "PC": S.PENDING_CANCEL,
    "PF": S.PARTIALLY_FILLED,
    "FIL": S.FILLED,
}
REQUESTABLE = [
    S.DENIED,
    S.EMULATED,
    S.RELEASED,
    S.SUBMITTED,
    S.ACCEPTED,
    S.REJECTED,
    S.CANCELED,
    S.EXPIRED,
    S.TRIGGERED,
    S.PENDING_UPDATE,
    S.PENDING_CANCEL,
    S.PARTIALLY_FILLED,
    S.FILLED,
]


def _parse_spec_table() -> dict[tuple[OrderStatus, OrderStatus], OrderStatus | None]:
    table: dict[tuple[OrderStatus, OrderStatus], OrderStatus | None] = {}
    for line in _SPEC_TABLE.strip().splitlines():
        current, *cells = (cell.strip() for cell in line.split("|"))
        assert len(cells) == len(REQUESTABLE)
        for requested, cell in zip(REQUESTABLE, cells, strict=True):
            table[(_ABBREVIATIONS[current], requested)] = None if cell == "x" else _ABBREVIATIONS[cell]
    return table


SPEC = _parse_spec_table()
ALLOWED = sorted((pair, result) for pair, result in SPEC.items() if result is not None)
REFUSED = sorted(pair for pair, result in SPEC.items() if result is None)


# -- driving a STOP_LIMIT order (quantity 100) into every status --------------------------------

Step = Callable[[OrderEvents], OrderEvent]

_PATHS: dict[OrderStatus, list[Step]] = {
    S.INITIALIZED: [],
    S.DENIED: [lambda e: e.denied()],
    S.EMULATED: [lambda e: e.emulated()],
    S.RELEASED: [lambda e: e.emulated(), lambda e: e.released()],
    S.SUBMITTED: [lambda e: e.submitted()],
    S.ACCEPTED: [lambda e: e.submitted(), lambda e: e.accepted()],
    S.REJECTED: [lambda e: e.submitted(), lambda e: e.rejected()],
    S.CANCELED: [lambda e: e.submitted(), lambda e: e.accepted(), lambda e: e.canceled()],
    S.EXPIRED: [lambda e: e.submitted(), lambda e: e.accepted(), lambda e: e.expired()],
    S.TRIGGERED: [lambda e: e.submitted(), lambda e: e.accepted(), lambda e: e.triggered()],
    S.PENDING_UPDATE: [lambda e: e.submitted(), lambda e: e.accepted(), lambda e: e.pending_update()],
    S.PENDING_CANCEL: [lambda e: e.submitted(), lambda e: e.accepted(), lambda e: e.pending_cancel()],
    S.PARTIALLY_FILLED: [lambda e: e.submitted(), lambda e: e.accepted(), lambda e: e.filled("50")],
    # A FILLED order whose quantity is then raised to 200 by an OrderUpdated (allowed in every
    # status): it can then be asked for both PARTIALLY_FILLED and FILLED.
    S.FILLED: [
        lambda e: e.submitted(),
        lambda e: e.accepted(),
        lambda e: e.filled("100"),
        lambda e: e.updated("200"),
    ],
}


def order_in(status: OrderStatus) -> tuple[Order, OrderEvents]:
    events = OrderEvents()
    emulated = status in (S.EMULATED, S.RELEASED)
    trigger = TriggerType.DEFAULT if emulated else TriggerType.NO_TRIGGER
    order = Order(events.initialized(OrderType.STOP_LIMIT, emulation_trigger=trigger))
    for step in _PATHS[status]:
        order.apply(step(events))
    assert order.status == status
    return order, events


def request(order: Order, events: OrderEvents, requested: OrderStatus) -> OrderEvent:
    """The event that asks `order` for `requested`."""
    makers: dict[OrderStatus, Callable[[], OrderEvent]] = {
        S.DENIED: events.denied,
        S.EMULATED: events.emulated,
        S.RELEASED: events.released,
        S.SUBMITTED: events.submitted,
        S.ACCEPTED: events.accepted,
        S.REJECTED: events.rejected,
        S.CANCELED: events.canceled,
        S.EXPIRED: events.expired,
        S.TRIGGERED: events.triggered,
        S.PENDING_UPDATE: events.pending_update,
        S.PENDING_CANCEL: events.pending_cancel,
        S.PARTIALLY_FILLED: lambda: events.filled("10"),
        S.FILLED: lambda: events.filled(str(order.leaves_qty)),
    }
    return makers[requested]()


def state_of(order: Order) -> dict[str, Any]:
    return {
        "status": order.status,
        "previous_status": order.previous_status,
        "event_count": order.event_count,
        "filled_qty": str(order.filled_qty),
        "leaves_qty": str(order.leaves_qty),
        "quantity": str(order.quantity),
        "venue_order_id": order.venue_order_id,
        "position_id": order.position_id,
        "trade_ids": list(order.trade_ids),
        "avg_px": order.avg_px,
        "ts_last": order.ts_last,
        "ts_closed": order.ts_closed,
        "emulation_trigger": order.emulation_trigger,
        "is_triggered": order.is_triggered,
    }


def assert_refused(order: Order, event: OrderEvent, reason: RejectReason | None = None) -> OrderEventRefused:
    before = state_of(order)
    with pytest.raises(OrderEventRefused) as caught:
        order.apply(event)
    if reason is not None:
        assert caught.value.reason == reason
    assert state_of(order) == before
    return caught.value


def _pair_id(pair: tuple[OrderStatus, OrderStatus]) -> str:
    return f"{pair[0].name}->{pair[1].name}"


# -- the table ---------------------------------------------------------------------------------


def test_the_transition_table_is_the_one_of_the_spec() -> None:
    assert {pair: result for pair, result in SPEC.items() if result is not None} == TRANSITIONS


def test_the_spec_table_covers_14_statuses_by_13_requests() -> None:
    assert len(SPEC) == 14 * 13
    assert len(ALLOWED) + len(REFUSED) == 182


@pytest.mark.parametrize("pair", REFUSED, ids=[_pair_id(p) for p in REFUSED])
def test_a_refused_transition_raises_invalid_transition_and_leaves_the_order_unchanged(
    pair: tuple[OrderStatus, OrderStatus],
) -> None:
    current, requested = pair
    order, events = order_in(current)
    refused = assert_refused(order, request(order, events, requested), RejectReason.INVALID_TRANSITION)
    assert refused.client_order_id == "O-1"


@pytest.mark.parametrize(("pair", "result"), ALLOWED, ids=[_pair_id(p) for p, _ in ALLOWED])
def test_an_allowed_transition_gives_the_status_of_the_table(
    pair: tuple[OrderStatus, OrderStatus], result: OrderStatus
) -> None:
    current, requested = pair
    order, events = order_in(current)
    count = order.event_count
    event = request(order, events, requested)
    order.apply(event)
    assert order.status == result
    assert order.event_count == count + 1
    assert order.last_event is event
    assert order.ts_last == event.ts_event


# -- previous_status ---------------------------------------------------------------------------

_STEP = {
    "Submitted": lambda e: e.submitted(),
    "Accepted": lambda e: e.accepted(),
    "Triggered": lambda e: e.triggered(),
    "PartialFill": lambda e: e.filled("50"),
    "PendingUpdate": lambda e: e.pending_update(),
    "PendingCancel": lambda e: e.pending_cancel(),
    "ModifyRejected": lambda e: e.modify_rejected(),
    "CancelRejected": lambda e: e.cancel_rejected(),
    "Updated": lambda e: e.updated("100"),
}
REFUSED_RESULT = "refused"
PREVIOUS_STATUS_PATHS = [
    (["Submitted", "Accepted", "PendingUpdate", "ModifyRejected"], S.ACCEPTED),
    (["Submitted", "Accepted", "PendingUpdate", "Updated"], S.ACCEPTED),
    (["Submitted", "Accepted", "PartialFill", "PendingCancel", "CancelRejected"], S.PARTIALLY_FILLED),
    (["Submitted", "Accepted", "Triggered", "PendingUpdate", "ModifyRejected"], S.TRIGGERED),
    (["Submitted", "Accepted", "Triggered", "PendingUpdate", "Updated"], S.TRIGGERED),
    (["Submitted", "Accepted", "PendingUpdate", "PendingCancel", "CancelRejected"], S.ACCEPTED),
    (["Submitted", "Accepted", "PendingUpdate", "PendingUpdate", "ModifyRejected"], S.ACCEPTED),
    (["Submitted", "Accepted", "PendingUpdate", "CancelRejected"], S.PENDING_UPDATE),
    (["Submitted", "Accepted", "PendingCancel", "ModifyRejected"], S.PENDING_CANCEL),
    (["Submitted", "Accepted", "PendingCancel", "Updated"], S.PENDING_CANCEL),
    (["Submitted", "PendingUpdate", "ModifyRejected"], S.PENDING_UPDATE),
    (["Submitted", "PendingUpdate", "Updated"], S.PENDING_UPDATE),
    (["Submitted", "PendingCancel", "CancelRejected"], REFUSED_RESULT),
    (["Submitted", "Accepted", "Triggered", "PendingCancel", "CancelRejected"], REFUSED_RESULT),
]


@pytest.mark.parametrize(
    ("path", "expected"), PREVIOUS_STATUS_PATHS, ids=["-".join(p) for p, _ in PREVIOUS_STATUS_PATHS]
)
def test_reject_and_update_events_return_to_the_status_held_before_the_pending_states(
    path: list[str], expected: OrderStatus | str
) -> None:
    events = OrderEvents()
    order = Order(events.initialized(OrderType.STOP_LIMIT))
    *before, last = path
    for name in before:
        order.apply(_STEP[name](events))
    if expected == REFUSED_RESULT:
        assert_refused(order, _STEP[last](events), RejectReason.INVALID_TRANSITION)
    else:
        order.apply(_STEP[last](events))
        assert order.status == expected
        assert order.event_count == len(path) + 1


@pytest.mark.parametrize("event", ["ModifyRejected", "CancelRejected", "Updated"])
def test_reject_and_update_events_are_counted_even_on_a_filled_order(event: str) -> None:
    order, events = order_in(S.FILLED)
    count = order.event_count
    order.apply(_STEP[event](events))
    assert order.status == S.FILLED
    assert order.event_count == count + 1


# -- checks made before any change (6.2) --------------------------------------------------------


@pytest.mark.parametrize(
    "order_type", [OrderType.STOP_MARKET, OrderType.MARKET_IF_TOUCHED, OrderType.LIMIT, OrderType.MARKET]
)
def test_order_triggered_is_refused_for_types_without_a_triggered_status(order_type: OrderType) -> None:
    events = OrderEvents()
    order = Order(events.initialized(order_type))
    order.apply(events.submitted())
    order.apply(events.accepted())
    assert_refused(order, events.triggered(), RejectReason.INVALID_TRANSITION)
    assert order.is_triggered is False


@pytest.mark.parametrize(
    "order_type", [OrderType.STOP_LIMIT, OrderType.LIMIT_IF_TOUCHED, OrderType.TRAILING_STOP_LIMIT]
)
def test_order_triggered_is_applied_to_stop_limit_limit_if_touched_and_trailing_stop_limit(
    order_type: OrderType,
) -> None:
    events = OrderEvents()
    order = Order(events.initialized(order_type))
    order.apply(events.submitted())
    order.apply(events.accepted())
    triggered = events.triggered()
    order.apply(triggered)
    assert order.status == S.TRIGGERED
    assert order.is_triggered is True
    assert order.ts_triggered == triggered.ts_event


def test_an_overfill_is_refused_before_any_state_changes() -> None:
    order, events = order_in(S.PARTIALLY_FILLED)
    assert_refused(order, events.filled("60"), RejectReason.INVALID_TRANSITION)
    assert order.status == S.PARTIALLY_FILLED
    assert str(order.filled_qty) == "50"


def test_an_overfill_of_an_accepted_order_does_not_move_it_to_filled() -> None:
    order, events = order_in(S.ACCEPTED)
    assert_refused(order, events.filled("101"), RejectReason.INVALID_TRANSITION)
    assert order.status == S.ACCEPTED
    assert order.ts_closed == 0


def test_a_repeated_trade_id_is_refused_when_the_order_has_a_venue_order_id() -> None:
    order, events = order_in(S.ACCEPTED)
    order.apply(events.filled("10", trade_id="T-DUP"))
    assert_refused(order, events.filled("10", trade_id="T-DUP"))
    order.apply(events.filled("10", trade_id="T-OTHER"))
    assert str(order.filled_qty) == "20"


def test_an_order_filled_in_many_parts_still_refuses_each_repeated_trade_id() -> None:
    # Past a few fills the order looks trade ids up in a set (`Order._holds_trade`): the same
    # answers as the list, for the first trade, the latest, and one never seen.
    events = OrderEvents()
    order = Order(events.initialized(OrderType.LIMIT, quantity="1000"))
    order.apply(events.submitted())
    order.apply(events.accepted())
    for n in range(40):
        order.apply(events.filled("1", trade_id=f"T-{n}"))
    for repeated in ("T-0", "T-20", "T-39"):
        assert_refused(order, events.filled("1", trade_id=repeated), RejectReason.INVALID_TRANSITION)
    order.apply(events.filled("1", trade_id="T-40"))
    assert_refused(order, events.filled("1", trade_id="T-40"), RejectReason.INVALID_TRANSITION)
    assert str(order.filled_qty) == "41"
    assert len(order.trade_ids) == 41


def test_a_first_fill_on_an_order_without_venue_order_id_takes_the_fills_venue_order_id() -> None:
    order, events = order_in(S.SUBMITTED)
    assert order.venue_order_id is None
    order.apply(events.filled("10", venue_order_id="V-FROM-FILL"))
    assert order.venue_order_id == "V-FROM-FILL"
    assert order.status == S.PARTIALLY_FILLED


MISMATCHED_VENUE_ID_EVENTS: dict[str, Callable[[OrderEvents], OrderEvent]] = {
    "OrderAccepted": lambda e: e.accepted("V-2"),
    "OrderCanceled": lambda e: e.canceled("V-2"),
    "OrderExpired": lambda e: e.expired("V-2"),
    "OrderTriggered": lambda e: e.triggered("V-2"),
    "OrderPendingUpdate": lambda e: e.pending_update("V-2"),
    "OrderPendingCancel": lambda e: e.pending_cancel("V-2"),
    "OrderModifyRejected": lambda e: e.modify_rejected("V-2"),
    "OrderCancelRejected": lambda e: e.cancel_rejected("V-2"),
    "OrderFilled": lambda e: e.filled("10", venue_order_id="V-2"),
}


@pytest.mark.parametrize("name", sorted(MISMATCHED_VENUE_ID_EVENTS))
def test_an_event_with_another_venue_order_id_is_refused(name: str) -> None:
    order, events = order_in(S.ACCEPTED)
    assert_refused(order, MISMATCHED_VENUE_ID_EVENTS[name](events))
    assert order.venue_order_id == VENUE_ORDER_ID


@pytest.mark.parametrize("name", ["OrderCanceled", "OrderTriggered", "OrderPendingCancel"])
def test_an_event_without_venue_order_id_is_not_a_mismatch(name: str) -> None:
    order, events = order_in(S.ACCEPTED)
    event = {
        "OrderCanceled": events.canceled,
        "OrderTriggered": events.triggered,
        "OrderPendingCancel": events.pending_cancel,
    }[name](None)
    order.apply(event)
    assert order.venue_order_id == VENUE_ORDER_ID


def test_order_updated_may_bring_a_new_venue_order_id_and_the_old_one_is_kept() -> None:
    events = OrderEvents()
    order = Order(events.initialized(OrderType.LIMIT))
    order.apply(events.submitted())
    order.apply(events.accepted("V-1"))
    order.apply(events.updated("100", price="1.09000", venue_order_id="V-2"))
    assert order.venue_order_id == "V-2"
    assert order.venue_order_ids == ["V-1"]
    assert str(order.price) == "1.09000"
    # Events now have to carry the new id.
    assert_refused(order, events.canceled("V-1"))
    order.apply(events.canceled("V-2"))
    assert order.status == S.CANCELED


def test_order_updated_does_not_change_the_venue_order_id_of_a_market_order() -> None:
    events = OrderEvents()
    order = Order(events.initialized(OrderType.MARKET))
    order.apply(events.submitted())
    order.apply(events.accepted("V-1"))
    order.apply(events.updated("120", venue_order_id="V-2"))
    assert order.venue_order_id == "V-1"
    assert str(order.quantity) == "120"


def test_an_event_for_another_client_order_id_is_refused() -> None:
    order, _ = order_in(S.ACCEPTED)
    assert_refused(order, OrderEvents("O-2").canceled())


# -- what accepted events change (6.4) ----------------------------------------------------------


def test_a_fill_without_position_id_clears_the_orders_position_id() -> None:
    order, events = order_in(S.ACCEPTED)
    order.apply(events.filled("10", position_id="P-1"))
    assert order.position_id == "P-1"
    order.apply(events.filled("10", position_id=None))
    assert order.position_id is None


@pytest.mark.parametrize(
    ("last_qty", "status", "is_open"), [("100", S.FILLED, False), ("40", S.PARTIALLY_FILLED, True)]
)
def test_a_fill_after_a_cancel_reopens_or_fills_the_order(last_qty: str, status: OrderStatus, is_open: bool) -> None:
    order, events = order_in(S.CANCELED)
    assert order.is_closed
    fill = events.filled(last_qty)
    order.apply(fill)
    assert order.status == status
    assert order.is_open is is_open
    assert str(order.filled_qty) == last_qty


def test_a_fill_sets_quantities_average_price_and_commissions() -> None:
    order, events = order_in(S.ACCEPTED)
    order.apply(events.filled("30", "1.10000", commission="0.66 USD"))
    order.apply(events.filled("70", "1.10100", commission="1.54 USD"))
    assert order.status == S.FILLED
    assert str(order.filled_qty) == "100"
    assert str(order.leaves_qty) == "0"
    assert order.avg_px == (1.1 * 30.0 + 1.101 * 70.0) / 100.0
    assert [str(m) for m in order.commissions()] == ["2.20 USD"]
    assert order.ts_closed == order.last_event.ts_event


@pytest.mark.parametrize("status", [S.INITIALIZED, S.EMULATED])
def test_an_emulated_order_is_never_open(status: OrderStatus) -> None:
    events = OrderEvents()
    order = Order(events.initialized(OrderType.STOP_LIMIT, emulation_trigger=TriggerType.DEFAULT))
    if status == S.EMULATED:
        order.apply(events.emulated())
        assert order.is_emulated
    assert order.is_open is False


def test_an_order_that_keeps_its_emulation_trigger_is_not_open_even_when_accepted() -> None:
    events = OrderEvents()
    order = Order(events.initialized(OrderType.STOP_LIMIT, emulation_trigger=TriggerType.LAST_PRICE))
    order.apply(events.accepted())  # INITIALIZED -> ACCEPTED is allowed (reconciliation)
    assert order.status == S.ACCEPTED
    assert order.is_open is False


def test_a_released_order_loses_its_emulation_trigger_and_opens_once_accepted() -> None:
    order, events = order_in(S.RELEASED)
    assert order.emulation_trigger == TriggerType.NO_TRIGGER
    order.apply(events.submitted())
    assert order.is_open is False  # SUBMITTED is in flight, not open
    assert order.is_inflight
    order.apply(events.accepted())
    assert order.is_open is True


@pytest.mark.parametrize(("new_quantity", "leaves"), [("150", "120"), ("150.00", "120.00"), ("30", "0")])
def test_order_updated_recomputes_leaves_qty_at_the_new_quantitys_precision(new_quantity: str, leaves: str) -> None:
    order, events = order_in(S.ACCEPTED)
    order.apply(events.filled("30"))
    order.apply(events.updated(new_quantity, price="1.09900", trigger_price="1.10400"))
    assert str(order.quantity) == new_quantity
    assert str(order.leaves_qty) == leaves
    assert str(order.filled_qty) == "30"
    assert str(order.price) == "1.09900"
    assert str(order.trigger_price) == "1.10400"


def test_order_updated_leaves_prices_alone_when_it_carries_none() -> None:
    order, events = order_in(S.ACCEPTED)
    order.apply(events.updated("100"))
    assert str(order.price) == "1.10000"
    assert str(order.trigger_price) == "1.10500"


@pytest.mark.parametrize(
    ("order_type", "has_price", "has_trigger"),
    [
        (OrderType.MARKET, False, False),
        (OrderType.LIMIT, True, False),
        (OrderType.STOP_MARKET, False, True),
        (OrderType.STOP_LIMIT, True, True),
        (OrderType.MARKET_TO_LIMIT, True, False),
        (OrderType.TRAILING_STOP_MARKET, False, True),
    ],
)
def test_price_and_trigger_price_exist_only_on_the_order_types_that_have_them(
    order_type: OrderType, has_price: bool, has_trigger: bool
) -> None:
    order = Order(OrderEvents().initialized(order_type))
    for attribute, present in (("price", has_price), ("trigger_price", has_trigger)):
        if present:
            getattr(order, attribute)
        else:
            with pytest.raises(AttributeError):
                getattr(order, attribute)


# -- transform on a later OrderInitialized (section 9) ------------------------------------------


def _emulated_stop_market_released_as_market() -> tuple[OrderEvents, list[OrderEvent]]:
    events = OrderEvents()
    first = events.initialized(
        OrderType.STOP_MARKET,
        OrderSide.SELL,
        emulation_trigger=TriggerType.DEFAULT,
        time_in_force=TimeInForce.GTD,
        options={"trigger_price": "1.09500", "trigger_type": "DEFAULT", "expire_time_ns": 1_900_000_000_000_000_000},
    )
    return events, [
        first,
        events.emulated(),
        events.initialized(OrderType.MARKET, OrderSide.SELL),
        events.released("1.09490"),
        events.submitted(),
        events.accepted(),
        events.filled("100", "1.09480", side=OrderSide.SELL, order_type=OrderType.MARKET),
    ]


def test_an_emulated_stop_market_released_as_market_becomes_a_filled_market_order() -> None:
    _, stored = _emulated_stop_market_released_as_market()
    order = replay_order(stored)
    assert order.status == S.FILLED
    assert order.order_type == OrderType.MARKET
    assert order.event_count == 7
    assert order.emulation_trigger == TriggerType.NO_TRIGGER
    assert order.time_in_force == TimeInForce.GTC  # GTD becomes GTC on a MARKET transform
    assert order.side == OrderSide.SELL
    assert order.init_event is stored[0]
    with pytest.raises(AttributeError):
        _ = order.price
    with pytest.raises(AttributeError):
        _ = order.trigger_price


def test_the_transformed_order_starts_again_at_initialized_with_the_event_count_going_on() -> None:
    _, stored = _emulated_stop_market_released_as_market()
    order = replay_order(stored[:3])
    assert order.status == S.INITIALIZED
    assert order.order_type == OrderType.MARKET
    assert order.event_count == 3
    assert order.is_open is False
    order.apply(stored[3])
    assert order.status == S.RELEASED


def test_an_emulated_stop_limit_released_as_limit_takes_the_new_price_and_keeps_expire_time() -> None:
    events = OrderEvents()
    order = Order(
        events.initialized(
            OrderType.STOP_LIMIT,
            emulation_trigger=TriggerType.DEFAULT,
            time_in_force=TimeInForce.GTD,
            options={
                "price": "1.10000",
                "trigger_price": "1.10500",
                "trigger_type": "DEFAULT",
                "expire_time_ns": 1_900_000_000_000_000_000,
                "display_qty": None,
            },
        )
    )
    order.apply(events.emulated())
    order.apply(
        events.initialized(OrderType.LIMIT, options={"price": "1.10200", "display_qty": None, "expire_time_ns": 0})
    )
    assert order.order_type == OrderType.LIMIT
    assert str(order.price) == "1.10200"
    assert order.time_in_force == TimeInForce.GTD
    assert order.options["expire_time_ns"] == 1_900_000_000_000_000_000
    with pytest.raises(AttributeError):
        _ = order.trigger_price


def test_a_second_order_initialized_right_after_the_first_is_only_appended() -> None:
    events = OrderEvents()
    order = Order(events.initialized(OrderType.STOP_LIMIT))
    order.apply(events.initialized(OrderType.MARKET))
    assert order.order_type == OrderType.STOP_LIMIT
    assert order.event_count == 2
