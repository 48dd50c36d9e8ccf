"""Ids that become part of Redis keys: what real NautilusTrader nodes produce passes, crafted ids do not."""

from __future__ import annotations

from typing import Any

import pytest

from tradecache.cache.adoption import entity_of, foreign
from tradecache.cache.keys import Keys
from tradecache.config import parse_config
from tradecache.errors import ConfigError
from tradecache.model.identifiers import AccountId, ClientOrderId, InstrumentId, OrderListId, PositionId, StrategyId
from tradecache.model.key_parts import NAMESPACE_WORDS, is_key_part, key_part_problem, trader_id_problem
from tradecache.model.ledger import Collection

# Ids real nodes and their adapters make (NautilusTrader's generators; Interactive Brokers, Databento,
# Binance, Betfair, dYdX, Polymarket symbols; NETTING position ids; a venue's client order id).
REAL_IDS = [
    (ClientOrderId, "O-20240101-000001-001-001-1"),
    (ClientOrderId, "x:web_7f3a"),  # Binance client order ids may hold ':'
    (PositionId, "P-20240101-000001-001-001-1"),
    (PositionId, "EUR/USD.SIM-EMACross-001"),
    (PositionId, "BTCUSDT-PERP.BINANCE-S-001"),
    (AccountId, "BINANCE-spot-master"),
    (AccountId, "IB-DU123456"),
    (StrategyId, "EMACross-001"),
    (StrategyId, "EXTERNAL"),
    (OrderListId, "OL-20240101-000001-001-001-1"),
    (InstrumentId, "AUD/USD.SIM"),
    (InstrumentId, "BTCUSDT-PERP.BINANCE"),
    (InstrumentId, "ESZ4.GLBX"),
    (InstrumentId, "ES.FUT.GLBX"),
    (InstrumentId, "SPY   240119C00470000.XCBO"),
    (InstrumentId, "ES Z4 C5000.CME"),
    (InstrumentId, "^SPX.CBOE"),
    (InstrumentId, "ES=CONTFUT.CME"),
    (InstrumentId, "1.123456789-12345-None.BETFAIR"),
    (InstrumentId, "0x5f2a-1234.POLYMARKET"),
    (InstrumentId, "ETH-USD-PERP.DYDX"),
]


@pytest.mark.parametrize(("kind", "value"), REAL_IDS, ids=[value for _, value in REAL_IDS])
def test_ids_real_nodes_produce_are_accepted(kind: Any, value: str) -> None:
    assert kind(value) == value


CRAFTED = [
    "X:tradecache:index:orders",  # would be trader `...:X`'s own index
    "X:orders:O-1",  # would be trader `...:X`'s order O-1
    "orders:O-1",
    "S-1:strategies:S-2",
    "a:index:orders_open",
    "O-1\n2026-01-01 INFO forged log line",
    "O-1\x00",
    "tab\there",
    "del\x7f",
]


@pytest.mark.parametrize("value", CRAFTED)
def test_crafted_ids_are_refused_by_every_id_that_becomes_part_of_a_key(value: str) -> None:
    assert not is_key_part(value)
    for kind in (ClientOrderId, PositionId, OrderListId):
        with pytest.raises(ValueError, match=kind.kind):
            kind(value)


def test_the_refusal_says_which_part_is_the_problem() -> None:
    assert key_part_problem("X:tradecache:index:orders") == (
        "'X:tradecache:index:orders' has 'index' as a ':'-separated part: a key holding it could be read as a "
        "key of another collection or trader"
    )
    assert "control character" in (key_part_problem("a\nb") or "")


def test_namespace_words_as_parts_of_another_word_are_fine() -> None:
    assert is_key_part("my-orders:1") and is_key_part("ordersX:1") and is_key_part("x:Orders")
    assert {"orders", "tradecache", "index", "strategies", "commands", "trader"} <= NAMESPACE_WORDS


@pytest.mark.parametrize("trader_id", ["FX-118:orders:X", "A B-1", "ÄB-1", "A-1*", "A{1}-2", "", "A-1\n"])
def test_keys_refuse_a_trader_id_outside_spec_7s_form(trader_id: str) -> None:
    assert trader_id_problem(trader_id) is not None
    with pytest.raises(ValueError, match="letters, digits"):
        Keys(trader_id)


def test_keys_accept_spec_7s_form_including_dots() -> None:
    assert Keys("A.B_C-1").prefix == "trader-A.B_C-1"


@pytest.mark.parametrize("trader_id", ["FX-118:orders:X", "A-1.", "A B-1", "ÄB-1", "A-1*", "NODASH"])
def test_the_config_refuses_a_trader_id_naming_the_key_and_the_value(trader_id: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"trader_id": trader_id}, {})
    assert caught.value.key == "trader_id"
    assert repr(trader_id) in caught.value.problem
    assert "letters, digits, '-', '_' and '.'" in caught.value.problem


def test_the_config_accepts_nautilus_trader_ids() -> None:
    for trader_id in ("TRADER-001", "FX_DESK-118", "A-B-C", "EU.FX-118"):
        assert parse_config({"trader_id": trader_id}, {}).trader_id == trader_id


def test_another_traders_keys_under_our_prefix_are_not_adopted_nor_flushed() -> None:
    keys = Keys("FX-118")
    theirs = "trader-FX-118:orders:X:orders:O-1"  # trader `FX-118:orders:X` (another program wrote it)
    ours = "trader-FX-118:orders:x:1"
    assert entity_of(keys, theirs) is None and foreign(keys, theirs)
    assert entity_of(keys, ours) == (Collection.ORDERS, "x:1") and not foreign(keys, ours)
    assert entity_of(keys, "trader-FX-118:strategies:S:orders:O:State") is None
    assert not foreign(keys, "trader-FX-118:index:orders")  # NautilusTrader's own index: this trader's
    assert not foreign(keys, "trader-FX-118:tradecache:checkpoint")
