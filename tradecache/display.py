"""Readable tables of orders, positions and accounts, for people: `tradecache load -o table` and
the banner of `tradecache dev`.

The JSON replies stay the exact form (SPEC section 3); these views are for reading, so they round:
- times are ISO-8601 in UTC with their nanoseconds (`2026-11-27T10:15:30.123456789Z`), `-` for none;
- prices, quantities and averages show the instrument's precision (an average is rounded half away
  from zero to it, as NautilusTrader rounds a double into a price; the JSON keeps the full double);
  without the instrument, a price shows the precision its order or fills were published with;
- money shows its currency (`-12.34 USD`); enums their names.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Final

from tradecache.model.accounts import Account
from tradecache.model.events import OrderFilled
from tradecache.model.instruments import Instrument
from tradecache.model.orders import Order
from tradecache.model.positions import Position
from tradecache.model.values import Money, Price

NONE: Final = "-"
_NS_PER_SECOND: Final = 1_000_000_000


def iso_time(ns: int) -> str:
    """Nanoseconds since the epoch as ISO-8601 UTC with all nine decimals; `-` for 0 (never)."""
    if ns <= 0:
        return NONE
    seconds, nanos = divmod(ns, _NS_PER_SECOND)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def average(value: float, precision: int | None) -> str:
    """A double average (avg_px, avg_px_open, ...) at `precision`; `-` while there is none (0.0)."""
    if value == 0.0:
        return NONE
    if precision is None:
        return repr(value)
    return str(Price.from_double(value, precision))


def money(value: Money | None) -> str:
    return NONE if value is None else str(value)


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[str] = frozenset()) -> str:
    """A plain-text table: columns padded to their widest cell, `numeric` ones right-aligned."""
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
              for i in range(len(headers))]  # fmt: skip

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if header in numeric else cell.ljust(width)
            for header, cell, width in zip(headers, cells, widths, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


# -- orders -----------------------------------------------------------------------------------


ORDER_HEADERS: Final = ("ORDER", "INSTRUMENT", "SIDE", "TYPE", "QTY", "FILLED", "PRICE", "TRIGGER", "AVG PX",
                        "STATUS", "UPDATED")  # fmt: skip
_ORDER_NUMERIC: Final = frozenset({"QTY", "FILLED", "PRICE", "TRIGGER", "AVG PX"})


def order_price_precision(order: Order, instruments: Mapping[str, Instrument]) -> int | None:
    """The instrument's price precision, else the one the order's prices or fills were published with."""
    instrument = instruments.get(order.instrument_id.value)
    if instrument is not None:
        return instrument.price_precision
    prices = [order.price if order.has_price else None, order.trigger_price if order.has_trigger_price else None]
    for price in prices:
        if price is not None:
            return price.precision
    fills = [event for event in order.events if isinstance(event, OrderFilled)]
    return fills[-1].last_px.precision if fills else None


def order_row(order: Order, instruments: Mapping[str, Instrument]) -> list[str]:
    precision = order_price_precision(order, instruments)
    price = order.price if order.has_price else None
    trigger = order.trigger_price if order.has_trigger_price else None
    return [
        order.client_order_id.value,
        order.instrument_id.value,
        str(order.side),
        str(order.order_type),
        str(order.quantity),
        str(order.filled_qty),
        NONE if price is None else str(price),
        NONE if trigger is None else str(trigger),
        average(order.avg_px, precision),
        str(order.status),
        iso_time(order.ts_last),
    ]


def orders_table(orders: Mapping[str, Order], instruments: Mapping[str, Instrument]) -> str:
    rows = [order_row(order, instruments) for _, order in sorted(orders.items())]
    return render(ORDER_HEADERS, rows, _ORDER_NUMERIC)


# -- positions --------------------------------------------------------------------------------


POSITION_HEADERS: Final = ("POSITION", "INSTRUMENT", "SIDE", "QTY", "AVG OPEN", "AVG CLOSE", "REALIZED PNL",
                           "COMMISSIONS", "OPENED", "CLOSED")  # fmt: skip
_POSITION_NUMERIC: Final = frozenset({"QTY", "AVG OPEN", "AVG CLOSE", "REALIZED PNL"})


def position_row(position: Position) -> list[str]:
    precision = position.instrument.price_precision
    commissions = ", ".join(str(commission) for commission in position.commissions()) or NONE
    return [
        position.id.value,
        position.instrument_id.value,
        str(position.side),
        str(position.quantity),
        average(position.avg_px_open, precision),
        average(position.avg_px_close, precision),
        money(position.realized_pnl),
        commissions,
        iso_time(position.ts_opened),
        iso_time(position.ts_closed) if position.is_closed else NONE,
    ]


def positions_table(positions: Mapping[str, Position]) -> str:
    rows = [position_row(position) for _, position in sorted(positions.items())]
    return render(POSITION_HEADERS, rows, _POSITION_NUMERIC)


# -- accounts ---------------------------------------------------------------------------------


ACCOUNT_HEADERS: Final = ("ACCOUNT", "TYPE", "TOTAL", "LOCKED", "FREE", "UPDATED", "EVENTS")
_ACCOUNT_NUMERIC: Final = frozenset({"TOTAL", "LOCKED", "FREE", "EVENTS"})


def account_rows(account: Account) -> list[list[str]]:
    """One row per currency balance."""
    updated = iso_time(account.last_event.ts_event)
    return [
        [account.id.value, str(account.account_type), money(balance.total), money(balance.locked),
         money(balance.free), updated, str(account.event_count)]
        for _, balance in sorted(account.balances().items(), key=lambda item: item[0].code)
    ]  # fmt: skip


def accounts_table(accounts: Mapping[str, Account]) -> str:
    rows = [row for _, account in sorted(accounts.items()) for row in account_rows(account)]
    return render(ACCOUNT_HEADERS, rows, _ACCOUNT_NUMERIC)


__all__ = [
    "NONE",
    "account_rows",
    "accounts_table",
    "average",
    "iso_time",
    "money",
    "order_price_precision",
    "order_row",
    "orders_table",
    "position_row",
    "positions_table",
    "render",
]
