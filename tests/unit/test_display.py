"""The readable tables of `tradecache load -o table` and `tradecache dev`, checked on a vector scenario
(a LIMIT order partly filled then canceled, its open position, a multi-currency cash account)."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from tests.vectors.scenarios import Scenario, replay_into_store, scenario_paths
from tradecache.display import accounts_table, average, iso_time, orders_table, positions_table, render
from tradecache.model import Collection, replay_account, replay_order, replay_position
from tradecache.model.accounts import Account
from tradecache.model.instruments import Instrument
from tradecache.model.orders import Order
from tradecache.model.positions import Position

SCENARIO = "limit_partial_fills_then_cancel"
ORDER_ID, POSITION_ID, ACCOUNT_ID = "O-20251127-170105-311-004-1", "P-20251127-170105-311-004-1", "BINANCE-0917"


def columns(table: str) -> list[dict[str, str]]:
    """The rows of a rendered table as {header: cell}; cells never contain two spaces in a row."""
    header, *lines = table.splitlines()
    names = [name for name in header.split("  ") if name.strip()]
    return [dict(zip([n.strip() for n in names], [c.strip() for c in line.split("  ") if c.strip()], strict=True))
            for line in lines]  # fmt: skip


class State(NamedTuple):
    orders: dict[str, Order]
    positions: dict[str, Position]
    accounts: dict[str, Account]
    instruments: dict[str, Instrument]


@pytest.fixture(scope="module")
def state() -> State:
    scenario = Scenario.load(next(p for p in scenario_paths() if p.stem == SCENARIO))
    store = replay_into_store(scenario).store
    instruments = {}
    for key in store.keys(Collection.INSTRUMENTS):
        instrument = store.serializer.deserialize(store.values[(Collection.INSTRUMENTS, key)])
        assert isinstance(instrument, Instrument)
        instruments[key] = instrument
    orders = {k: replay_order(store.decoded_list(Collection.ORDERS, k)) for k in store.keys(Collection.ORDERS)}
    positions = {}
    for key in store.keys(Collection.POSITIONS):
        fills = store.decoded_list(Collection.POSITIONS, key)
        positions[key] = replay_position(instruments[fills[0].instrument_id.value], fills)
    accounts = {k: replay_account(store.decoded_list(Collection.ACCOUNTS, k)) for k in store.keys(Collection.ACCOUNTS)}
    return State(orders, positions, accounts, instruments)


def test_an_order_shows_iso_time_and_prices_at_the_instruments_precision(state: State) -> None:
    (row,) = columns(orders_table(state.orders, state.instruments))
    assert row == {
        "ORDER": ORDER_ID, "INSTRUMENT": "BTCUSDT.BINANCE", "SIDE": "BUY", "TYPE": "LIMIT", "QTY": "0.750000",
        "FILLED": "0.515000", "PRICE": "91250.00", "TRIGGER": "-",
        "AVG PX": "91249.69",  # the double 91249.69417475727 at the instrument's 2 decimals
        "STATUS": "CANCELED", "UPDATED": "2025-11-27T17:01:08.781965951Z",
    }  # fmt: skip


def test_without_its_instrument_an_order_uses_the_precision_its_prices_were_published_with(state: State) -> None:
    (row,) = columns(orders_table(state.orders, {}))
    assert row["AVG PX"] == "91249.69"  # the LIMIT price "91250.00" has 2 decimals


def test_a_position_shows_pnl_with_its_currency_and_no_close_while_open(state: State) -> None:
    (row,) = columns(positions_table(state.positions))
    assert row == {
        "POSITION": POSITION_ID, "INSTRUMENT": "BTCUSDT.BINANCE", "SIDE": "LONG", "QTY": "0.515000",
        "AVG OPEN": "91249.69", "AVG CLOSE": "-", "REALIZED PNL": "-46.99359250 USDT",
        "COMMISSIONS": "46.99359250 USDT", "OPENED": "2025-11-27T17:01:07.787028734Z", "CLOSED": "-",
    }  # fmt: skip


def test_an_account_shows_one_row_per_currency_with_amounts_and_codes(state: State) -> None:
    rows = columns(accounts_table(state.accounts))
    assert rows == [
        {"ACCOUNT": ACCOUNT_ID, "TYPE": "CASH", "TOTAL": "0.61500000 BTC", "LOCKED": "0.00000000 BTC",
         "FREE": "0.61500000 BTC", "UPDATED": "2025-11-27T17:01:09.067088244Z", "EVENTS": "3"},
        {"ACCOUNT": ACCOUNT_ID, "TYPE": "CASH", "TOTAL": "102959.41390750 USDT", "LOCKED": "0.00000000 USDT",
         "FREE": "102959.41390750 USDT", "UPDATED": "2025-11-27T17:01:09.067088244Z", "EVENTS": "3"},
    ]  # fmt: skip


def test_numbers_are_right_aligned_and_text_left_aligned() -> None:
    table = render(("NAME", "QTY"), [["a", "1"], ["long name", "1000"]], frozenset({"QTY"}))
    assert table.splitlines() == ["NAME        QTY", "a             1", "long name  1000"]


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "-"), (1, "1970-01-01T00:00:00.000000001Z"), (1_764_262_868_781_965_951, "2025-11-27T17:01:08.781965951Z")],
)
def test_times_are_iso_8601_utc_with_nanoseconds(ns: int, text: str) -> None:
    assert iso_time(ns) == text


def test_averages_round_half_away_from_zero_and_none_is_a_dash() -> None:
    assert average(1.100125, 5) == "1.10013"
    assert average(0.0, 5) == "-"
    assert average(1.5, None) == "1.5"
