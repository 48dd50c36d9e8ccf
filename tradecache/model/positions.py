"""Positions rebuilt from their fills (wire-format.md section 7).

`Position(instrument, fill)` opens a position from its first stored fill and `apply(fill)` adds
the next. The arithmetic runs in binary64 exactly as NautilusTrader does (averages, PnL), so
the string forms of the results match to the last digit.

`split_flip(position, fill, ...)` makes the two fills a node's execution engine stores for a
fill that takes an open position through zero (section 7.6).

One deliberate difference from NautilusTrader 1.221: a fill arriving at a FLAT position resets
it *before* the duplicate-trade check. The library checks first, so it cannot load the list it
stores when a flip splits into two equal halves (same trade id, side, price and quantity); the
reset forgets the held trade ids anyway, so checking after it is the consistent order.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from decimal import Context

from tradecache.errors import EventRejected, RejectReason
from tradecache.model.enums import OrderSide, PositionSide
from tradecache.model.events import OrderFilled
from tradecache.model.identifiers import (
    AccountId,
    ClientOrderId,
    InstrumentId,
    PositionId,
    StrategyId,
    TradeId,
    TraderId,
)
from tradecache.model.instruments import Instrument
from tradecache.model.values import (
    FIXED_PRECISION,
    Currency,
    Money,
    Quantity,
    round_half_away_from_zero,
    trusted_quantity,
)

# Prices below this are treated as zero by the inverse PnL formula (no division blow-up).
_INVERSE_MIN_PRICE = 1e-15
# Enum members as module globals: `Enum.MEMBER` costs ~75 ns a lookup, a global ~10.
_FLAT, _LONG, _SHORT = PositionSide.FLAT, PositionSide.LONG, PositionSide.SHORT
_BUY, _SELL = OrderSide.BUY, OrderSide.SELL


class Position:
    """A position: the fills held since it was last (re)opened, and what they add up to."""

    __slots__ = (
        "_fills_by_trade",
        "account_id",
        "avg_px_close",
        "avg_px_open",
        "buy_qty",
        "closing_order_id",
        "commissions_by_code",
        "duration_ns",
        "entry",
        "events",
        "id",
        "instrument",
        "instrument_id",
        "is_inverse",
        "multiplier",
        "opening_order_id",
        "peak_qty",
        "quantity",
        "quote_currency",
        "realized_pnl",
        "realized_return",
        "sell_qty",
        "settlement_currency",
        "side",
        "signed_qty",
        "size_precision",
        "strategy_id",
        "trade_ids",
        "trader_id",
        "ts_closed",
        "ts_init",
        "ts_last",
        "ts_opened",
    )

    def __init__(self, instrument: Instrument, fill: OrderFilled) -> None:
        if fill.position_id is None:
            raise ValueError("a position is opened by a fill that carries a position_id")
        if fill.instrument_id != instrument.id:
            raise ValueError(f"fill for {fill.instrument_id} cannot open a position in {instrument.id}")
        self.instrument = instrument
        self.trader_id: TraderId = fill.trader_id
        self.strategy_id: StrategyId = fill.strategy_id
        self.instrument_id: InstrumentId = fill.instrument_id
        self.id: PositionId = fill.position_id
        self.account_id: AccountId | None = fill.account_id
        self.size_precision: int = instrument.size_precision
        self.multiplier: float = instrument.multiplier.as_double()
        self.is_inverse: bool = instrument.is_inverse
        self.quote_currency: Currency = instrument.quote_currency
        self.settlement_currency: Currency = instrument.get_cost_currency()
        self.entry: OrderSide = fill.order_side
        self.side: PositionSide = PositionSide.LONG if fill.is_buy else PositionSide.SHORT
        self.signed_qty: float = 0.0
        self.quantity: Quantity = Quantity.zero(self.size_precision)
        self.peak_qty: Quantity = Quantity.zero(self.size_precision)
        self.buy_qty: Quantity = Quantity.zero(self.size_precision)
        self.sell_qty: Quantity = Quantity.zero(self.size_precision)
        self.avg_px_open: float = fill.last_px.as_double()
        self.avg_px_close: float = 0.0
        self.realized_return: float = 0.0
        self.realized_pnl: Money | None = None
        self.commissions_by_code: dict[str, Money] = {}
        self.opening_order_id: ClientOrderId = fill.client_order_id
        self.closing_order_id: ClientOrderId | None = None
        self.ts_init: int = fill.ts_init
        self.ts_opened: int = fill.ts_event
        self.ts_last: int = fill.ts_event
        self.ts_closed: int = 0
        self.duration_ns: int = 0
        self.events: list[OrderFilled] = []
        self.trade_ids: list[TradeId] = []
        # `events` by trade id, so a duplicate check looks at the fills of one trade, not all of
        # them: a position that never goes flat holds every fill, and scanning them per fill
        # made ingest quadratic in its length.
        self._fills_by_trade: dict[TradeId, list[OrderFilled]] = {}
        self.apply(fill)

    # -- derived ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.side != PositionSide.FLAT

    @property
    def is_closed(self) -> bool:
        return self.side == PositionSide.FLAT

    @property
    def is_long(self) -> bool:
        return self.side == PositionSide.LONG

    @property
    def is_short(self) -> bool:
        return self.side == PositionSide.SHORT

    @property
    def event_count(self) -> int:
        return len(self.events)

    @property
    def last_event(self) -> OrderFilled:
        return self.events[-1]

    @property
    def event_ids(self) -> set[str]:
        return {event.event_id for event in self.events}

    def commissions(self) -> list[Money]:
        """The commission paid so far in each currency.

        Raises:
            Nothing.
        """
        return list(self.commissions_by_code.values())

    def __repr__(self) -> str:
        return f"Position({self.id.value}, {self.side.name} {self.quantity} {self.instrument_id.value})"

    # -- applying fills -----------------------------------------------------------------

    def apply(self, fill: OrderFilled) -> None:
        """Apply the next stored fill. Raises `EventRejected` for a fill the position refuses.

        Raises:
            EventRejected: the fill is another position's, or a repeat of a trade the position holds.
        """
        if fill.position_id != self.id:
            raise EventRejected(
                RejectReason.INVALID_FIELD,
                f"fill for position '{fill.position_id}' applied to position '{self.id}'",
            )
        if self.side == _FLAT:
            self._reset(fill)
        elif self.is_duplicate(fill):
            raise EventRejected(
                RejectReason.INVALID_TRANSITION,
                f"position '{self.id}' already holds trade '{fill.trade_id}' with the same side, price and quantity",
            )
        self.events.append(fill)
        self.trade_ids.append(fill.trade_id)
        self._fills_by_trade.setdefault(fill.trade_id, []).append(fill)
        self._add_commission(fill.commission)
        self._apply_quantities(fill)

    def is_duplicate(self, fill: OrderFilled) -> bool:
        """Whether the position holds this trade already (same trade id, side, price and quantity).

        Raises:
            Nothing.
        """
        same_trade = self._fills_by_trade.get(fill.trade_id)
        if not same_trade:  # the usual case: no generator to build
            return False
        return any(
            held.trade_id == fill.trade_id
            and held.order_side == fill.order_side
            and held.last_px == fill.last_px
            and held.last_qty == fill.last_qty
            for held in same_trade
        )

    def _reset(self, fill: OrderFilled) -> None:
        # Zeros built unchecked: `size_precision` passed the check when the position was opened.
        precision = self.size_precision
        self.events = []
        self.trade_ids = []
        self._fills_by_trade = {}
        self.buy_qty = trusted_quantity(0, precision)
        self.sell_qty = trusted_quantity(0, precision)
        self.commissions_by_code = {}
        self.opening_order_id = fill.client_order_id
        self.closing_order_id = None
        self.peak_qty = trusted_quantity(0, precision)
        self.ts_init = fill.ts_init
        self.ts_opened = fill.ts_event
        self.ts_closed = 0
        self.duration_ns = 0
        self.avg_px_open = float(fill.last_px.raw) / 1e16  # `as_double()`, in place
        self.avg_px_close = 0.0
        self.realized_return = 0.0
        self.realized_pnl = None

    def _add_commission(self, commission: Money) -> None:
        code = commission.currency.code
        previous = self.commissions_by_code.get(code)
        # `as_double()` in place: float(raw) / 1e16.
        total = (float(previous.raw) / 1e16 if previous is not None else 0.0) + float(commission.raw) / 1e16
        self.commissions_by_code[code] = Money.from_double_in(total, commission.currency)

    def _apply_quantities(self, fill: OrderFilled) -> None:
        # Doubles as `as_double()` makes them (float(raw) / 1e16), in place; the quantities are
        # built unchecked: sums of non-negative quantities at a fill's precision, and the size
        # precision passed the check when the position was opened.
        settle = self.settlement_currency
        last_qty = fill.last_qty
        commission = fill.commission
        price = float(fill.last_px.raw) / 1e16
        qty = float(last_qty.raw) / 1e16
        pnl = -(float(commission.raw) / 1e16) if commission.currency.code == settle.code else 0.0
        signed_qty = self.signed_qty
        if fill.order_side == _BUY:
            if signed_qty > 0.0:
                self.avg_px_open = self._average_open(price, qty)
            elif signed_qty < 0.0:
                self.avg_px_close = self._average_close(price, qty, float(self.buy_qty.raw) / 1e16)
                self.realized_return = self._return()
                pnl += self._pnl(price, qty)
            self.buy_qty = trusted_quantity(self.buy_qty.raw + last_qty.raw, last_qty.precision)
            self.signed_qty = round(signed_qty + qty, self.size_precision)
        else:
            if signed_qty < 0.0:
                self.avg_px_open = self._average_open(price, qty)
            elif signed_qty > 0.0:
                self.avg_px_close = self._average_close(price, qty, float(self.sell_qty.raw) / 1e16)
                self.realized_return = self._return()
                pnl += self._pnl(price, qty)
            self.sell_qty = trusted_quantity(self.sell_qty.raw + last_qty.raw, last_qty.precision)
            self.signed_qty = round(signed_qty - qty, self.size_precision)
        realized = self.realized_pnl
        if realized is None:
            self.realized_pnl = Money.from_double_in(pnl, settle)
        else:
            self.realized_pnl = Money.from_double_in(float(realized.raw) / 1e16 + pnl, settle)
        precision = self.size_precision
        units = round_half_away_from_zero(abs(self.signed_qty) * 10.0**precision)  # `Quantity.from_double`
        quantity = self.quantity = trusted_quantity(units * 10 ** (FIXED_PRECISION - precision), precision)
        if quantity.raw > self.peak_qty.raw:
            self.peak_qty = quantity
        self._update_side(fill)

    def _average_open(self, price: float, qty: float) -> float:
        held = float(self.quantity.raw) / 1e16
        return (self.avg_px_open * held + price * qty) / (held + qty)

    def _average_close(self, price: float, qty: float, closed_before: float) -> float:
        if self.avg_px_close == 0.0:
            return price
        return (self.avg_px_close * closed_before + price * qty) / (closed_before + qty)

    def _points(self, close: float) -> float:
        return close - self.avg_px_open if self.side == _LONG else self.avg_px_open - close

    def _return(self) -> float:
        return 0.0 if self.avg_px_open == 0.0 else self._points(self.avg_px_close) / self.avg_px_open

    def _pnl(self, close: float, qty: float) -> float:
        """PnL of closing `qty` at `close`, against the side held before this fill."""
        closing = min(qty, abs(self.signed_qty))
        opened = self.avg_px_open
        if not self.is_inverse:
            return closing * self.multiplier * self._points(close)
        if opened < _INVERSE_MIN_PRICE or close < _INVERSE_MIN_PRICE:
            return 0.0
        if self.side == _LONG:
            return closing * self.multiplier * (1.0 / opened - 1.0 / close)
        return closing * self.multiplier * (1.0 / close - 1.0 / opened)

    def _update_side(self, fill: OrderFilled) -> None:
        self.ts_last = fill.ts_event
        if self.signed_qty > 0.0:
            self.side, self.entry = _LONG, _BUY
        elif self.signed_qty < 0.0:
            self.side, self.entry = _SHORT, _SELL
        else:
            self.side = _FLAT
            self.closing_order_id = fill.client_order_id
            self.ts_closed = fill.ts_event
            self.duration_ns = self.ts_closed - self.ts_opened


def replay_position(instrument: Instrument, fills: Iterable[OrderFilled]) -> Position:
    """Rebuild a position from its stored fills, oldest first."""
    iterator = iter(fills)
    first = next(iterator, None)
    if first is None:
        raise ValueError("a position needs at least one fill")
    position = Position(instrument, first)
    for fill in iterator:
        position.apply(fill)
    return position


# ---------------------------------------------------------------------------------------------
# Splitting a fill that flips a position (wire-format.md section 7.6).

# Namespace of the opening half's event id: a UUID5-style hash of the fill's event id.
_SPLIT_NAMESPACE = uuid.UUID("6f1c7d4e-2b7a-4c55-9a0e-5d3b8f2e9c41")
_DECIMAL = Context()  # 28 significant digits, round-half-even: what the library computes with


def derive_opening_event_id(fill_event_id: str) -> str:
    """A deterministic event id for the opening half of a split fill.

    Hashed from the fill's own event id (as UUID5 does) so re-processing the same fill writes the
    same bytes, then stamped with the version-4 and RFC 4122 variant bits so that it reads as the
    random UUID4 a live node would have drawn.
    """
    digest = bytearray(uuid.uuid5(_SPLIT_NAMESPACE, fill_event_id).bytes)
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def flips(position: Position | None, fill: OrderFilled) -> bool:
    """True when the node would split `fill`: it takes the open `position` through zero."""
    if position is None:
        return False
    side = position.side
    if side == _FLAT:  # not open
        return False
    against = (side == _LONG and fill.order_side == _SELL) or (side == _SHORT and fill.order_side == _BUY)
    return against and fill.last_qty.raw > position.quantity.raw


def split_commission(commission: Money, closing: Quantity, total: Quantity) -> tuple[Money, Money]:
    """Split a commission pro rata as the library does: decimal ratio, then binary64, then half-away."""
    ratio = _DECIMAL.divide(closing.as_decimal(), total.as_decimal())
    share = _DECIMAL.multiply(commission.as_decimal(), ratio)
    precision = commission.precision
    units = round_half_away_from_zero(float(share) * 10.0**precision)
    first = Money(units * 10 ** (FIXED_PRECISION - precision), precision, commission.currency)
    second = Money(commission.raw - first.raw, precision, commission.currency)
    return first, second


def split_flip(
    position: Position,
    fill: OrderFilled,
    *,
    opening_position_id: PositionId | None = None,
) -> tuple[OrderFilled, OrderFilled | None]:
    """The closing and opening fills stored for a fill that flips `position` (see `flips`).

    The opening half is None when `last_qty - quantity` rounds to zero at the size precision.
    `opening_position_id` is the new side's id when the node gave it one (HEDGING `P-` ids).
    """
    held = position.quantity
    size_precision = position.size_precision
    rest_units = round_half_away_from_zero(
        Quantity(fill.last_qty.raw - held.raw, fill.last_qty.precision).as_double() * 10.0**size_precision
    )
    closing_commission, opening_commission = split_commission(fill.commission, held, fill.last_qty)
    closing = dataclasses.replace(fill, last_qty=held, commission=closing_commission, info={}, reconciliation=False)
    if rest_units == 0:
        return closing, None
    opening = dataclasses.replace(
        fill,
        last_qty=Quantity(rest_units * 10 ** (FIXED_PRECISION - size_precision), size_precision),
        commission=opening_commission,
        event_id=derive_opening_event_id(fill.event_id),
        position_id=opening_position_id or fill.position_id,
        info={},
        reconciliation=False,
    )
    return closing, opening


__all__ = [
    "Position",
    "derive_opening_event_id",
    "flips",
    "replay_position",
    "split_commission",
    "split_flip",
]
