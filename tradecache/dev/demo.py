"""A demo feed: what a small trading session publishes, built with the model.

Used by `tradecache dev` and by tests. One NETTING position in EUR/USD goes through its whole life:
1. BUY 100,000 MARKET, filled 60,000 then 40,000: the position opens (PositionOpened), then grows
   (PositionChanged);
2. SELL 50,000 LIMIT, filled: the position is reduced (PositionChanged);
3. SELL 150,000 MARKET, filled: the position flips from LONG 50,000 to SHORT 100,000; as a node's
   execution engine does, the fill is split in a closing and an opening half, and the node
   publishes PositionClosed then PositionOpened (same position id: NETTING);
4. BUY 100,000 MARKET, filled: the short is closed (PositionClosed);
5. BUY 5,000,000 LIMIT: rejected by the venue for lack of margin (OrderRejected), no fill.
Before them come the currencies, the instrument and the margin account's first AccountState; after
each fill an AccountState books the realized PnL and the margin locked. Each order has its
SubmitOrder command. Position events are computed with the same model the sidecar checks them with,
so they agree with the stored fills (no divergence). Order ids are fresh and timestamps are now, so
two runs give two sessions (the position, closed at the end of each, is reopened by the next).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

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
    OrderRejected,
    OrderSubmitted,
    PositionChanged,
    PositionClosed,
    PositionEvent,
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
from tradecache.model.positions import Position, flips, split_flip
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
STARTING_BALANCE_CENTS: Final = 100_000_00
MARGIN_RATE: Final = 0.03
_CENTS_RAW: Final = 10**14  # Money raw units per cent (fixed point with 16 decimals)


@dataclass(frozen=True)
class Step:
    """One order of the session: what is sent and how the venue answers."""

    side: OrderSide
    order_type: OrderType
    quantity: int
    fills: tuple[tuple[int, str], ...] = ()  # (quantity, price) of each fill
    price: str | None = None  # LIMIT orders
    rejected: str | None = None  # the venue's reason, for a rejected order


SESSION: Final = (
    Step(OrderSide.BUY, OrderType.MARKET, 100_000, ((60_000, "1.10012"), (40_000, "1.10015"))),
    Step(OrderSide.SELL, OrderType.LIMIT, 50_000, ((50_000, "1.10060"),), price="1.10060"),
    Step(OrderSide.SELL, OrderType.MARKET, 150_000, ((150_000, "1.10041"),)),
    Step(OrderSide.BUY, OrderType.MARKET, 100_000, ((100_000, "1.09987"),)),
    Step(OrderSide.BUY, OrderType.LIMIT, 5_000_000, price="1.09900",
         rejected="insufficient margin for 5,000,000 EUR/USD: 164,850.00 USD needed"),
)  # fmt: skip


@dataclass
class DemoFeed:
    """The messages of a demo session, in publication order, with the ids worth loading."""

    trader_id: str
    messages: list[tuple[Kind, Message]] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    rejected_order_id: str = ""
    position_id: str = ""
    account_id: str = ""

    def payloads(self, serializer: MsgPackSerializer) -> list[tuple[Kind, bytes]]:
        return [(kind, serializer.serialize(message)) for kind, message in self.messages]

    def count(self, type_name: str) -> int:
        return sum(1 for _, message in self.messages if type(message).__name__ == type_name)


class _Clock:
    def __init__(self) -> None:
        self.now = time.time_ns()

    def tick(self) -> int:
        self.now += 1_000_000 + (self.now % 997)
        return self.now


def _event_id() -> str:
    return str(uuid.uuid4())


class _Session:
    """Builds the feed: orders, fills, the position they make and the account they move."""

    def __init__(self, trader_id: str) -> None:
        self.clock = _Clock()
        self.feed = DemoFeed(trader_id)
        self.trader, self.strategy = TraderId(trader_id), StrategyId("Demo-001")
        self.account, self.instrument_id = AccountId("SIM-001"), InstrumentId("EUR/USD.SIM")
        self.usd = Currency.from_str("USD")
        self.tag = uuid.uuid4().hex[:6]
        # NETTING: one position per instrument and strategy, named as a node names it; it survives
        # being closed and is reopened by the next session's first fill.
        self.position_id = PositionId(f"{self.instrument_id.value}-{self.strategy.value}")
        self.instrument = CurrencyPair({**EUR_USD, "ts_event": str(self.clock.tick()), "ts_init": str(self.clock.now)})
        self.position: Position | None = None
        self.realized_cents = 0  # realized PnL (commissions included) booked so far
        self.trades = 0
        self.feed.account_id, self.feed.position_id = self.account.value, self.position_id.value

    def add(self, kind: Kind, message: Message) -> None:
        self.feed.messages.append((kind, message))

    def start(self) -> None:
        for code in ("USD", "EUR"):
            self.add(Kind.CURRENCY, Currency.from_str(code))
        self.add(Kind.INSTRUMENT, self.instrument)
        self.add(Kind.ACCOUNT, self.account_state())

    def order(self, number: int, step: Step) -> None:
        coid = ClientOrderId(f"O-{self.tag}-{number}")
        self.feed.order_ids.append(coid.value)
        head: dict[str, Any] = {"trader_id": self.trader, "strategy_id": self.strategy,
                                "instrument_id": self.instrument_id, "client_order_id": coid}  # fmt: skip
        options: dict[str, Any] = {}
        if step.order_type == OrderType.LIMIT:
            options = {"price": step.price, "display_qty": None, "expire_time_ns": 0}
        ts = self.clock.tick()
        init = OrderInitialized(
            **head, order_side=step.side, order_type=step.order_type, quantity=Quantity.from_str(str(step.quantity)),
            time_in_force=TimeInForce.GTC, post_only=False, reduce_only=False, quote_quantity=False,
            options=options, emulation_trigger=TriggerType.NO_TRIGGER,
            contingency_type=ContingencyType.NO_CONTINGENCY, event_id=_event_id(), ts_event=ts, ts_init=ts,
        )  # fmt: skip
        self.add(Kind.COMMAND, SubmitOrder(
            client_id=None, trader_id=self.trader, strategy_id=self.strategy, order=init,
            position_id=self.position_id if self.position is not None else None, command_id=_event_id(),
            ts_init=self.clock.tick(),
        ))  # fmt: skip
        self.add(Kind.ORDER, init)
        self.add(Kind.ORDER, OrderSubmitted(
            **head, account_id=self.account, event_id=_event_id(), ts_event=self.clock.tick(), ts_init=self.clock.now
        ))  # fmt: skip
        if step.rejected is not None:
            self.feed.rejected_order_id = coid.value
            self.add(Kind.ORDER, OrderRejected(
                **head, account_id=self.account, reason=step.rejected, event_id=_event_id(),
                ts_event=self.clock.tick(), ts_init=self.clock.now,
            ))  # fmt: skip
            return
        venue = VenueOrderId(str(700_000 + number))
        self.add(Kind.ORDER, OrderAccepted(
            **head, venue_order_id=venue, account_id=self.account, event_id=_event_id(), ts_event=self.clock.tick(),
            ts_init=self.clock.now,
        ))  # fmt: skip
        for quantity, price in step.fills:
            self.trades += 1
            fill = OrderFilled(
                **head, venue_order_id=venue, account_id=self.account, trade_id=TradeId(f"{self.tag}-{self.trades}"),
                position_id=self.position_id, order_side=step.side, order_type=step.order_type,
                last_qty=Quantity.from_str(str(quantity)), last_px=Price.from_str(price), currency=self.usd,
                commission=Money.parse(f"{quantity * 2 / 100_000:.2f} USD"), liquidity_side=LiquiditySide.TAKER,
                event_id=_event_id(), ts_event=self.clock.tick(), ts_init=self.clock.now,
            )  # fmt: skip
            self.add(Kind.ORDER, fill)
            self.fill(fill)
            self.add(Kind.ACCOUNT, self.account_state())

    def fill(self, fill: OrderFilled) -> None:
        """Apply `fill` to the position and publish what the node would: a flip is split in two halves."""
        if self.position is not None and flips(self.position, fill):
            closing, opening = split_flip(self.position, fill)
            self.book(closing)
            if opening is not None:
                self.book(opening)
        else:
            self.book(fill)

    def book(self, fill: OrderFilled) -> None:
        """One (half-)fill through the position: the realized PnL it adds and the node's position event."""
        position = self.position
        reopens = position is None or position.is_closed
        before = 0 if reopens or position is None else _cents(position.realized_pnl)
        if position is None:
            position = self.position = Position(self.instrument, fill)
        else:
            position.apply(fill)
        self.realized_cents += _cents(position.realized_pnl) - before
        event_type: type[PositionEvent]
        if position.side == PositionSide.FLAT:
            event_type = PositionClosed
        else:
            event_type = PositionOpened if reopens else PositionChanged
        self.add(Kind.POSITION, position_event(event_type, position, fill, self.clock.tick()))

    def account_state(self) -> AccountState:
        total = STARTING_BALANCE_CENTS + self.realized_cents
        position = self.position
        locked = 0
        if position is not None and position.is_open:
            locked = round(position.quantity.as_double() * position.avg_px_open * MARGIN_RATE * 100)

        def usd(cents: int) -> Money:
            return Money(cents * _CENTS_RAW, 2, self.usd)

        margins = (MarginBalance(usd(locked), usd(locked), self.instrument_id),) if locked else ()
        return AccountState(
            account_id=self.account, account_type=AccountType.MARGIN, base_currency=self.usd,
            balances=(AccountBalance(usd(total), usd(locked), usd(total - locked)),), margins=margins,
            reported=True, info={}, event_id=_event_id(), ts_event=self.clock.tick(), ts_init=self.clock.now,
        )  # fmt: skip


def _cents(value: Money | None) -> int:
    return 0 if value is None else value.raw // _CENTS_RAW


def position_event(event_type: type[PositionEvent], position: Position, fill: OrderFilled, ts: int) -> PositionEvent:
    """The event a node publishes about `position` right after `fill` (the fill it applied last)."""
    common: dict[str, Any] = {
        "trader_id": position.trader_id, "strategy_id": position.strategy_id, "instrument_id": position.instrument_id,
        "position_id": position.id, "account_id": fill.account_id, "opening_order_id": position.opening_order_id,
        "entry": position.entry, "side": position.side, "signed_qty": position.signed_qty,
        "quantity": position.quantity, "peak_qty": position.peak_qty, "last_qty": fill.last_qty,
        "last_px": fill.last_px, "currency": position.quote_currency, "avg_px_open": position.avg_px_open,
        "realized_pnl": position.realized_pnl, "event_id": _event_id(), "ts_init": ts,
    }  # fmt: skip
    if event_type is PositionClosed:
        return PositionClosed(
            **common, closing_order_id=position.closing_order_id, avg_px_close=position.avg_px_close,
            realized_return=position.realized_return, ts_opened=position.ts_opened, ts_closed=position.ts_closed,
            duration_ns=position.duration_ns,
        )  # fmt: skip
    if event_type is PositionChanged:
        return PositionChanged(
            **common, avg_px_close=position.avg_px_close, realized_return=position.realized_return,
            unrealized_pnl=None, ts_opened=position.ts_opened, ts_event=fill.ts_event,
        )  # fmt: skip
    return PositionOpened(**common, duration_ns=0, ts_event=fill.ts_event)


def build_demo_feed(trader_id: str = "DEV-001") -> DemoFeed:
    session = _Session(trader_id)
    session.start()
    for number, step in enumerate(SESSION, start=1):
        session.order(number, step)
    return session.feed


__all__ = ["SESSION", "DemoFeed", "Step", "build_demo_feed", "position_event"]
