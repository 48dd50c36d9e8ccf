"""Messages of the wire format as frozen dataclasses: order events, position events, account states,
commands and this project's strategy messages.

Attribute names are the wire keys (wire-format.md section 5). Values are typed: identifiers,
enums, Price / Quantity / Money, timestamps as integer nanoseconds. Free-form maps (`info`,
`options`, `exec_algorithm_params`) are kept as they came so they round-trip byte for byte.
Decoding and validation live in `tradecache.serialization`; these classes only hold data.

Events are values: nothing in tradecache changes one after it is built (a changed copy is made
with `dataclasses.replace`). They are not declared `frozen` because a frozen dataclass sets each
field through `object.__setattr__`, which made decoding an OrderInitialized ~1.2 us (20%) slower,
and decoding is the hot path of both ingestion and bulk loads (benchmarks/cache_bench.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tradecache.model.enums import (
    AccountType,
    ContingencyType,
    LiquiditySide,
    OrderSide,
    OrderType,
    PositionSide,
    TimeInForce,
    TrailingOffsetType,
    TriggerType,
)
from tradecache.model.identifiers import (
    AccountId,
    ClientId,
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
from tradecache.model.values import Currency, Money, Price, Quantity

# Prices parsed from orders' options: every order is built with its price, and prices repeat
# (values are immutable, so one parse is shared). Bounded: cleared when it grows past this many.
_OPTION_PRICES: dict[str, Price] = {}
_OPTION_PRICES_SIZE = 16_384


def _option_price(text: str) -> Price:
    price = _OPTION_PRICES.get(text)
    if price is None:
        price = Price.from_str(text)
        if len(_OPTION_PRICES) >= _OPTION_PRICES_SIZE:
            _OPTION_PRICES.clear()
        _OPTION_PRICES[text] = price
    return price


@dataclass(slots=True, kw_only=True)
class OrderEvent:
    """Fields every order event carries."""

    trader_id: TraderId
    strategy_id: StrategyId
    instrument_id: InstrumentId
    client_order_id: ClientOrderId
    event_id: str
    ts_event: int
    ts_init: int
    reconciliation: bool = False

    # Events that carry these set them; others read as None through the class defaults below.
    venue_order_id: VenueOrderId | None = None
    account_id: AccountId | None = None

    @property
    def type_name(self) -> str:
        return type(self).__name__


@dataclass(slots=True, kw_only=True)
class OrderInitialized(OrderEvent):
    order_side: OrderSide
    order_type: OrderType
    quantity: Quantity
    time_in_force: TimeInForce
    post_only: bool
    reduce_only: bool
    quote_quantity: bool
    options: dict[str, Any]
    emulation_trigger: TriggerType
    trigger_instrument_id: InstrumentId | None = None
    contingency_type: ContingencyType = ContingencyType.NO_CONTINGENCY
    order_list_id: OrderListId | None = None
    linked_order_ids: tuple[ClientOrderId, ...] | None = None
    parent_order_id: ClientOrderId | None = None
    exec_algorithm_id: ExecAlgorithmId | None = None
    exec_algorithm_params: dict[str, Any] | None = None
    exec_spawn_id: ClientOrderId | None = None
    tags: tuple[str, ...] | None = None

    # Typed views of `options` (validated when the event was decoded).
    def option_price(self, key: str) -> Price | None:
        """The price stored under `key` in the order's options (trigger, limit...), or None.

        Raises:
            ValueError: the option's value is not a decimal string.
        """
        value = self.options.get(key)
        return None if value is None else _option_price(value)

    @property
    def price(self) -> Price | None:
        return self.option_price("price")

    @property
    def trigger_price(self) -> Price | None:
        return self.option_price("trigger_price")

    @property
    def activation_price(self) -> Price | None:
        return self.option_price("activation_price")

    @property
    def display_qty(self) -> Quantity | None:
        value = self.options.get("display_qty")
        return None if value is None else Quantity.from_str(value)

    @property
    def trigger_type(self) -> TriggerType | None:
        value = self.options.get("trigger_type")
        return None if value is None else TriggerType[value]

    @property
    def trailing_offset_type(self) -> TrailingOffsetType | None:
        value = self.options.get("trailing_offset_type")
        return None if value is None else TrailingOffsetType[value]

    @property
    def expire_time_ns(self) -> int:
        value = self.options.get("expire_time_ns", 0)
        return int(value) if value else 0


@dataclass(slots=True, kw_only=True)
class OrderDenied(OrderEvent):
    reason: str


@dataclass(slots=True, kw_only=True)
class OrderEmulated(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderReleased(OrderEvent):
    released_price: Price


@dataclass(slots=True, kw_only=True)
class OrderSubmitted(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderAccepted(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderRejected(OrderEvent):
    reason: str
    due_post_only: bool = False


@dataclass(slots=True, kw_only=True)
class OrderCanceled(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderTriggered(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderPendingUpdate(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderPendingCancel(OrderEvent):
    pass


@dataclass(slots=True, kw_only=True)
class OrderModifyRejected(OrderEvent):
    reason: str


@dataclass(slots=True, kw_only=True)
class OrderCancelRejected(OrderEvent):
    reason: str


@dataclass(slots=True, kw_only=True)
class OrderUpdated(OrderEvent):
    quantity: Quantity
    price: Price | None = None
    trigger_price: Price | None = None


@dataclass(slots=True, kw_only=True)
class OrderFilled(OrderEvent):
    trade_id: TradeId
    position_id: PositionId | None
    order_side: OrderSide
    order_type: OrderType
    last_qty: Quantity
    last_px: Price
    currency: Currency
    commission: Money
    liquidity_side: LiquiditySide
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_buy(self) -> bool:
        return self.order_side == OrderSide.BUY


# ---------------------------------------------------------------------------------------------
# Position events: what the node published about a position (not stored; used for verification).


@dataclass(slots=True, kw_only=True)
class PositionEvent:
    trader_id: TraderId
    strategy_id: StrategyId
    instrument_id: InstrumentId
    position_id: PositionId
    account_id: AccountId
    opening_order_id: ClientOrderId
    entry: OrderSide
    side: PositionSide
    signed_qty: float
    quantity: Quantity
    peak_qty: Quantity
    last_qty: Quantity
    last_px: Price
    currency: Currency
    avg_px_open: float
    realized_pnl: Money | None
    event_id: str
    ts_init: int

    @property
    def type_name(self) -> str:
        return type(self).__name__


@dataclass(slots=True, kw_only=True)
class PositionOpened(PositionEvent):
    duration_ns: int
    ts_event: int


@dataclass(slots=True, kw_only=True)
class PositionChanged(PositionEvent):
    avg_px_close: float
    realized_return: float
    unrealized_pnl: Money | None
    ts_opened: int
    ts_event: int


@dataclass(slots=True, kw_only=True)
class PositionClosed(PositionEvent):
    closing_order_id: ClientOrderId | None
    avg_px_close: float
    realized_return: float
    ts_opened: int
    ts_closed: int
    duration_ns: int


# ---------------------------------------------------------------------------------------------
# Accounts.


@dataclass(frozen=True, slots=True)
class AccountBalance:
    total: Money
    locked: Money
    free: Money

    @property
    def currency(self) -> Currency:
        return self.total.currency


@dataclass(frozen=True, slots=True)
class MarginBalance:
    initial: Money
    maintenance: Money
    instrument_id: InstrumentId | None

    @property
    def currency(self) -> Currency:
        return self.initial.currency


@dataclass(slots=True, kw_only=True)
class AccountState:
    account_id: AccountId
    account_type: AccountType
    base_currency: Currency | None
    balances: tuple[AccountBalance, ...]
    margins: tuple[MarginBalance, ...]
    reported: bool
    info: dict[str, Any]
    event_id: str
    ts_event: int
    ts_init: int

    type_name: ClassVar[str] = "AccountState"


# ---------------------------------------------------------------------------------------------
# Commands.


@dataclass(slots=True, kw_only=True)
class SubmitOrder:
    client_id: ClientId | None
    trader_id: TraderId
    strategy_id: StrategyId
    order: OrderInitialized
    position_id: PositionId | None
    command_id: str
    ts_init: int

    type_name: ClassVar[str] = "SubmitOrder"

    @property
    def client_order_id(self) -> ClientOrderId:
        return self.order.client_order_id


@dataclass(slots=True, kw_only=True)
class SubmitOrderList:
    client_id: ClientId | None
    trader_id: TraderId
    strategy_id: StrategyId
    order_list_id: OrderListId
    orders: tuple[OrderInitialized, ...]
    position_id: PositionId | None
    command_id: str
    ts_init: int

    type_name: ClassVar[str] = "SubmitOrderList"

    @property
    def client_order_ids(self) -> list[ClientOrderId]:
        return [order.client_order_id for order in self.orders]


# ---------------------------------------------------------------------------------------------
# This project's own messages (SPEC section 1).


@dataclass(slots=True, kw_only=True)
class StrategyState:
    trader_id: TraderId
    strategy_id: StrategyId
    state: dict[str, bytes]
    ts_event: int

    type_name: ClassVar[str] = "StrategyState"


@dataclass(slots=True, kw_only=True)
class StrategyDeleted:
    trader_id: TraderId
    strategy_id: StrategyId
    ts_event: int

    type_name: ClassVar[str] = "StrategyDeleted"


ORDER_EVENT_TYPES: tuple[type[OrderEvent], ...] = (
    OrderInitialized,
    OrderDenied,
    OrderEmulated,
    OrderReleased,
    OrderSubmitted,
    OrderAccepted,
    OrderRejected,
    OrderCanceled,
    OrderExpired,
    OrderTriggered,
    OrderPendingUpdate,
    OrderPendingCancel,
    OrderModifyRejected,
    OrderCancelRejected,
    OrderUpdated,
    OrderFilled,
)

POSITION_EVENT_TYPES: tuple[type[PositionEvent], ...] = (PositionOpened, PositionChanged, PositionClosed)


__all__ = [
    "ORDER_EVENT_TYPES",
    "POSITION_EVENT_TYPES",
    "AccountBalance",
    "AccountState",
    "MarginBalance",
    "OrderAccepted",
    "OrderCancelRejected",
    "OrderCanceled",
    "OrderDenied",
    "OrderEmulated",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderInitialized",
    "OrderModifyRejected",
    "OrderPendingCancel",
    "OrderPendingUpdate",
    "OrderRejected",
    "OrderReleased",
    "OrderSubmitted",
    "OrderTriggered",
    "OrderUpdated",
    "PositionChanged",
    "PositionClosed",
    "PositionEvent",
    "PositionOpened",
    "StrategyDeleted",
    "StrategyState",
    "SubmitOrder",
    "SubmitOrderList",
]
