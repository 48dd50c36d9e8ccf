"""The demo feed `tradecache dev` publishes: a position's whole life, accounts that follow it, a
rejection, and position events that agree with the fills (as the sidecar checks them)."""

from __future__ import annotations

from tradecache.dev.demo import STARTING_BALANCE_CENTS, build_demo_feed
from tradecache.model.enums import OrderStatus, PositionSide
from tradecache.model.events import (
    AccountState,
    OrderEvent,
    OrderFilled,
    OrderInitialized,
    OrderRejected,
    PositionEvent,
)
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.model.orders import Order
from tradecache.serialization import MsgPackSerializer


def applied(sessions: int) -> Ledger:
    """A ledger fed `sessions` demo sessions through the wire format; fails on any refusal or divergence."""
    serializer = MsgPackSerializer(timestamps_as_str=True)
    ledger = Ledger(TraderId("DEV-001"))
    for _ in range(sessions):
        for _kind, payload in build_demo_feed().payloads(serializer):
            outcome = ledger.apply(serializer.deserialize(payload))  # raises EventRejected on a refusal
            assert outcome.divergence is None, outcome.divergence
    return ledger


def test_the_position_opens_changes_flips_and_closes_with_the_events_a_node_publishes() -> None:
    feed = build_demo_feed()
    events = [message for _, message in feed.messages if isinstance(message, PositionEvent)]
    assert [(type(e).__name__, str(e.side), str(e.quantity)) for e in events] == [
        ("PositionOpened", "LONG", "60000"),
        ("PositionChanged", "LONG", "100000"),
        ("PositionChanged", "LONG", "50000"),
        ("PositionClosed", "FLAT", "0"),  # the flip's closing half
        ("PositionOpened", "SHORT", "100000"),  # its opening half, same NETTING position id
        ("PositionClosed", "FLAT", "0"),
    ]
    assert {e.position_id.value for e in events} == {feed.position_id}


def test_every_message_is_accepted_and_no_position_event_diverges_even_over_several_sessions() -> None:
    ledger = applied(sessions=3)
    position = ledger.positions[build_demo_feed().position_id]
    assert position.side == PositionSide.FLAT


def test_orders_end_filled_except_the_rejected_one() -> None:
    feed = build_demo_feed()
    orders: dict[str, Order] = {}
    for _, message in feed.messages:
        if isinstance(message, OrderInitialized):
            orders[message.client_order_id.value] = Order(message)
        elif isinstance(message, OrderEvent):
            orders[message.client_order_id.value].apply(message)
    assert list(orders) == feed.order_ids
    assert orders[feed.rejected_order_id].status == OrderStatus.REJECTED
    filled = [o for o in feed.order_ids if o != feed.rejected_order_id]
    assert [orders[o].status for o in filled] == [OrderStatus.FILLED] * 4
    rejection = next(m for _, m in feed.messages if isinstance(m, OrderRejected))
    assert "insufficient margin" in rejection.reason


def test_the_account_books_the_realized_pnl_and_locks_margin_only_while_the_position_is_open() -> None:
    feed = build_demo_feed()
    states = [m for _, m in feed.messages if isinstance(m, AccountState)]
    fills = [m for _, m in feed.messages if isinstance(m, OrderFilled)]
    assert len(states) == 1 + len(fills)  # the opening state, then one after each fill
    locked = [state.balances[0].locked.raw for state in states]
    assert locked[0] == 0 and all(locked[1:4]) and locked[-1] == 0
    last = states[-1].balances[0]
    assert last.total.raw - last.locked.raw == last.free.raw
    assert last.total.raw != STARTING_BALANCE_CENTS * 10**14  # the session made or lost money
