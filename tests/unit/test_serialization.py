"""MsgPackSerializer: property-based round trips of every message shape, and every kind of bad payload.

Canonical bytes are maps in NautilusTrader's key order (wire-format.md section 5) with top-level
timestamps as strings and nested order timestamps as integers; for those,
`serialize(deserialize(b)) == b` byte for byte.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.factories import OrderEvents
from tradecache.errors import PayloadError, RejectReason
from tradecache.model.enums import (
    AccountType,
    ContingencyType,
    CurrencyType,
    LiquiditySide,
    OrderSide,
    OrderType,
    TimeInForce,
    TrailingOffsetType,
    TriggerType,
)
from tradecache.model.events import (
    AccountState,
    OrderFilled,
    OrderInitialized,
    OrderUpdated,
    StrategyState,
    SubmitOrder,
    SubmitOrderList,
)
from tradecache.model.instruments import Instrument
from tradecache.model.key_parts import is_key_part
from tradecache.model.values import Currency, Money, Price, Quantity, register_currency
from tradecache.serialization import MsgPackSerializer, codecs
from tradecache.serialization.msgpack import decode_common, timestamps_are_strings

SERIALIZER = MsgPackSerializer(timestamps_as_str=True)
# No deadline: the first examples pay for imports and caches, which would make timing flaky.
PROPERTY = settings(deadline=None, max_examples=150)


def pack(data: dict[str, Any] | list[Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def assert_round_trips(payload: bytes) -> Any:
    """Decode, re-encode byte for byte, and decode the re-encoding to an equal object."""
    obj = SERIALIZER.deserialize(payload)
    assert SERIALIZER.serialize(obj) == payload
    assert SERIALIZER.deserialize(SERIALIZER.serialize(obj)) == obj
    assert SERIALIZER.from_map(SERIALIZER.to_map(obj)) == obj
    return obj


# -- value strategies --------------------------------------------------------------------------


def decimal_text(units: int, precision: int) -> str:
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), 10**precision)
    return f"{sign}{whole}" if precision == 0 else f"{sign}{whole}.{fraction:0{precision}d}"


@st.composite
def quantities(draw: st.DrawFn, positive: bool = False) -> str:
    precision = draw(st.integers(0, 9))
    return decimal_text(draw(st.integers(1 if positive else 0, 10**15)), precision)


@st.composite
def prices(draw: st.DrawFn) -> str:
    precision = draw(st.integers(0, 9))
    return decimal_text(draw(st.integers(-(10**15), 10**15)), precision)


BUILT_IN_CODES = ["USD", "EUR", "JPY", "GBP", "BTC", "ETH", "USDT", "BNB", "XAU"]


@st.composite
def amounts(draw: st.DrawFn, code: str, non_negative: bool = False) -> str:
    precision = Currency.from_str(code).precision
    return decimal_text(draw(st.integers(0 if non_negative else -(10**14), 10**14)), precision)


@st.composite
def monies(draw: st.DrawFn) -> str:
    code = draw(st.sampled_from(BUILT_IN_CODES))
    return f"{draw(amounts(code))} {code}"


TIMESTAMPS_19 = st.integers(10**18, 10**19 - 1)
TIMESTAMPS = st.one_of(TIMESTAMPS_19, st.integers(0, 2**64 - 1))
UUIDS = st.uuids(version=4).map(str)
NAME = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
FREE_ID = st.text(min_size=1, max_size=12)
TRADER_IDS = st.builds(lambda a, b: f"{a}-{b}", NAME, NAME)
STRATEGY_IDS = st.one_of(TRADER_IDS, st.just("EXTERNAL"))
ACCOUNT_IDS = TRADER_IDS
INSTRUMENT_IDS = st.builds(
    lambda symbol, venue: f"{symbol}.{venue}",
    st.text(min_size=1, max_size=12).filter(is_key_part),
    NAME.filter(lambda v: "." not in v),
)
OPTIONAL_FREE_ID = st.none() | FREE_ID
# Ids that are part of a Redis key: `model/key_parts.py` refuses control characters and namespace words.
KEY_ID = FREE_ID.filter(is_key_part)
OPTIONAL_KEY_ID = st.none() | KEY_ID
INFO_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
INFO = st.dictionaries(st.text(max_size=8), INFO_VALUES, max_size=4)


def names(enum: Any, *excluded: Any) -> st.SearchStrategy[str]:
    return st.sampled_from([member.name for member in enum if member not in excluded])


# -- the values themselves ---------------------------------------------------------------------


@PROPERTY
@given(quantities())
def test_every_quantity_string_round_trips(text: str) -> None:
    assert str(Quantity.from_str(text)) == text


@PROPERTY
@given(prices())
def test_every_price_string_round_trips(text: str) -> None:
    assert str(Price.from_str(text)) == text


@PROPERTY
@given(monies())
def test_every_money_string_round_trips(text: str) -> None:
    assert str(Money.parse(text)) == text


# -- message strategies ------------------------------------------------------------------------


@st.composite
def order_options(draw: st.DrawFn, order_type: OrderType) -> dict[str, Any]:
    price = prices()
    optional_price = st.none() | prices()
    display = st.none() | quantities(positive=True)
    expire = st.integers(0, 2**63 - 1)
    trigger_type = names(TriggerType)
    offset = quantities()
    offset_type = names(TrailingOffsetType)
    layouts: dict[OrderType, list[tuple[str, st.SearchStrategy[Any]]]] = {
        OrderType.MARKET: [],
        OrderType.LIMIT: [("price", price), ("display_qty", display), ("expire_time_ns", expire)],
        OrderType.MARKET_TO_LIMIT: [("display_qty", display), ("expire_time_ns", expire)],
        OrderType.STOP_MARKET: [("trigger_price", price), ("trigger_type", trigger_type), ("expire_time_ns", expire)],
        OrderType.MARKET_IF_TOUCHED: [
            ("trigger_price", price),
            ("trigger_type", trigger_type),
            ("expire_time_ns", expire),
        ],
        OrderType.STOP_LIMIT: [
            ("price", price),
            ("trigger_price", price),
            ("trigger_type", trigger_type),
            ("expire_time_ns", expire),
            ("display_qty", display),
        ],
        OrderType.LIMIT_IF_TOUCHED: [
            ("price", price),
            ("trigger_price", price),
            ("trigger_type", trigger_type),
            ("expire_time_ns", expire),
            ("display_qty", display),
        ],
        OrderType.TRAILING_STOP_MARKET: [
            ("activation_price", optional_price),
            ("trigger_price", optional_price),
            ("trigger_type", trigger_type),
            ("trailing_offset", offset),
            ("trailing_offset_type", offset_type),
            ("expire_time_ns", expire),
        ],
        OrderType.TRAILING_STOP_LIMIT: [
            ("price", optional_price),
            ("activation_price", optional_price),
            ("trigger_price", optional_price),
            ("trigger_type", trigger_type),
            ("limit_offset", offset),
            ("trailing_offset", offset),
            ("trailing_offset_type", offset_type),
            ("expire_time_ns", expire),
            ("display_qty", display),
        ],
    }
    return {key: draw(strategy) for key, strategy in layouts[order_type]}


@st.composite
def header(draw: st.DrawFn, message_type: str) -> dict[str, Any]:
    return {
        "type": message_type,
        "trader_id": draw(TRADER_IDS),
        "strategy_id": draw(STRATEGY_IDS),
        "instrument_id": draw(INSTRUMENT_IDS),
        "client_order_id": draw(KEY_ID),
    }


@st.composite
def order_initialized_maps(
    draw: st.DrawFn, order_type: OrderType | None = None, ts_as_int: bool = False
) -> dict[str, Any]:
    order_type = order_type if order_type is not None else draw(st.sampled_from(list(OrderType)))
    contingency = draw(st.sampled_from(list(ContingencyType)))
    linked = (
        draw(st.none() | st.lists(KEY_ID, max_size=3))
        if contingency == ContingencyType.NO_CONTINGENCY
        else draw(st.lists(KEY_ID, min_size=1, max_size=3))
    )
    exec_algorithm_id = draw(OPTIONAL_FREE_ID)
    ts = draw(TIMESTAMPS)
    return {
        **draw(header("OrderInitialized")),
        "order_side": draw(names(OrderSide, OrderSide.NO_ORDER_SIDE)),
        "order_type": order_type.name,
        "quantity": draw(quantities(positive=True)),
        "time_in_force": draw(names(TimeInForce)),
        "post_only": draw(st.booleans()),
        "reduce_only": draw(st.booleans()),
        "quote_quantity": draw(st.booleans()),
        "options": draw(order_options(order_type)),
        "emulation_trigger": draw(names(TriggerType)),
        "trigger_instrument_id": draw(st.none() | INSTRUMENT_IDS),
        "contingency_type": contingency.name,
        "order_list_id": draw(OPTIONAL_KEY_ID),
        "linked_order_ids": linked,
        "parent_order_id": draw(OPTIONAL_KEY_ID),
        "exec_algorithm_id": exec_algorithm_id,
        "exec_algorithm_params": draw(st.none() | INFO),
        "exec_spawn_id": draw(KEY_ID) if exec_algorithm_id is not None else draw(OPTIONAL_KEY_ID),
        "tags": draw(st.none() | st.lists(st.text(max_size=8), max_size=3)),
        "event_id": draw(UUIDS),
        "ts_init": ts if ts_as_int else str(ts),
        "ts_event": ts if ts_as_int else str(ts),
        "reconciliation": draw(st.booleans()),
    }


@st.composite
def order_filled_maps(draw: st.DrawFn) -> dict[str, Any]:
    return {
        **draw(header("OrderFilled")),
        "venue_order_id": draw(FREE_ID),
        "account_id": draw(ACCOUNT_IDS),
        "trade_id": draw(FREE_ID),
        "position_id": draw(OPTIONAL_KEY_ID),
        "order_side": draw(names(OrderSide, OrderSide.NO_ORDER_SIDE)),
        "order_type": draw(names(OrderType)),
        "last_qty": draw(quantities(positive=True)),
        "last_px": draw(prices()),
        "currency": draw(st.sampled_from(BUILT_IN_CODES)),
        "commission": draw(monies()),
        "liquidity_side": draw(names(LiquiditySide)),
        "event_id": draw(UUIDS),
        "ts_event": str(draw(TIMESTAMPS)),
        "ts_init": str(draw(TIMESTAMPS)),
        "info": draw(INFO),
        "reconciliation": draw(st.booleans()),
    }


@st.composite
def order_updated_maps(draw: st.DrawFn) -> dict[str, Any]:
    return {
        **draw(header("OrderUpdated")),
        "venue_order_id": draw(OPTIONAL_FREE_ID),
        "account_id": draw(st.none() | ACCOUNT_IDS),
        "quantity": draw(quantities(positive=True)),
        "price": draw(st.none() | prices()),
        "trigger_price": draw(st.none() | prices()),
        "event_id": draw(UUIDS),
        "ts_event": str(draw(TIMESTAMPS)),
        "ts_init": str(draw(TIMESTAMPS)),
        "reconciliation": draw(st.booleans()),
    }


@st.composite
def balance_maps(draw: st.DrawFn, code: str) -> dict[str, Any]:
    precision = Currency.from_str(code).precision
    total = draw(st.integers(0, 10**14))
    locked = draw(st.integers(0, total))
    return {
        "type": "AccountBalance",
        "total": decimal_text(total, precision),
        "locked": decimal_text(locked, precision),
        "free": decimal_text(total - locked, precision),
        "currency": code,
    }


@st.composite
def account_state_maps(draw: st.DrawFn) -> dict[str, Any]:
    codes = draw(st.lists(st.sampled_from(BUILT_IN_CODES), min_size=1, max_size=3, unique=True))
    base = codes[0] if len(codes) == 1 and draw(st.booleans()) else None
    margin_codes = draw(st.lists(st.sampled_from(BUILT_IN_CODES), max_size=2))
    ts = draw(TIMESTAMPS)
    return {
        "type": "AccountState",
        "account_id": draw(ACCOUNT_IDS),
        "account_type": draw(names(AccountType)),
        "base_currency": base,
        "balances": [draw(balance_maps(code)) for code in codes],
        "margins": [
            {
                "type": "MarginBalance",
                "initial": draw(amounts(code, non_negative=True)),
                "maintenance": draw(amounts(code, non_negative=True)),
                "currency": code,
                "instrument_id": draw(st.none() | INSTRUMENT_IDS),
            }
            for code in margin_codes
        ],
        "reported": draw(st.booleans()),
        "info": draw(INFO),
        "event_id": draw(UUIDS),
        "ts_event": str(ts),
        "ts_init": str(ts),
    }


@st.composite
def submit_order_maps(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "SubmitOrder",
        "client_id": draw(OPTIONAL_FREE_ID),
        "trader_id": draw(TRADER_IDS),
        "strategy_id": draw(STRATEGY_IDS),
        "order": draw(order_initialized_maps(ts_as_int=True)),
        "position_id": draw(OPTIONAL_KEY_ID),
        "command_id": draw(UUIDS),
        "ts_init": str(draw(TIMESTAMPS)),
    }


@st.composite
def submit_order_list_maps(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "SubmitOrderList",
        "client_id": draw(OPTIONAL_FREE_ID),
        "trader_id": draw(TRADER_IDS),
        "strategy_id": draw(STRATEGY_IDS),
        "order_list_id": draw(KEY_ID),
        "orders": draw(st.lists(order_initialized_maps(ts_as_int=True), min_size=1, max_size=3)),
        "position_id": draw(OPTIONAL_KEY_ID),
        "command_id": draw(UUIDS),
        "ts_init": str(draw(TIMESTAMPS)),
    }


@st.composite
def strategy_state_maps(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "StrategyState",
        "trader_id": draw(TRADER_IDS),
        "strategy_id": draw(STRATEGY_IDS),
        "state": draw(st.dictionaries(st.text(min_size=1, max_size=10), st.binary(max_size=32), max_size=4)),
        "ts_event": str(draw(TIMESTAMPS)),
    }


@st.composite
def currency_maps(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "Currency",
        "code": draw(st.text(st.characters(categories=["Lu", "Nd"]), min_size=1, max_size=6)),
        "precision": draw(st.integers(0, 16)),
        "iso4217": draw(st.integers(0, 999)),
        "name": draw(st.text(max_size=20)),
        "currency_type": draw(names(CurrencyType)),
    }


@st.composite
def unknown_instrument_maps(draw: st.DrawFn) -> dict[str, Any]:
    ts = draw(TIMESTAMPS)
    return {
        "type": "SyntheticThing",
        "id": "X.Y",
        "raw_symbol": "X",
        "price_precision": 2,
        "price_increment": "0.01",
        "components": draw(st.lists(INSTRUMENT_IDS, max_size=3)),
        "formula": draw(st.text(max_size=20)),
        "blob": draw(st.binary(max_size=16)),
        "weights": draw(st.lists(st.floats(allow_nan=False), max_size=3)),
        "activation_ns": draw(st.integers(0, 2**64 - 1)),
        "nested": draw(INFO),
        "ts_event": str(ts),
        "ts_init": str(ts),
        "info": draw(st.none() | INFO),
    }


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("order_type", list(OrderType), ids=[t.name for t in OrderType])
@PROPERTY
@given(data=st.data())
def test_an_order_initialized_of_each_type_round_trips_byte_for_byte(
    order_type: OrderType, data: st.DataObject
) -> None:
    init = assert_round_trips(pack(data.draw(order_initialized_maps(order_type))))
    assert isinstance(init, OrderInitialized)
    assert init.order_type == order_type


@PROPERTY
@given(order_filled_maps())
def test_an_order_filled_round_trips_byte_for_byte_with_any_info_map(data: dict[str, Any]) -> None:
    fill = assert_round_trips(pack(data))
    assert isinstance(fill, OrderFilled)
    assert fill.info == data["info"]


@PROPERTY
@given(order_updated_maps())
def test_an_order_updated_round_trips_byte_for_byte(data: dict[str, Any]) -> None:
    assert isinstance(assert_round_trips(pack(data)), OrderUpdated)


@PROPERTY
@given(account_state_maps())
def test_an_account_state_round_trips_byte_for_byte(data: dict[str, Any]) -> None:
    state = assert_round_trips(pack(data))
    assert isinstance(state, AccountState)
    assert len(state.balances) == len(data["balances"])


@PROPERTY
@given(submit_order_maps())
def test_a_submit_order_keeps_the_integer_timestamps_of_its_nested_order(data: dict[str, Any]) -> None:
    command = assert_round_trips(pack(data))
    assert isinstance(command, SubmitOrder)
    written = msgpack.unpackb(SERIALIZER.serialize(command), raw=False)
    assert isinstance(written["order"]["ts_init"], int)
    assert isinstance(written["order"]["ts_event"], int)
    assert isinstance(written["ts_init"], str)


@PROPERTY
@given(submit_order_list_maps())
def test_a_submit_order_list_round_trips_byte_for_byte(data: dict[str, Any]) -> None:
    command = assert_round_trips(pack(data))
    assert isinstance(command, SubmitOrderList)
    assert [str(c) for c in command.client_order_ids] == [order["client_order_id"] for order in data["orders"]]


@PROPERTY
@given(strategy_state_maps())
def test_a_strategy_state_with_bytes_values_round_trips_byte_for_byte(data: dict[str, Any]) -> None:
    state = assert_round_trips(pack(data))
    assert isinstance(state, StrategyState)
    assert state.state == data["state"]


@PROPERTY
@given(currency_maps())
def test_a_currency_message_round_trips_byte_for_byte(data: dict[str, Any]) -> None:
    currency = assert_round_trips(pack(data))
    assert isinstance(currency, Currency)
    assert currency.code == data["code"]


@PROPERTY
@given(unknown_instrument_maps())
def test_an_instrument_of_an_unknown_type_round_trips_byte_for_byte(data: dict[str, Any]) -> None:
    instrument = assert_round_trips(pack(data))
    assert isinstance(instrument, Instrument)
    assert instrument.type == "SyntheticThing"
    assert instrument.price_precision == 2


@PROPERTY
@given(order_filled_maps(), TIMESTAMPS, TIMESTAMPS)
def test_integer_top_level_timestamps_are_read_and_written_back_as_strings(
    data: dict[str, Any], ts_event: int, ts_init: int
) -> None:
    as_int = {**data, "ts_event": ts_event, "ts_init": ts_init}
    fill = SERIALIZER.deserialize(pack(as_int))
    assert (fill.ts_event, fill.ts_init) == (ts_event, ts_init)
    assert SERIALIZER.serialize(fill) == pack({**data, "ts_event": str(ts_event), "ts_init": str(ts_init)})


@PROPERTY
@given(TIMESTAMPS_19)
def test_a_19_digit_timestamp_stays_exact(ts: int) -> None:
    event = OrderEvents().submitted()
    event.ts_event = ts
    written = msgpack.unpackb(SERIALIZER.serialize(event), raw=False)
    assert written["ts_event"] == str(ts)
    assert SERIALIZER.deserialize(SERIALIZER.serialize(event)).ts_event == ts


def test_optional_keys_may_be_absent_and_take_their_defaults() -> None:
    data = SERIALIZER.to_map(OrderEvents().filled("10", position_id="P-1"))
    for key in ("position_id", "info", "reconciliation"):
        del data[key]
    fill = SERIALIZER.from_map(data)
    assert isinstance(fill, OrderFilled)
    assert (fill.position_id, fill.info, fill.reconciliation) == (None, {}, False)


def test_comma_joined_linked_order_ids_and_tags_are_read_as_lists() -> None:
    data = SERIALIZER.to_map(OrderEvents().initialized(OrderType.LIMIT))
    data.update(contingency_type="OCO", linked_order_ids="O-2,O-3", tags="ENTRY,BRACKET")
    init = SERIALIZER.from_map(data)
    assert isinstance(init, OrderInitialized)
    assert init.linked_order_ids == ("O-2", "O-3")
    assert init.tags == ("ENTRY", "BRACKET")


# -- payloads that are refused ---------------------------------------------------------------------


def filled_map(**changes: Any) -> dict[str, Any]:
    return {**SERIALIZER.to_map(OrderEvents().filled("10", position_id="P-1")), **changes}


def refused(payload: bytes, reason: RejectReason) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        SERIALIZER.deserialize(payload)
    assert caught.value.reason == reason
    return caught.value


@pytest.mark.parametrize(
    "payload", [b"\xc1", b"", b"\x92\x01", b"\x81\xa4ty"], ids=["never-used", "empty", "short", "cut"]
)
def test_bytes_that_are_not_msgpack_are_malformed(payload: bytes) -> None:
    refused(payload, RejectReason.MALFORMED)


@pytest.mark.parametrize("value", [[1, 2], "OrderFilled", 7, None], ids=["list", "str", "int", "nil"])
def test_msgpack_that_is_not_a_map_is_malformed(value: Any) -> None:
    refused(msgpack.packb(value), RejectReason.MALFORMED)


@pytest.mark.parametrize("data", [{"trader_id": "FX-1"}, {"type": 5}, {"type": None}])
def test_a_map_without_a_string_type_is_malformed(data: dict[str, Any]) -> None:
    error = refused(pack(data), RejectReason.MALFORMED)
    assert error.field == "type"


def test_an_unknown_type_is_unknown_type() -> None:
    error = refused(pack({"type": "OrderTeleported", "trader_id": "FX-1"}), RejectReason.UNKNOWN_TYPE)
    assert "OrderTeleported" in str(error)


@pytest.mark.parametrize("key", ["trade_id", "last_qty", "commission", "event_id", "ts_event", "trader_id"])
def test_a_missing_required_field_is_malformed_and_named(key: str) -> None:
    data = filled_map()
    del data[key]
    error = refused(pack(data), RejectReason.MALFORMED)
    assert error.field == key
    assert key in str(error)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("last_qty", 5),
        ("last_qty", "abc"),
        ("last_qty", "0"),
        ("last_qty", "-1"),
        ("last_px", None),
        ("commission", "2.00"),
        ("trade_id", ""),
        ("trader_id", "NODASH"),
        ("instrument_id", "NOVENUE"),
        ("event_id", "not-a-uuid"),
        ("reconciliation", "yes"),
        ("info", [1]),
    ],
)
def test_a_field_of_the_wrong_type_or_value_is_invalid_field_with_the_key_as_field(key: str, value: Any) -> None:
    error = refused(pack(filled_map(**{key: value})), RejectReason.INVALID_FIELD)
    assert error.field == key


@pytest.mark.parametrize(("key", "value"), [("order_side", "UP"), ("liquidity_side", "buy"), ("order_type", 1)])
def test_an_enum_value_that_is_not_a_member_name_is_invalid_field(key: str, value: Any) -> None:
    error = refused(pack(filled_map(**{key: value})), RejectReason.INVALID_FIELD)
    assert error.field == key


@pytest.mark.parametrize("value", ["12a", "", "-1", "1.5", "18446744073709551616", -1, 1.5, True])
def test_a_bad_timestamp_is_invalid_field(value: Any) -> None:
    error = refused(pack(filled_map(ts_event=value)), RejectReason.INVALID_FIELD)
    assert error.field == "ts_event"


def test_the_largest_uint64_timestamp_is_accepted() -> None:
    fill = SERIALIZER.deserialize(pack(filled_map(ts_event=str(2**64 - 1))))
    assert fill.ts_event == 2**64 - 1


def test_a_string_that_is_not_utf8_is_malformed() -> None:
    payload = pack(filled_map(trade_id="TRADE-AB"))
    corrupted = payload.replace(b"TRADE-AB", b"TRADE-\xff\xfe")
    assert len(corrupted) == len(payload)
    refused(corrupted, RejectReason.MALFORMED)


def test_an_error_in_the_second_order_of_a_list_names_its_path() -> None:
    first = SERIALIZER.to_map(OrderEvents("O-1").initialized(), top_level=False)
    second = {**SERIALIZER.to_map(OrderEvents("O-2").initialized(), top_level=False), "quantity": "abc"}
    data = {
        "type": "SubmitOrderList",
        "client_id": None,
        "trader_id": "TESTER-001",
        "strategy_id": "Tester-001",
        "order_list_id": "OL-1",
        "orders": [first, second],
        "position_id": None,
        "command_id": "4b5ebd22-e894-4030-8680-a06117294d8c",
        "ts_init": "1764262866352092751",
    }
    assert isinstance(SERIALIZER.deserialize(pack({**data, "orders": [first]})), SubmitOrderList)
    error = refused(pack(data), RejectReason.INVALID_FIELD)
    assert error.field == "orders[1].quantity"
    assert "orders[1].quantity" in str(error)


def test_a_missing_key_of_a_nested_order_names_its_path() -> None:
    order = SERIALIZER.to_map(OrderEvents().initialized(), top_level=False)
    del order["order_side"]
    data = {
        "type": "SubmitOrder",
        "client_id": None,
        "trader_id": "TESTER-001",
        "strategy_id": "Tester-001",
        "order": order,
        "position_id": None,
        "command_id": "4b5ebd22-e894-4030-8680-a06117294d8c",
        "ts_init": "1764262866352092751",
    }
    error = refused(pack(data), RejectReason.MALFORMED)
    assert error.field == "order.order_side"


def _account_map(**balance: Any) -> dict[str, Any]:
    return {
        "type": "AccountState",
        "account_id": "IB-U7712345",
        "account_type": "MARGIN",
        "base_currency": "USD",
        "balances": [
            {
                "type": "AccountBalance",
                "total": "249994.21",
                "locked": "8690.40",
                "free": "241303.81",
                "currency": "USD",
                **balance,
            }
        ],
        "margins": [],
        "reported": True,
        "info": {},
        "event_id": "22d51c42-de7c-4025-9f51-e38f992160c2",
        "ts_event": "1764112094914872368",
        "ts_init": "1764112094914925821",
    }


def test_a_valid_account_state_is_accepted() -> None:
    assert isinstance(SERIALIZER.deserialize(pack(_account_map())), AccountState)


def test_a_bad_balance_amount_names_its_path() -> None:
    error = refused(pack(_account_map(total="x")), RejectReason.INVALID_FIELD)
    assert error.field == "balances[0].total"


def test_a_balance_whose_total_minus_locked_is_not_free_is_invalid() -> None:
    error = refused(pack(_account_map(free="241303.80")), RejectReason.INVALID_FIELD)
    assert error.field == "balances[0]"


def test_an_account_state_without_balances_is_invalid() -> None:
    refused(pack({**_account_map(), "balances": []}), RejectReason.INVALID_FIELD)


@pytest.mark.parametrize(
    ("order_type", "options", "field"),
    [
        (OrderType.LIMIT, {"display_qty": None, "expire_time_ns": 0}, "options.price"),
        (OrderType.STOP_MARKET, {"trigger_type": "DEFAULT", "expire_time_ns": 0}, "options.trigger_price"),
        (OrderType.STOP_LIMIT, {}, "options.price"),
        (OrderType.LIMIT, {"price": "abc", "expire_time_ns": 0}, "options.price"),
        (OrderType.LIMIT, {"price": "1.0", "expire_time_ns": "0"}, "options.expire_time_ns"),
    ],
)
def test_order_options_that_do_not_fit_the_order_type_are_invalid(
    order_type: OrderType, options: dict[str, Any], field: str
) -> None:
    data = SERIALIZER.to_map(OrderEvents().initialized(order_type))
    data["options"] = options
    error = refused(pack(data), RejectReason.INVALID_FIELD)
    assert error.field == field


OPTION_CODECS = {  # in the order the decoder checks them
    **dict.fromkeys(("price", "trigger_price", "activation_price"), codecs.PRICE),
    "display_qty": codecs.QUANTITY,
    "trigger_type": codecs.enum(TriggerType),
    "trailing_offset_type": codecs.enum(TrailingOffsetType),
    "trailing_offset": codecs.PRICE,
    "limit_offset": codecs.PRICE,
    "expire_time_ns": codecs.INT,
}
OPTION_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.binary(max_size=4),
    st.sampled_from(["1.10000", "1.0", "-3", "100", "abc", "", "1e3", "DEFAULT", "LAST_PRICE", "PRICE", "0"]),
    st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers()),
)  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(list(OrderType)), st.dictionaries(st.sampled_from(sorted(OPTION_CODECS)), OPTION_VALUES))
def test_order_options_are_checked_as_by_each_options_codec_in_turn(
    order_type: OrderType, options: dict[str, Any]
) -> None:
    """The decoder skips `decode` for values its codec already took (cached prices, enum names,
    ints): the outcome is that of decoding every option present in the codecs' order."""
    expected: Any = None
    for key, codec in OPTION_CODECS.items():
        if options.get(key) is not None and expected is None:
            try:
                codec.decode(options[key], f"options.{key}")
            except PayloadError as error:
                expected = (error.reason, error.field, str(error))
    data = SERIALIZER.to_map(OrderEvents().initialized(order_type))
    data["options"] = options
    try:
        SERIALIZER.from_map(data)
        outcome: Any = None
    except PayloadError as error:
        outcome = (error.reason, error.field, str(error))
    if expected is not None:
        assert outcome == expected
    else:
        assert outcome is None or outcome[1] in ("options.price", "options.trigger_price")


def test_a_contingent_order_without_linked_orders_is_invalid() -> None:
    data = {**SERIALIZER.to_map(OrderEvents().initialized()), "contingency_type": "OTO", "linked_order_ids": None}
    assert refused(pack(data), RejectReason.INVALID_FIELD).field == "linked_order_ids"


def test_an_exec_algorithm_without_spawn_id_is_invalid() -> None:
    data = {**SERIALIZER.to_map(OrderEvents().initialized()), "exec_algorithm_id": "TWAP", "exec_spawn_id": None}
    assert refused(pack(data), RejectReason.INVALID_FIELD).field == "exec_spawn_id"


def test_strategy_state_values_must_be_bytes() -> None:
    data = {
        "type": "StrategyState",
        "trader_id": "TESTER-001",
        "strategy_id": "Tester-001",
        "state": {"a": "text"},
        "ts_event": "1",
    }
    refused(pack(data), RejectReason.INVALID_FIELD)


def test_timestamps_are_strings_looks_at_the_schema_keys_and_at_any_other_ts_key() -> None:
    data = {"type": "OrderSubmitted", "ts_event": "1", "ts_init": "2", "account_id": "A-1"}
    assert timestamps_are_strings(data)
    assert not timestamps_are_strings({**data, "ts_event": 1})
    assert not timestamps_are_strings({**data, "ts_extra": 3})  # a key the schema does not name
    assert timestamps_are_strings({**data, "ts_extra": "3", "note": 4})
    assert not timestamps_are_strings({"type": "NoSuchType", "ts_event": 5})


def test_an_amount_decoded_after_a_currency_message_changes_its_code_holds_the_new_currency() -> None:
    """The decoder remembers parsed amounts; a Currency message that changes what a code names
    (here a code first seen unregistered, then registered) must not leave old ones behind."""
    serializer = MsgPackSerializer()
    payload = serializer.serialize(OrderEvents().filled(commission="2.00 ZZQ", currency="USD"))
    before = serializer.deserialize(payload).commission
    assert before.currency.currency_type == CurrencyType.CRYPTO and before.currency.name == "ZZQ"  # inferred
    zzq = Currency("ZZQ", 2, 999, "Zed Quid", CurrencyType.FIAT)
    register_currency(zzq)  # the autouse fixture in tests/conftest.py restores the registry after
    after = serializer.deserialize(payload).commission
    assert after.currency == zzq and after == before  # the same amount, now in the registered currency
    register_currency(Currency("ZZQ", 2, 999, "Zed Quid", CurrencyType.FIAT))  # the same again: nothing changes
    assert serializer.deserialize(payload).commission.currency == zzq


def test_a_balance_decoded_after_a_currency_message_changes_its_code_holds_the_new_currency() -> None:
    """Balances' and margins' amounts are remembered too (by amount and code), on the map path
    (`deserialize`) and straight from the bytes (`decode_common`, what Intake tries first)."""
    payload = pack({
        "type": "AccountState", "account_id": "SIM-001", "account_type": "MARGIN", "base_currency": None,
        "balances": [{"type": "AccountBalance", "total": "10.00", "locked": "0.00", "free": "10.00",
                      "currency": "ZZQ"}],
        "margins": [{"type": "MarginBalance", "initial": "1.00", "maintenance": "0.50", "currency": "ZZQ",
                     "instrument_id": None}],
        "reported": True, "info": {}, "event_id": "a5a5b71a-0dd9-4222-b1df-19fc0eb0427b",
        "ts_event": "1", "ts_init": "1",
    })  # fmt: skip

    def both() -> list[AccountState]:
        common = decode_common(payload)
        assert common is not None
        decoded = [SERIALIZER.deserialize(payload), common[0]]
        assert all(isinstance(state, AccountState) for state in decoded)
        return decoded  # type: ignore[return-value]

    for state in both():
        inferred = state.balances[0].total.currency
        assert inferred.currency_type == CurrencyType.CRYPTO and inferred.name == "ZZQ"
        assert state.margins[0].initial.currency == inferred
    zzq = Currency("ZZQ", 2, 999, "Zed Quid", CurrencyType.FIAT)
    register_currency(zzq)  # the autouse fixture in tests/conftest.py restores the registry after
    for state in both():
        balance, margin = state.balances[0], state.margins[0]
        amounts = [balance.total, balance.locked, balance.free, margin.initial, margin.maintenance]
        assert [money.currency for money in amounts] == [zzq] * 5
        assert [money.amount_str() for money in amounts] == ["10.00", "0.00", "10.00", "1.00", "0.50"]
