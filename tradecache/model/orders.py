"""Orders rebuilt from their events (wire-format.md sections 6 and 9).

`Order(init)` builds an order from its OrderInitialized; `order.apply(event)` applies one more
event or raises `OrderEventRefused` and leaves the order exactly as it was: every check runs
before the first attribute changes. `replay_order(events)` rebuilds an order from a stored list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Final, NoReturn

from tradecache.errors import OrderEventRefused, RejectReason
from tradecache.model.enums import (
    ContingencyType,
    LiquiditySide,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    TriggerType,
)
from tradecache.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderEmulated,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderModifyRejected,
    OrderPendingCancel,
    OrderPendingUpdate,
    OrderRejected,
    OrderReleased,
    OrderSubmitted,
    OrderTriggered,
    OrderUpdated,
)
from tradecache.model.identifiers import (
    AccountId,
    ClientOrderId,
    ExecAlgorithmId,
    InstrumentId,
    OrderListId,
    PositionId,
    StrategyId,
    TradeId,
    TraderId,
    VenueOrderId,
)
from tradecache.model.order_fsm import (
    CLOSED_STATUSES,
    INFLIGHT_STATUSES,
    OPEN_STATUSES,
    PENDING_STATUSES,
    TRANSITIONS_BY_STATUS,
    next_status,
)
from tradecache.model.values import Money, Price, Quantity, trusted_quantity

# The status each event type asks for (OrderFilled decides between two; see `_requested_status`).
REQUESTED_STATUS: Final[dict[type[OrderEvent], OrderStatus]] = {
    OrderDenied: OrderStatus.DENIED,
    OrderEmulated: OrderStatus.EMULATED,
    OrderReleased: OrderStatus.RELEASED,
    OrderSubmitted: OrderStatus.SUBMITTED,
    OrderAccepted: OrderStatus.ACCEPTED,
    OrderRejected: OrderStatus.REJECTED,
    OrderCanceled: OrderStatus.CANCELED,
    OrderExpired: OrderStatus.EXPIRED,
    OrderTriggered: OrderStatus.TRIGGERED,
    OrderPendingUpdate: OrderStatus.PENDING_UPDATE,
    OrderPendingCancel: OrderStatus.PENDING_CANCEL,
}

# Events that request no status and only leave a pending state, and which pending state.
_RETURNS_FROM: Final[dict[type[OrderEvent], OrderStatus]] = {
    OrderModifyRejected: OrderStatus.PENDING_UPDATE,
    OrderCancelRejected: OrderStatus.PENDING_CANCEL,
    OrderUpdated: OrderStatus.PENDING_UPDATE,
}

_CLOSING_EVENTS: Final = (OrderDenied, OrderRejected, OrderCanceled, OrderExpired)

TYPES_WITH_PRICE: Final = frozenset(
    {
        OrderType.LIMIT,
        OrderType.MARKET_TO_LIMIT,
        OrderType.STOP_LIMIT,
        OrderType.LIMIT_IF_TOUCHED,
        OrderType.TRAILING_STOP_LIMIT,
    }
)
TYPES_WITH_TRIGGER: Final = frozenset(
    {
        OrderType.STOP_MARKET,
        OrderType.STOP_LIMIT,
        OrderType.MARKET_IF_TOUCHED,
        OrderType.LIMIT_IF_TOUCHED,
        OrderType.TRAILING_STOP_MARKET,
        OrderType.TRAILING_STOP_LIMIT,
    }
)
# Only these types have a TRIGGERED status; the others go from ACCEPTED straight to a fill.
TYPES_THAT_TRIGGER: Final = frozenset({OrderType.STOP_LIMIT, OrderType.TRAILING_STOP_LIMIT, OrderType.LIMIT_IF_TOUCHED})


class _Fields(Enum):
    """Which of an order's fields an event type sets (`_FIELD_SETTERS`)."""

    FILL = 1
    UPDATE = 2
    CLOSING = 3
    RELEASED = 4
    SUBMITTED = 5
    ACCEPTED = 6
    TRIGGERED = 7
    NONE = 8


def _field_kind(kind: type[OrderEvent]) -> _Fields:
    """The fields `kind` sets, by the first of these classes it is a subclass of."""
    for cls, fields in (
        (OrderFilled, _Fields.FILL),
        (OrderUpdated, _Fields.UPDATE),
        (_CLOSING_EVENTS, _Fields.CLOSING),
        (OrderReleased, _Fields.RELEASED),
        (OrderSubmitted, _Fields.SUBMITTED),
        (OrderAccepted, _Fields.ACCEPTED),
        (OrderTriggered, _Fields.TRIGGERED),
    ):
        if issubclass(kind, cls):
            return fields
    return _Fields.NONE


# What `Order.apply` does with an event of a type: (OrderInitialized?, OrderFilled?, OrderUpdated?,
# OrderTriggered?, the status it requests, the pending status it leaves, the fields it sets);
# filled in as types are seen: one lookup per event instead of a dozen isinstance tests.
_Plan = tuple[bool, bool, bool, bool, OrderStatus | None, OrderStatus | None, "Callable[[Order, Any], None] | None"]
_PLANS: dict[type[OrderEvent], _Plan] = {}


def _plan_of(kind: type[OrderEvent]) -> _Plan:
    return (
        issubclass(kind, OrderInitialized),
        issubclass(kind, OrderFilled),
        issubclass(kind, OrderUpdated),
        issubclass(kind, OrderTriggered),
        REQUESTED_STATUS.get(kind),
        _RETURNS_FROM.get(kind),
        _FIELD_SETTERS.get(_field_kind(kind)),  # what sets the fields it carries
    )


# Enum members the hot paths use, as module globals: `Enum.MEMBER` costs ~75 ns a lookup, a global ~10.
_INITIALIZED, _PARTIALLY_FILLED, _FILLED = OrderStatus.INITIALIZED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED
_NO_LIQUIDITY_SIDE: Final = LiquiditySide.NO_LIQUIDITY_SIDE
_NO_TRIGGER: Final = TriggerType.NO_TRIGGER
_MARKET: Final = OrderType.MARKET
# Types a fill needs a price for (`_check_fill`).
_FILL_NEEDS_PRICE: Final = frozenset({OrderType.MARKET_TO_LIMIT, OrderType.TRAILING_STOP_LIMIT})
# Up to this many trade ids an order looks a fill's up by scanning them (`Order._holds_trade`).
_SCANNED_TRADES: Final = 16


class Order:
    """An order: its OrderInitialized plus every event applied since."""

    __slots__ = (
        "_event_ids",
        "_price",
        "_trade_id_set",
        "_trigger_price",
        "account_id",
        "avg_px",
        "client_order_id",
        "commissions_by_code",
        "contingency_type",
        "emulation_trigger",
        "events",
        "exec_algorithm_id",
        "exec_algorithm_params",
        "exec_spawn_id",
        "filled_qty",
        "init_id",
        "instrument_id",
        "is_triggered",
        "last_trade_id",
        "leaves_qty",
        "linked_order_ids",
        "liquidity_side",
        "options",
        "order_list_id",
        "order_type",
        "parent_order_id",
        "position_id",
        "post_only",
        "previous_status",
        "quantity",
        "quote_quantity",
        "reduce_only",
        "side",
        "status",
        "strategy_id",
        "tags",
        "time_in_force",
        "trade_ids",
        "trader_id",
        "trigger_instrument_id",
        "ts_accepted",
        "ts_closed",
        "ts_init",
        "ts_last",
        "ts_submitted",
        "ts_triggered",
        "venue_order_id",
        "venue_order_ids",
    )

    def __init__(self, init: OrderInitialized) -> None:
        self.trader_id: TraderId = init.trader_id
        self.strategy_id: StrategyId = init.strategy_id
        self.instrument_id: InstrumentId = init.instrument_id
        self.client_order_id: ClientOrderId = init.client_order_id
        self.venue_order_id: VenueOrderId | None = None
        self.position_id: PositionId | None = None
        self.account_id: AccountId | None = None
        self.last_trade_id: TradeId | None = None
        self.side: OrderSide = init.order_side
        self.order_type: OrderType = init.order_type
        self.quantity: Quantity = init.quantity
        self.time_in_force: TimeInForce = init.time_in_force
        self.post_only: bool = init.post_only
        self.reduce_only: bool = init.reduce_only
        self.quote_quantity: bool = init.quote_quantity
        self.options: dict[str, Any] = dict(init.options)
        self.emulation_trigger: TriggerType = init.emulation_trigger
        self.trigger_instrument_id: InstrumentId | None = init.trigger_instrument_id
        self.contingency_type: ContingencyType = init.contingency_type
        self.order_list_id: OrderListId | None = init.order_list_id
        self.linked_order_ids: tuple[ClientOrderId, ...] | None = init.linked_order_ids
        self.parent_order_id: ClientOrderId | None = init.parent_order_id
        self.exec_algorithm_id: ExecAlgorithmId | None = init.exec_algorithm_id
        self.exec_algorithm_params: dict[str, Any] | None = init.exec_algorithm_params
        self.exec_spawn_id: ClientOrderId | None = init.exec_spawn_id
        self.tags: tuple[str, ...] | None = init.tags
        self._price: Price | None = init.price if init.order_type in TYPES_WITH_PRICE else None
        self._trigger_price: Price | None = init.trigger_price if init.order_type in TYPES_WITH_TRIGGER else None
        self.status: OrderStatus = _INITIALIZED
        self.previous_status: OrderStatus = _INITIALIZED
        self.filled_qty: Quantity = trusted_quantity(0, init.quantity.precision)
        self.leaves_qty: Quantity = init.quantity
        self.avg_px: float = 0.0
        self.liquidity_side: LiquiditySide = _NO_LIQUIDITY_SIDE
        self.is_triggered: bool = False
        self.commissions_by_code: dict[str, Money] = {}
        self.trade_ids: list[TradeId] = []
        self._trade_id_set: set[str] | None = None  # `trade_ids` as a set, once it is long (`_holds_trade`)
        self.venue_order_ids: list[VenueOrderId] = []
        self.events: list[OrderEvent] = [init]
        self._event_ids: set[str] = {init.event_id}  # `events`' ids, kept beside it for `has_event`
        self.init_id: str = init.event_id
        self.ts_init: int = init.ts_init
        self.ts_last: int = init.ts_event
        self.ts_submitted: int = 0
        self.ts_accepted: int = 0
        self.ts_triggered: int = 0
        self.ts_closed: int = 0

    # -- attributes only some order types have --------------------------------------------

    @property
    def price(self) -> Price | None:
        if self.order_type not in TYPES_WITH_PRICE:
            raise AttributeError(f"a {self.order_type.name} order has no price")
        return self._price

    @property
    def trigger_price(self) -> Price | None:
        if self.order_type not in TYPES_WITH_TRIGGER:
            raise AttributeError(f"a {self.order_type.name} order has no trigger_price")
        return self._trigger_price

    @property
    def has_price(self) -> bool:
        return self.order_type in TYPES_WITH_PRICE

    @property
    def has_trigger_price(self) -> bool:
        return self.order_type in TYPES_WITH_TRIGGER

    # -- derived flags -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.emulation_trigger == TriggerType.NO_TRIGGER and self.status in OPEN_STATUSES

    @property
    def is_closed(self) -> bool:
        return self.status in CLOSED_STATUSES

    @property
    def is_inflight(self) -> bool:
        return self.status in INFLIGHT_STATUSES

    @property
    def is_emulated(self) -> bool:
        return self.status == OrderStatus.EMULATED

    @property
    def event_count(self) -> int:
        return len(self.events)

    @property
    def last_event(self) -> OrderEvent:
        return self.events[-1]

    @property
    def init_event(self) -> OrderInitialized:
        first = self.events[0]
        assert isinstance(first, OrderInitialized)
        return first

    @property
    def event_ids(self) -> set[str]:
        return {event.event_id for event in self.events}

    def has_event(self, event_id: str) -> bool:
        """Whether an event with this id was applied (or kept) already.

        Raises:
            Nothing.
        """
        return event_id in self._event_ids

    def commissions(self) -> list[Money]:
        """The commission paid so far in each currency.

        Raises:
            Nothing.
        """
        return list(self.commissions_by_code.values())

    def __repr__(self) -> str:
        return (
            f"Order({self.client_order_id.value}, {self.order_type.name} {self.side.name} "
            f"{self.quantity}, status={self.status.name})"
        )

    # -- applying events -----------------------------------------------------------------

    def apply(self, event: OrderEvent) -> None:
        """Apply one event. Raises `OrderEventRefused` and changes nothing if the order refuses it.

        Raises:
            OrderEventRefused: the order refuses the event (a transition its state does not allow,
                another order's ids, an overfill); nothing is changed.
        """
        kind = type(event)
        plan = _PLANS.get(kind)
        if plan is None:
            plan = _PLANS[kind] = _plan_of(kind)
        initialized, filled, updated, triggered, requested, returns_from, set_fields = plan
        venue_order_id = self.venue_order_id
        if event.client_order_id != self.client_order_id or (
            venue_order_id is not None
            and event.venue_order_id is not None
            and event.venue_order_id != venue_order_id
            and not updated
        ):
            self._refuse_identity(event)
        if initialized:
            self._apply_initialized(event)  # type: ignore[arg-type]  # the plan says it is one
            return
        before = self.status
        if filled:
            total = self.filled_qty.raw + event.last_qty.raw  # type: ignore[attr-defined]  # a fill
            status = self._transition(event, _PARTIALLY_FILLED if total < self.quantity.raw else _FILLED)
            self._check_fill(event)  # type: ignore[arg-type]
        else:
            if triggered and self.order_type not in TYPES_THAT_TRIGGER:
                raise self._refuse(
                    event, f"a {self.order_type.name} order cannot be triggered", RejectReason.INVALID_TRANSITION
                )
            if requested is not None:
                status = self._transition(event, requested)
            elif returns_from is not None and before == returns_from:
                status = self._transition(event, self.previous_status)
            else:
                status = before
            if updated:
                self._check_update(event)  # type: ignore[arg-type]
        # Nothing below this line may raise.
        self.status = status
        if before not in PENDING_STATUSES:
            self.previous_status = before
        if set_fields is not None:
            set_fields(self, event)
        self.events.append(event)
        self._event_ids.add(event.event_id)
        self.ts_last = event.ts_event

    def _refuse(self, event: OrderEvent, problem: str, reason: RejectReason) -> OrderEventRefused:
        return OrderEventRefused(reason, self.client_order_id.value, event.type_name, problem)

    def _refuse_identity(self, event: OrderEvent) -> NoReturn:
        """Raise: `event` names another order (`apply` found its ids do not match)."""
        if event.client_order_id != self.client_order_id:
            raise self._refuse(
                event,
                f"event is for client order id '{event.client_order_id}'",
                RejectReason.INVALID_FIELD,
            )
        raise self._refuse(
            event,
            f"venue_order_id '{event.venue_order_id}' differs from the order's '{self.venue_order_id}'",
            RejectReason.INVALID_FIELD,
        )

    def _transition(self, event: OrderEvent, requested: OrderStatus) -> OrderStatus:
        # The table looked up in place (its row for the status: no tuple key to build and hash);
        # `next_status` only to raise its refusal.
        result = TRANSITIONS_BY_STATUS[self.status].get(requested)
        if result is None:
            return next_status(
                self.status, requested, client_order_id=self.client_order_id.value, event_type=event.type_name
            )
        return result

    def _check_fill(self, fill: OrderFilled) -> None:
        if self.venue_order_id is not None and self._holds_trade(fill.trade_id):
            raise self._refuse(fill, f"trade_id '{fill.trade_id}' was already applied", RejectReason.INVALID_TRANSITION)
        if self.filled_qty.raw + fill.last_qty.raw > self.quantity.raw:
            raise self._refuse(
                fill,
                f"overfill: filled {self.filled_qty} + last_qty {fill.last_qty} exceeds quantity {self.quantity}",
                RejectReason.INVALID_TRANSITION,
            )
        if self.order_type in _FILL_NEEDS_PRICE and self._price is None:
            raise self._refuse(
                fill,
                f"a {self.order_type.name} order without a price cannot be filled (set it by OrderUpdated)",
                RejectReason.INVALID_TRANSITION,
            )

    def _holds_trade(self, trade_id: TradeId) -> bool:
        # A scan of a short list costs less than a set; an order filled in thousands of parts
        # made every fill scan them all (an order of 40,000 fills: 237 us a fill, 10x a short one).
        ids = self.trade_ids
        if len(ids) <= _SCANNED_TRADES:
            return trade_id in ids
        held = self._trade_id_set
        if held is None:
            held = self._trade_id_set = set(ids)
        return trade_id in held

    def _check_update(self, update: OrderUpdated) -> None:
        if update.quantity.raw < self.filled_qty.raw:
            raise self._refuse(
                update,
                f"new quantity {update.quantity} is below the filled quantity {self.filled_qty}",
                RejectReason.INVALID_FIELD,
            )

    def _set_closing(self, event: OrderEvent) -> None:
        self.ts_closed = event.ts_event

    def _set_released(self, event: OrderEvent) -> None:
        self.emulation_trigger = _NO_TRIGGER

    def _set_submitted(self, event: OrderEvent) -> None:
        self.account_id = event.account_id
        self.ts_submitted = event.ts_event

    def _set_accepted(self, event: OrderEvent) -> None:
        self.venue_order_id = event.venue_order_id
        self.ts_accepted = event.ts_event

    def _set_triggered(self, event: OrderEvent) -> None:
        self.is_triggered = True
        self.ts_triggered = event.ts_event

    def _apply_update(self, update: OrderUpdated) -> None:
        if self.order_type != _MARKET:
            if (
                self.venue_order_id is not None
                and update.venue_order_id is not None
                and update.venue_order_id != self.venue_order_id
            ):
                self.venue_order_ids.append(self.venue_order_id)
                self.venue_order_id = update.venue_order_id
            if self.order_type in TYPES_WITH_PRICE and update.price is not None:
                self._price = update.price
            if self.order_type in TYPES_WITH_TRIGGER and update.trigger_price is not None:
                self._trigger_price = update.trigger_price
        self.quantity = update.quantity
        self.leaves_qty = Quantity(update.quantity.raw - self.filled_qty.raw, update.quantity.precision)

    def _apply_fill(self, fill: OrderFilled) -> None:
        if self.status == _FILLED:
            self.ts_closed = fill.ts_event
        self.venue_order_id = fill.venue_order_id
        self.position_id = fill.position_id
        self.strategy_id = fill.strategy_id
        self.trade_ids.append(fill.trade_id)
        if self._trade_id_set is not None:
            self._trade_id_set.add(fill.trade_id)
        self.last_trade_id = fill.trade_id
        if not self.ts_accepted:
            self.ts_accepted = fill.ts_event
        last_qty = fill.last_qty
        precision = last_qty.precision
        filled = self.filled_qty.raw + last_qty.raw
        # Both in range (`_check_fill` saw to it), at a fill's precision: not checked again.
        self.filled_qty = trusted_quantity(filled, precision)
        self.leaves_qty = trusted_quantity(self.quantity.raw - filled, precision)
        last_px = float(fill.last_px.raw) / 1e16  # `as_double()`, in place
        if self.avg_px == 0.0:
            self.avg_px = last_px
        else:
            total = float(filled) / 1e16
            qty = float(last_qty.raw) / 1e16
            self.avg_px = (self.avg_px * (total - qty) + last_px * qty) / total
        self.liquidity_side = fill.liquidity_side
        commission = fill.commission
        code = commission.currency.code
        previous = self.commissions_by_code.get(code)
        running = (float(previous.raw) / 1e16 if previous is not None else 0.0) + float(commission.raw) / 1e16
        self.commissions_by_code[code] = Money.from_double_in(running, commission.currency)

    def _apply_initialized(self, init: OrderInitialized) -> None:
        """A later OrderInitialized: the emulator released the order as a new MARKET or LIMIT order."""
        if self.event_count < 2:
            # Nothing happened since the first one: kept as an event, the order stays as it is.
            self.events.append(init)
            self._event_ids.add(init.event_id)
            return
        if init.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            raise self._refuse(
                init,
                f"an order can only be transformed into MARKET or LIMIT, not {init.order_type.name}",
                RejectReason.INVALID_TRANSITION,
            )
        self._transform(init)

    def _transform(self, init: OrderInitialized) -> None:
        if init.order_type == OrderType.MARKET:
            self.options = {}
            self._price = None
            if self.time_in_force == TimeInForce.GTD:
                self.time_in_force = TimeInForce.GTC
        else:
            kept: dict[str, Any] = {
                key: self.options[key] for key in ("display_qty", "expire_time_ns") if key in self.options
            }
            self.options = {"price": init.options.get("price"), **kept}
            self._price = init.price
        self.order_type = init.order_type
        self._trigger_price = None
        self.emulation_trigger = TriggerType.NO_TRIGGER
        self.status = OrderStatus.INITIALIZED
        self.previous_status = OrderStatus.INITIALIZED
        self.filled_qty = Quantity.zero(self.quantity.precision)
        self.leaves_qty = self.quantity
        self.avg_px = 0.0
        self.events.append(init)
        self._event_ids.add(init.event_id)
        self.ts_init = init.ts_init
        self.ts_last = init.ts_event


# What `Order.apply` calls to set the fields of an event of each kind (none for `_Fields.NONE`).
_FieldSetter = Callable[[Order, Any], None]
_FIELD_SETTERS: Final[dict[_Fields, _FieldSetter]] = {
    _Fields.FILL: Order._apply_fill,
    _Fields.UPDATE: Order._apply_update,
    _Fields.CLOSING: Order._set_closing,
    _Fields.RELEASED: Order._set_released,
    _Fields.SUBMITTED: Order._set_submitted,
    _Fields.ACCEPTED: Order._set_accepted,
    _Fields.TRIGGERED: Order._set_triggered,
}


def replay_order(events: Iterable[OrderEvent]) -> Order:
    """Rebuild an order from its stored events, first an OrderInitialized. Refused events raise."""
    iterator = iter(events)
    first = next(iterator, None)
    if not isinstance(first, OrderInitialized):
        raise ValueError("an order's first event must be an OrderInitialized")
    order = Order(first)
    for event in iterator:
        order.apply(event)
    return order


__all__ = [
    "REQUESTED_STATUS",
    "TYPES_THAT_TRIGGER",
    "TYPES_WITH_PRICE",
    "TYPES_WITH_TRIGGER",
    "Order",
    "replay_order",
]
