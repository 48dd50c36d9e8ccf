"""A demo feed: what a small trading session publishes, built with the model.

Used by `tradecache dev`: currencies and an instrument, a margin account, a BUY market order
filled in two parts (a position opens), a SELL market order that closes it, account updates
after each fill, and the SubmitOrder commands. Ids are fresh and timestamps are now, so running
it twice gives two sessions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

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
from tradecache.model.events import (
    AccountBalance,
    AccountState,
    MarginBalance,
    OrderAccepted,
    OrderFilled,
    OrderInitialized,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    SubmitOrder,
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
from tradecache.model.instruments import CurrencyPair
from tradecache.model.messages import Kind, Message
from tradecache.model.positions import Position
from tradecache.model.values import Currency, Money, Price, Quantity
from tradecache.serialization.msgpack import MsgPackSerializer

EUR_USD: dict[str, Any] = {
    "type": "CurrencyPair", "id": "EUR/USD.SIM", "raw_symbol": "EUR/USD", "base_currency": "EUR",
    "quote_currency": "USD", "price_precision": 5, "price_increment": "0.00001", "size_precision": 0,
    "size_increment": "1", "multiplier": "1", "lot_size": "1000", "max_quantity": "10000000",
    "min_quantity": "1000", "max_notional": None, "min_notional": None, "max_price": None, "min_price": None,
    "margin_init": "0.03", "margin_maint": "0.03", "maker_fee": "0.00002", "taker_fee": "0.00002",
    "ts_event": "0", "ts_init": "0", "tick_scheme_name": "FOREX_5DECIMAL", "info": None,
}  # fmt: skip


@dataclass
class DemoFeed:
    """The messages of a demo session, in publication order, with the ids worth loading."""

    trader_id: str
    messages: list[tuple[Kind, Message]] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    position_id: str = ""
    account_id: str = ""

    def payloads(self, serializer: MsgPackSerializer) -> list[tuple[Kind, bytes]]:
        return [(kind, serializer.serialize(message)) for kind, message in self.messages]


class _Clock:
    def __init__(self) -> None:
        self.now = time.time_ns()

    def tick(self) -> int:
        self.now += 1_000_000 + (self.now % 997)
        return self.now


def build_demo_feed(trader_id: str = "DEV-001") -> DemoFeed:
    clock = _Clock()
    feed = DemoFeed(trader_id)
    trader, strategy = TraderId(trader_id), StrategyId("Demo-001")
    account, instrument_id = AccountId("SIM-001"), InstrumentId("EUR/USD.SIM")
    usd = Currency.from_str("USD")
    feed.account_id = account.value
    session = uuid.uuid4().hex[:6]
    position_id = PositionId(f"P-{session}-001")
    feed.position_id = position_id.value
    for code in ("USD", "EUR"):
        feed.messages.append((Kind.CURRENCY, Currency.from_str(code)))
    instrument = CurrencyPair({**EUR_USD, "ts_event": str(clock.tick()), "ts_init": str(clock.now)})
    feed.messages.append((Kind.INSTRUMENT, instrument))
    balance = 100_000_00  # cents
    feed.messages.append((Kind.ACCOUNT, _account_state(account, balance, 0, clock)))
    position: Position | None = None
    trade = 0
    for number, (side, quantity, fills) in enumerate(
        [
            (OrderSide.BUY, 100_000, [(60_000, "1.10012"), (40_000, "1.10015")]),
            (OrderSide.SELL, 100_000, [(100_000, "1.10071")]),
        ],
        start=1,
    ):
        coid = ClientOrderId(f"O-{session}-{number}")
        feed.order_ids.append(coid.value)
        head: dict[str, Any] = {"trader_id": trader, "strategy_id": strategy, "instrument_id": instrument_id,
                                "client_order_id": coid}  # fmt: skip
        ts = clock.tick()
        init = OrderInitialized(
            **head, order_side=side, order_type=OrderType.MARKET, quantity=Quantity.from_str(str(quantity)),
            time_in_force=TimeInForce.GTC, post_only=False, reduce_only=side == OrderSide.SELL,
            quote_quantity=False, options={}, emulation_trigger=TriggerType.NO_TRIGGER,
            contingency_type=ContingencyType.NO_CONTINGENCY, event_id=str(uuid.uuid4()), ts_event=ts, ts_init=ts,
        )  # fmt: skip
        feed.messages.append((Kind.COMMAND, SubmitOrder(
            client_id=None, trader_id=trader, strategy_id=strategy, order=init,
            position_id=position_id if side == OrderSide.SELL else None, command_id=str(uuid.uuid4()),
            ts_init=clock.tick(),
        )))  # fmt: skip
        feed.messages.append((Kind.ORDER, init))
        submitted = OrderSubmitted(
            **head, account_id=account, event_id=str(uuid.uuid4()), ts_event=clock.tick(), ts_init=clock.now
        )
        feed.messages.append((Kind.ORDER, submitted))
        venue = VenueOrderId(str(700_000 + number))
        feed.messages.append((Kind.ORDER, OrderAccepted(
            **head, venue_order_id=venue, account_id=account, event_id=str(uuid.uuid4()), ts_event=clock.tick(),
            ts_init=clock.now)))  # fmt: skip
        for quantity_filled, price in fills:
            trade += 1
            fill = OrderFilled(
                **head, venue_order_id=venue, account_id=account, trade_id=TradeId(f"{session}-{trade}"),
                position_id=position_id, order_side=side, order_type=OrderType.MARKET,
                last_qty=Quantity.from_str(str(quantity_filled)), last_px=Price.from_str(price), currency=usd,
                commission=Money.parse(f"{quantity_filled * 2 / 100_000:.2f} USD"), liquidity_side=LiquiditySide.TAKER,
                event_id=str(uuid.uuid4()), ts_event=clock.tick(), ts_init=clock.now,
            )  # fmt: skip
            feed.messages.append((Kind.ORDER, fill))
            if position is None:
                position = Position(instrument, fill)
            else:
                position.apply(fill)
            feed.messages.append((Kind.POSITION, _position_event(position, fill, clock)))
            realized = position.realized_pnl.raw // 10**14 if position.realized_pnl is not None else 0
            locked = 3_300_00 if position.is_open else 0
            feed.messages.append((Kind.ACCOUNT, _account_state(account, balance + realized, locked, clock)))
    return feed


def _account_state(account: AccountId, total_cents: int, locked_cents: int, clock: _Clock) -> AccountState:
    usd = Currency.from_str("USD")

    def money(cents: int) -> Money:
        return Money(cents * 10**14, 2, usd)

    margins = (MarginBalance(money(locked_cents), money(locked_cents * 8 // 10), InstrumentId("EUR/USD.SIM")),)
    return AccountState(
        account_id=account, account_type=AccountType.MARGIN, base_currency=usd,
        balances=(AccountBalance(money(total_cents), money(locked_cents), money(total_cents - locked_cents)),),
        margins=margins if locked_cents else (), reported=True, info={}, event_id=str(uuid.uuid4()),
        ts_event=clock.tick(), ts_init=clock.now,
    )  # fmt: skip


def _position_event(position: Position, fill: OrderFilled, clock: _Clock) -> PositionOpened | PositionClosed:
    common: dict[str, Any] = {
        "trader_id": position.trader_id, "strategy_id": position.strategy_id, "instrument_id": position.instrument_id,
        "position_id": position.id, "account_id": fill.account_id, "opening_order_id": position.opening_order_id,
        "entry": position.entry, "side": position.side, "signed_qty": position.signed_qty,
        "quantity": position.quantity, "peak_qty": position.peak_qty, "last_qty": fill.last_qty,
        "last_px": fill.last_px, "currency": position.quote_currency, "avg_px_open": position.avg_px_open,
        "realized_pnl": position.realized_pnl, "event_id": str(uuid.uuid4()), "ts_init": clock.tick(),
    }  # fmt: skip
    if position.side == PositionSide.FLAT:
        return PositionClosed(
            **common, closing_order_id=position.closing_order_id, avg_px_close=position.avg_px_close,
            realized_return=position.realized_return, ts_opened=position.ts_opened, ts_closed=position.ts_closed,
            duration_ns=position.duration_ns,
        )  # fmt: skip
    return PositionOpened(**common, duration_ns=0, ts_event=fill.ts_event)


__all__ = ["DemoFeed", "build_demo_feed"]
