"""The wire schema of every message type: its keys in wire order, with their codecs.

One table drives decoding, validation and encoding (`MsgPackSerializer`), so a field is declared
once. The key order is NautilusTrader's, so re-encoding a decoded message gives the same bytes.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from tradecache.model import events as ev
from tradecache.model.enums import (
    AccountType,
    ContingencyType,
    LiquiditySide,
    OrderSide,
    OrderType,
    PositionSide,
    TimeInForce,
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
from tradecache.serialization.codecs import (
    BOOL,
    CURRENCY,
    FLOAT,
    INT,
    MAP,
    MONEY,
    PRICE,
    QUANTITY,
    STR_LIST,
    TEXT,
    TIMESTAMP,
    UUID,
    Field,
    enum,
    identifier,
    identifier_list,
    optional,
)


class Schema(NamedTuple):
    cls: type[Any]
    fields: tuple[Field, ...]


def _absent_ok(field: Field, default: Any = None) -> Field:
    return field._replace(may_be_absent=True, default=default)


TRADER_ID = Field("trader_id", identifier(TraderId))
STRATEGY_ID = Field("strategy_id", identifier(StrategyId))
INSTRUMENT_ID = Field("instrument_id", identifier(InstrumentId))
CLIENT_ORDER_ID = Field("client_order_id", identifier(ClientOrderId))
EVENT_ID = Field("event_id", UUID)
TS_EVENT = Field("ts_event", TIMESTAMP)
TS_INIT = Field("ts_init", TIMESTAMP)
RECONCILIATION = _absent_ok(Field("reconciliation", BOOL), False)
OPT_VENUE_ORDER_ID = _absent_ok(Field("venue_order_id", optional(identifier(VenueOrderId))))
OPT_ACCOUNT_ID = _absent_ok(Field("account_id", optional(identifier(AccountId))))
ACCOUNT_ID = Field("account_id", identifier(AccountId))
REASON = Field("reason", TEXT)

_HEADER = (TRADER_ID, STRATEGY_ID, INSTRUMENT_ID, CLIENT_ORDER_ID)
_TAIL = (EVENT_ID, TS_EVENT, TS_INIT)
_VENUE_TAIL = (OPT_VENUE_ORDER_ID, OPT_ACCOUNT_ID)


def _order_event(cls: type[Any], *own: Field, reconciliation: bool = True, after: tuple[Field, ...] = ()) -> Schema:
    tail = (*_TAIL, RECONCILIATION) if reconciliation else _TAIL
    return Schema(cls, (*_HEADER, *own, *tail, *after))


ORDER_INITIALIZED_FIELDS: Final = (
    *_HEADER,
    Field("order_side", enum(OrderSide)),
    Field("order_type", enum(OrderType)),
    Field("quantity", QUANTITY),
    Field("time_in_force", enum(TimeInForce)),
    Field("post_only", BOOL),
    Field("reduce_only", BOOL),
    Field("quote_quantity", BOOL),
    Field("options", MAP),
    Field("emulation_trigger", enum(TriggerType)),
    _absent_ok(Field("trigger_instrument_id", optional(identifier(InstrumentId)))),
    Field("contingency_type", enum(ContingencyType)),
    _absent_ok(Field("order_list_id", optional(identifier(OrderListId)))),
    _absent_ok(Field("linked_order_ids", optional(identifier_list(ClientOrderId)))),
    _absent_ok(Field("parent_order_id", optional(identifier(ClientOrderId)))),
    _absent_ok(Field("exec_algorithm_id", optional(identifier(ExecAlgorithmId)))),
    _absent_ok(Field("exec_algorithm_params", optional(MAP))),
    _absent_ok(Field("exec_spawn_id", optional(identifier(ClientOrderId)))),
    _absent_ok(Field("tags", optional(STR_LIST))),
    EVENT_ID,
    TS_INIT,  # OrderInitialized writes ts_init before ts_event
    TS_EVENT,
    RECONCILIATION,
)

ORDER_FILLED_FIELDS: Final = (
    *_HEADER,
    Field("venue_order_id", identifier(VenueOrderId)),
    ACCOUNT_ID,
    Field("trade_id", identifier(TradeId)),
    _absent_ok(Field("position_id", optional(identifier(PositionId)))),
    Field("order_side", enum(OrderSide)),
    Field("order_type", enum(OrderType)),
    Field("last_qty", QUANTITY),
    Field("last_px", PRICE),
    Field("currency", CURRENCY),
    Field("commission", MONEY),
    Field("liquidity_side", enum(LiquiditySide)),
    *_TAIL,
    _absent_ok(Field("info", MAP), {}),
    RECONCILIATION,
)

ORDER_SCHEMAS: Final[dict[str, Schema]] = {
    "OrderInitialized": Schema(ev.OrderInitialized, ORDER_INITIALIZED_FIELDS),
    "OrderDenied": _order_event(ev.OrderDenied, REASON, reconciliation=False),
    "OrderEmulated": _order_event(ev.OrderEmulated, reconciliation=False),
    "OrderReleased": _order_event(ev.OrderReleased, Field("released_price", PRICE), reconciliation=False),
    "OrderSubmitted": _order_event(ev.OrderSubmitted, ACCOUNT_ID, reconciliation=False),
    "OrderAccepted": _order_event(ev.OrderAccepted, Field("venue_order_id", identifier(VenueOrderId)), ACCOUNT_ID),
    "OrderRejected": _order_event(
        ev.OrderRejected, ACCOUNT_ID, REASON, after=(_absent_ok(Field("due_post_only", BOOL), False),)
    ),
    "OrderCanceled": _order_event(ev.OrderCanceled, *_VENUE_TAIL),
    "OrderExpired": _order_event(ev.OrderExpired, *_VENUE_TAIL),
    "OrderTriggered": _order_event(ev.OrderTriggered, *_VENUE_TAIL),
    "OrderPendingUpdate": _order_event(ev.OrderPendingUpdate, *_VENUE_TAIL),
    "OrderPendingCancel": _order_event(ev.OrderPendingCancel, *_VENUE_TAIL),
    "OrderModifyRejected": _order_event(ev.OrderModifyRejected, *_VENUE_TAIL, REASON),
    "OrderCancelRejected": _order_event(ev.OrderCancelRejected, *_VENUE_TAIL, REASON),
    "OrderUpdated": _order_event(
        ev.OrderUpdated,
        *_VENUE_TAIL,
        Field("quantity", QUANTITY),
        _absent_ok(Field("price", optional(PRICE))),
        _absent_ok(Field("trigger_price", optional(PRICE))),
    ),
    "OrderFilled": Schema(ev.OrderFilled, ORDER_FILLED_FIELDS),
}

_POSITION_HEAD = (
    TRADER_ID,
    STRATEGY_ID,
    INSTRUMENT_ID,
    Field("position_id", identifier(PositionId)),
    ACCOUNT_ID,
    Field("opening_order_id", identifier(ClientOrderId)),
)
_POSITION_STATE = (
    Field("entry", enum(OrderSide)),
    Field("side", enum(PositionSide)),
    Field("signed_qty", FLOAT),
    Field("quantity", QUANTITY),
    Field("peak_qty", QUANTITY),
    Field("last_qty", QUANTITY),
    Field("last_px", PRICE),
    Field("currency", CURRENCY),
    Field("avg_px_open", FLOAT),
)
_REALIZED_PNL = Field("realized_pnl", optional(MONEY))

POSITION_SCHEMAS: Final[dict[str, Schema]] = {
    "PositionOpened": Schema(
        ev.PositionOpened,
        (*_POSITION_HEAD, *_POSITION_STATE, _REALIZED_PNL, Field("duration_ns", INT), EVENT_ID, TS_EVENT, TS_INIT),
    ),
    "PositionChanged": Schema(
        ev.PositionChanged,
        (
            *_POSITION_HEAD,
            *_POSITION_STATE,
            Field("avg_px_close", FLOAT),
            Field("realized_return", FLOAT),
            _REALIZED_PNL,
            Field("unrealized_pnl", optional(MONEY)),
            EVENT_ID,
            Field("ts_opened", TIMESTAMP),
            TS_EVENT,
            TS_INIT,
        ),
    ),
    "PositionClosed": Schema(
        ev.PositionClosed,
        (
            *_POSITION_HEAD,
            Field("closing_order_id", optional(identifier(ClientOrderId))),
            *_POSITION_STATE,
            Field("avg_px_close", FLOAT),
            Field("realized_return", FLOAT),
            _REALIZED_PNL,
            EVENT_ID,
            Field("ts_opened", TIMESTAMP),
            Field("ts_closed", TIMESTAMP),
            Field("duration_ns", INT),
            TS_INIT,
        ),
    ),
}

ACCOUNT_STATE_FIELDS: Final = (
    ACCOUNT_ID,
    Field("account_type", enum(AccountType)),
    Field("base_currency", optional(CURRENCY)),
    # balances / margins are lists of maps; `MsgPackSerializer` handles them.
    Field("reported", BOOL),
    _absent_ok(Field("info", MAP), {}),
    EVENT_ID,
    TS_EVENT,
    TS_INIT,
)

SUBMIT_ORDER_FIELDS: Final = (
    _absent_ok(Field("client_id", optional(identifier(ClientId)))),
    TRADER_ID,
    STRATEGY_ID,
    # "order" sits here (a nested OrderInitialized map)
    _absent_ok(Field("position_id", optional(identifier(PositionId)))),
    Field("command_id", UUID),
    TS_INIT,
)

SUBMIT_ORDER_LIST_FIELDS: Final = (
    _absent_ok(Field("client_id", optional(identifier(ClientId)))),
    TRADER_ID,
    STRATEGY_ID,
    Field("order_list_id", identifier(OrderListId)),
    # "orders" sits here (a list of nested OrderInitialized maps)
    _absent_ok(Field("position_id", optional(identifier(PositionId)))),
    Field("command_id", UUID),
    TS_INIT,
)

STRATEGY_STATE_FIELDS: Final = (TRADER_ID, STRATEGY_ID, TS_EVENT)
CURRENCY_FIELDS: Final = (
    Field("code", TEXT),
    Field("precision", INT),
    Field("iso4217", INT),
    Field("name", TEXT),
)

__all__ = [
    "ACCOUNT_STATE_FIELDS",
    "CURRENCY_FIELDS",
    "ORDER_FILLED_FIELDS",
    "ORDER_INITIALIZED_FIELDS",
    "ORDER_SCHEMAS",
    "POSITION_SCHEMAS",
    "STRATEGY_STATE_FIELDS",
    "SUBMIT_ORDER_FIELDS",
    "SUBMIT_ORDER_LIST_FIELDS",
    "Schema",
]
