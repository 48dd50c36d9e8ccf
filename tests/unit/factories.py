"""Valid model objects for the unit tests: events with UUID4 ids and increasing timestamps.

`OrderEvents("O-1").initialized(...)` starts an order; its other methods make the events a node
publishes for that order. Instruments and account states are built from their wire maps through
the real serializer, so they are exactly what a decoded message would be.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

from tradecache.model.enums import (
    AccountType,
    LiquiditySide,
    OrderSide,
    OrderType,
    TimeInForce,
    TriggerType,
)
from tradecache.model.events import (
    AccountState,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderEmulated,
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
    PositionChanged,
    PositionClosed,
    PositionEvent,
    PositionOpened,
)
from tradecache.model.identifiers import (
    AccountId,
    ClientOrderId,
    InstrumentId,
    PositionId,
    StrategyId,
    TradeId,
    TraderId,
    VenueOrderId,
)
from tradecache.model.instruments import Instrument
from tradecache.model.positions import Position
from tradecache.model.values import Currency, Money, Price, Quantity
from tradecache.serialization import MsgPackSerializer

TRADER_ID = "TESTER-001"
STRATEGY_ID = "Tester-001"
INSTRUMENT_ID = "EUR/USD.SIM"
ACCOUNT_ID = "SIM-001"
VENUE_ORDER_ID = "V-1"

SERIALIZER = MsgPackSerializer(timestamps_as_str=True)

_CLOCK = itertools.count(1_764_112_094_914_872_368, 1_000_003)
_TRADES = itertools.count(1)


def next_ts() -> int:
    """A 19-digit nanosecond timestamp, larger than every one handed out before."""
    return next(_CLOCK)


def new_event_id() -> str:
    return str(uuid.uuid4())


def new_trade_id() -> str:
    return f"T-{next(_TRADES)}"


# Options a valid OrderInitialized of each type carries (wire form, key order of wire-format 5.4).
DEFAULT_OPTIONS: dict[OrderType, dict[str, Any]] = {
    OrderType.MARKET: {},
    OrderType.LIMIT: {"price": "1.10000", "display_qty": None, "expire_time_ns": 0},
    OrderType.MARKET_TO_LIMIT: {"display_qty": None, "expire_time_ns": 0},
    OrderType.STOP_MARKET: {"trigger_price": "1.10500", "trigger_type": "DEFAULT", "expire_time_ns": 0},
    OrderType.MARKET_IF_TOUCHED: {"trigger_price": "1.09500", "trigger_type": "DEFAULT", "expire_time_ns": 0},
    OrderType.STOP_LIMIT: {
        "price": "1.10000",
        "trigger_price": "1.10500",
        "trigger_type": "DEFAULT",
        "expire_time_ns": 0,
        "display_qty": None,
    },
    OrderType.LIMIT_IF_TOUCHED: {
        "price": "1.09000",
        "trigger_price": "1.09500",
        "trigger_type": "DEFAULT",
        "expire_time_ns": 0,
        "display_qty": None,
    },
    OrderType.TRAILING_STOP_MARKET: {
        "activation_price": None,
        "trigger_price": "1.10500",
        "trigger_type": "DEFAULT",
        "trailing_offset": "0.00100",
        "trailing_offset_type": "PRICE",
        "expire_time_ns": 0,
    },
    OrderType.TRAILING_STOP_LIMIT: {
        "price": "1.10000",
        "activation_price": None,
        "trigger_price": "1.10500",
        "trigger_type": "DEFAULT",
        "limit_offset": "0.00050",
        "trailing_offset": "0.00100",
        "trailing_offset_type": "PRICE",
        "expire_time_ns": 0,
        "display_qty": None,
    },
}


@dataclasses.dataclass
class OrderEvents:
    """Makes the events of one order."""

    client_order_id: str = "O-1"
    instrument_id: str = INSTRUMENT_ID
    trader_id: str = TRADER_ID
    strategy_id: str = STRATEGY_ID
    account_id: str = ACCOUNT_ID

    def _common(self, **fields: Any) -> dict[str, Any]:
        ts = next_ts()
        return {
            "trader_id": TraderId(self.trader_id),
            "strategy_id": StrategyId(self.strategy_id),
            "instrument_id": InstrumentId(self.instrument_id),
            "client_order_id": ClientOrderId(self.client_order_id),
            "event_id": new_event_id(),
            "ts_event": ts,
            "ts_init": ts,
            **fields,
        }

    def _venue(self, venue_order_id: str | None, account: bool = True) -> dict[str, Any]:
        return {
            "venue_order_id": None if venue_order_id is None else VenueOrderId(venue_order_id),
            "account_id": AccountId(self.account_id) if account else None,
        }

    def initialized(
        self,
        order_type: OrderType = OrderType.STOP_LIMIT,
        side: OrderSide = OrderSide.BUY,
        quantity: str = "100",
        *,
        options: dict[str, Any] | None = None,
        emulation_trigger: TriggerType = TriggerType.NO_TRIGGER,
        time_in_force: TimeInForce = TimeInForce.GTC,
    ) -> OrderInitialized:
        return OrderInitialized(
            **self._common(),
            order_side=side,
            order_type=order_type,
            quantity=Quantity.from_str(quantity),
            time_in_force=time_in_force,
            post_only=False,
            reduce_only=False,
            quote_quantity=False,
            options=dict(DEFAULT_OPTIONS[order_type] if options is None else options),
            emulation_trigger=emulation_trigger,
        )

    def denied(self) -> OrderDenied:
        return OrderDenied(**self._common(), reason="denied by a risk check")

    def emulated(self) -> OrderEmulated:
        return OrderEmulated(**self._common())

    def released(self, price: str = "1.10500") -> OrderReleased:
        return OrderReleased(**self._common(), released_price=Price.from_str(price))

    def submitted(self) -> OrderSubmitted:
        return OrderSubmitted(**self._common(account_id=AccountId(self.account_id)))

    def accepted(self, venue_order_id: str = VENUE_ORDER_ID) -> OrderAccepted:
        return OrderAccepted(**self._common(**self._venue(venue_order_id)))

    def rejected(self) -> OrderRejected:
        return OrderRejected(**self._common(account_id=AccountId(self.account_id)), reason="rejected by the venue")

    def canceled(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderCanceled:
        return OrderCanceled(**self._common(**self._venue(venue_order_id)))

    def expired(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderExpired:
        return OrderExpired(**self._common(**self._venue(venue_order_id)))

    def triggered(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderTriggered:
        return OrderTriggered(**self._common(**self._venue(venue_order_id)))

    def pending_update(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderPendingUpdate:
        return OrderPendingUpdate(**self._common(**self._venue(venue_order_id)))

    def pending_cancel(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderPendingCancel:
        return OrderPendingCancel(**self._common(**self._venue(venue_order_id)))

    def modify_rejected(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderModifyRejected:
        return OrderModifyRejected(**self._common(**self._venue(venue_order_id)), reason="modify rejected")

    def cancel_rejected(self, venue_order_id: str | None = VENUE_ORDER_ID) -> OrderCancelRejected:
        return OrderCancelRejected(**self._common(**self._venue(venue_order_id)), reason="cancel rejected")

    def updated(
        self,
        quantity: str = "100",
        *,
        price: str | None = None,
        trigger_price: str | None = None,
        venue_order_id: str | None = VENUE_ORDER_ID,
    ) -> OrderUpdated:
        return OrderUpdated(
            **self._common(**self._venue(venue_order_id)),
            quantity=Quantity.from_str(quantity),
            price=None if price is None else Price.from_str(price),
            trigger_price=None if trigger_price is None else Price.from_str(trigger_price),
        )

    def filled(
        self,
        last_qty: str = "100",
        last_px: str = "1.10000",
        *,
        side: OrderSide = OrderSide.BUY,
        order_type: OrderType = OrderType.STOP_LIMIT,
        commission: str = "2.00 USD",
        currency: str = "USD",
        trade_id: str | None = None,
        position_id: str | None = None,
        venue_order_id: str = VENUE_ORDER_ID,
        info: dict[str, Any] | None = None,
    ) -> OrderFilled:
        return OrderFilled(
            **self._common(**self._venue(venue_order_id)),
            trade_id=TradeId(trade_id or new_trade_id()),
            position_id=None if position_id is None else PositionId(position_id),
            order_side=side,
            order_type=order_type,
            last_qty=Quantity.from_str(last_qty),
            last_px=Price.from_str(last_px),
            currency=Currency.from_str(currency),
            commission=Money.parse(commission),
            liquidity_side=LiquiditySide.TAKER,
            info={} if info is None else info,
        )


def fill(
    client_order_id: str,
    side: OrderSide,
    last_qty: str,
    last_px: str,
    commission: str,
    *,
    position_id: str,
    instrument_id: str = INSTRUMENT_ID,
    currency: str = "USD",
    trade_id: str | None = None,
    order_type: OrderType = OrderType.MARKET,
) -> OrderFilled:
    """A market fill for a position test (each order gets its own venue order id)."""
    events = OrderEvents(client_order_id, instrument_id=instrument_id)
    return events.filled(
        last_qty,
        last_px,
        side=side,
        order_type=order_type,
        commission=commission,
        currency=currency,
        trade_id=trade_id,
        position_id=position_id,
        venue_order_id=f"V-{client_order_id}",
    )


# -- instruments -----------------------------------------------------------------------------


def _instrument_map(instrument_id: str, raw_symbol: str, price_precision: int, **fields: Any) -> dict[str, Any]:
    increment = "1" if price_precision == 0 else "0." + "0" * (price_precision - 1) + "1"
    ts = str(next_ts())
    return {
        "id": instrument_id,
        "raw_symbol": raw_symbol,
        "price_precision": price_precision,
        "price_increment": increment,
        **fields,
        "margin_init": "0.03",
        "margin_maint": "0.03",
        "maker_fee": "0.00002",
        "taker_fee": "0.00002",
        "ts_event": ts,
        "ts_init": ts,
        "tick_scheme_name": None,
        "info": None,
    }


def currency_pair(
    instrument_id: str = INSTRUMENT_ID, base: str = "EUR", quote: str = "USD", price_precision: int = 5
) -> Instrument:
    data = {
        "type": "CurrencyPair",
        **_instrument_map(
            instrument_id,
            instrument_id.rpartition(".")[0],
            price_precision,
            base_currency=base,
            quote_currency=quote,
            size_precision=0,
            size_increment="1",
            multiplier="1",
        ),
    }
    instrument = SERIALIZER.from_map(data)
    assert isinstance(instrument, Instrument)
    return instrument


def crypto_perpetual(
    instrument_id: str,
    *,
    base: str,
    quote: str,
    settlement: str,
    is_inverse: bool,
    price_precision: int,
    size_precision: int,
) -> Instrument:
    size_increment = "1" if size_precision == 0 else "0." + "0" * (size_precision - 1) + "1"
    data = {
        "type": "CryptoPerpetual",
        **_instrument_map(
            instrument_id,
            instrument_id.rpartition(".")[0],
            price_precision,
            base_currency=base,
            quote_currency=quote,
            settlement_currency=settlement,
            is_inverse=is_inverse,
            size_precision=size_precision,
            size_increment=size_increment,
            multiplier="1",
        ),
    }
    instrument = SERIALIZER.from_map(data)
    assert isinstance(instrument, Instrument)
    return instrument


# -- accounts --------------------------------------------------------------------------------


def account_state(
    account_type: AccountType,
    balances: Sequence[tuple[str, str, str]],
    *,
    base_currency: str | None = None,
    margins: Sequence[tuple[str, str, str, str | None]] = (),
    account_id: str = ACCOUNT_ID,
) -> AccountState:
    """An AccountState from (currency, total, locked) balances; free = total - locked."""
    balance_maps = []
    for code, total, locked in balances:
        precision = Currency.from_str(code).precision
        free = Money.from_amount_str(total, code).raw - Money.from_amount_str(locked, code).raw
        balance_maps.append(
            {
                "type": "AccountBalance",
                "total": total,
                "locked": locked,
                "free": Money(free, precision, Currency.from_str(code)).amount_str(),
                "currency": code,
            }
        )
    ts = str(next_ts())
    data = {
        "type": "AccountState",
        "account_id": account_id,
        "account_type": account_type.name,
        "base_currency": base_currency,
        "balances": balance_maps,
        "margins": [
            {
                "type": "MarginBalance",
                "initial": initial,
                "maintenance": maintenance,
                "currency": code,
                "instrument_id": instrument,
            }
            for code, initial, maintenance, instrument in margins
        ],
        "reported": True,
        "info": {},
        "event_id": new_event_id(),
        "ts_event": ts,
        "ts_init": ts,
    }
    state = SERIALIZER.from_map(data)
    assert isinstance(state, AccountState)
    return state


# -- position events -------------------------------------------------------------------------


def position_event(
    cls: type[PositionEvent], position: Position, *, position_id: str | None = None, **overrides: Any
) -> PositionEvent:
    """The event a node would publish about `position` right now (fields overridable)."""
    last = position.last_event
    ts = next_ts()
    fields: dict[str, Any] = {
        "trader_id": position.trader_id,
        "strategy_id": position.strategy_id,
        "instrument_id": position.instrument_id,
        "position_id": PositionId(position_id) if position_id else position.id,
        "account_id": position.account_id,
        "opening_order_id": position.opening_order_id,
        "entry": position.entry,
        "side": position.side,
        "signed_qty": position.signed_qty,
        "quantity": position.quantity,
        "peak_qty": position.peak_qty,
        "last_qty": last.last_qty,
        "last_px": last.last_px,
        "currency": position.quote_currency,
        "avg_px_open": position.avg_px_open,
        "realized_pnl": position.realized_pnl,
        "event_id": new_event_id(),
        "ts_init": ts,
    }
    if cls is PositionOpened:
        fields.update(duration_ns=0, ts_event=last.ts_event)
    elif cls is PositionChanged:
        fields.update(
            avg_px_close=position.avg_px_close,
            realized_return=position.realized_return,
            unrealized_pnl=None,
            ts_opened=position.ts_opened,
            ts_event=last.ts_event,
        )
    elif cls is PositionClosed:
        fields.update(
            closing_order_id=position.closing_order_id,
            avg_px_close=position.avg_px_close,
            realized_return=position.realized_return,
            ts_opened=position.ts_opened,
            ts_closed=position.ts_closed,
            duration_ns=position.duration_ns,
        )
    fields.update(overrides)
    return cls(**fields)
