"""Price, Quantity, Money and identifiers (wire-format.md sections 2 and 3), and the flip split's arithmetic."""

from __future__ import annotations

import uuid
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradecache.model.identifiers import (
    AccountId,
    ClientOrderId,
    InstrumentId,
    PositionId,
    StrategyId,
    TradeId,
    TraderId,
)
from tradecache.model.positions import derive_opening_event_id, split_commission
from tradecache.model.values import (
    FIXED_SCALAR,
    Currency,
    Money,
    Price,
    Quantity,
    currency_or_inferred,
    round_half_away_from_zero,
)

# -- string forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "precision"),
    [("100000", 0), ("0.250", 3), ("0.750000", 6), ("0.000", 3), ("0", 0), ("1.15872", 5), ("0.0000000000000001", 16)],
)
def test_a_quantity_string_round_trips_with_its_precision(text: str, precision: int) -> None:
    quantity = Quantity.from_str(text)
    assert str(quantity) == text
    assert quantity.precision == precision


@pytest.mark.parametrize("text", ["-12.5", "95000.5", "155.010", "-0.00025", "0.000", "-1", "12345678901234.123456"])
def test_a_price_string_round_trips_including_negative_prices(text: str) -> None:
    assert str(Price.from_str(text)) == text


@pytest.mark.parametrize(
    ("text", "raw"),
    [("-12.5", -125 * 10**15), ("1.15872", 115872 * 10**11), ("0.000", 0), ("100000", 100000 * FIXED_SCALAR)],
)
def test_the_raw_value_is_the_value_times_ten_to_the_sixteen(text: str, raw: int) -> None:
    assert Price.from_str(text).raw == raw


@pytest.mark.parametrize(
    "text", ["2.00 USD", "28.74359250 USDT", "-0.00001042 BTC", "0 JPY", "0.00 USD", "155.01 XAU", "-3.30 USD"]
)
def test_a_money_string_round_trips(text: str) -> None:
    money = Money.parse(text)
    assert str(money) == text
    assert str(Money.parse(str(money))) == text


def test_money_knows_its_currency_and_bare_amount() -> None:
    money = Money.parse("-0.00001042 BTC")
    assert money.currency == Currency.from_str("BTC")
    assert money.amount_str() == "-0.00001042"
    assert money.raw == -1042 * 10**8
    assert Money.from_amount_str("249994.21", "USD") == Money.parse("249994.21 USD")


@pytest.mark.parametrize(("text", "shown"), [("1e3", "1000"), ("1_000", "1000"), ("1E+2", "100"), ("1.5e-3", "0.0015")])
def test_scientific_and_underscore_forms_are_read_but_never_written(text: str, shown: str) -> None:
    assert str(Quantity.from_str(text)) == shown
    assert str(Price.from_str(text)) == shown


@pytest.mark.parametrize("kind", [Price, Quantity])
@pytest.mark.parametrize("text", ["0.00000000000000001", "1.12345678901234567", "1e-17"])
def test_a_precision_above_16_is_refused(kind: type[Price] | type[Quantity], text: str) -> None:
    with pytest.raises(ValueError, match="16"):
        kind.from_str(text)


@pytest.mark.parametrize("text", ["-1", "-0.001", "-1e3"])
def test_a_negative_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        Quantity.from_str(text)


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "nan", "inf", "--1", "1,5"])
def test_text_that_is_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Price.from_str(text)


@pytest.mark.parametrize("text", ["2.00USD", "2.00", "2.00 US D", 200])
def test_money_without_one_amount_and_one_code_is_refused(text: object) -> None:
    with pytest.raises(ValueError):
        Money.parse(text)  # type: ignore[arg-type]


def test_values_compare_by_raw_value_and_type() -> None:
    assert Quantity.from_str("1.0") == Quantity.from_str("1.00")
    assert Quantity.from_str("1") != Price.from_str("1")
    assert Money.parse("1.00 USD") != Money.parse("1.00 EUR")
    assert Price.from_str("-1") < Price.from_str("0") < Price.from_str("0.1")


# -- binary64 conversions (section 3) ------------------------------------------------------------


@pytest.mark.parametrize("text", ["72676.0592", "2738782.88", "1996153.30", "32573.9464"])
def test_as_double_is_the_raw_integer_divided_in_binary64_not_the_parsed_decimal(text: str) -> None:
    price = Price.from_str(text)
    assert price.as_double() == float(price.raw) / 1e16
    assert price.as_double() != float(text)


@pytest.mark.parametrize("text", ["1.10000", "0.65432", "95000.5", "-12.5", "0"])
def test_as_double_of_short_values_is_the_nearest_double(text: str) -> None:
    assert Price.from_str(text).as_double() == float(text)


@pytest.mark.parametrize(
    ("value", "precision", "shown"),
    [
        (0.575, 2, "0.57"),  # 0.575 is the double 0.57499999999999996
        (2.5, 0, "3"),
        (-2.5, 0, "-3"),
        (0.5, 0, "1"),
        (-0.5, 0, "-1"),
        (1.5, 0, "2"),
        (0.125, 2, "0.13"),  # an exact binary tie goes away from zero
        (-0.125, 2, "-0.13"),
        (1.1003333333333334, 5, "1.10033"),
        (0.0, 3, "0.000"),
    ],
)
def test_from_double_rounds_half_away_from_zero_at_the_precision(value: float, precision: int, shown: str) -> None:
    assert str(Price.from_double(value, precision)) == shown


def test_from_double_in_a_currency_uses_the_currency_precision() -> None:
    assert str(Money.from_double_in(2.5, Currency.from_str("JPY"))) == "3 JPY"
    assert str(Money.from_double_in(-0.575, Currency.from_str("USD"))) == "-0.57 USD"
    assert str(Money.from_double_in(1e-9, Currency.from_str("BTC"))) == "0.00000000 BTC"


# What the parsers and `from_double_in` gave when they went through the checked constructors and
# computed their powers of ten (they now build the value directly and look the powers up).
def _reference_parse(text: str) -> tuple[int, int]:
    with localcontext(prec=100):  # exact for these texts (the default rounds past 28 digits)
        number = Decimal(text.replace("_", ""))
        precision = max(0, -int(number.as_tuple().exponent))
        return int(number.scaleb(16)), precision


DECIMALS = st.one_of(
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{1,16})?", fullmatch=True),
    st.sampled_from(["0", "-0", "0.0", "-0.000", "1e3", "1.5E-4", "1_000.25", "-2_0"]),
)


@settings(max_examples=600, deadline=None)
@given(DECIMALS, st.sampled_from(["USD", "JPY", "BTC", "ZZQ"]))
def test_the_parsers_give_what_the_checked_constructors_give(text: str, code: str) -> None:
    raw, precision = _reference_parse(text)
    price = Price.from_str(text)
    assert (type(price), price.raw, price.precision) == (Price, raw, precision) and price == Price(raw, precision)
    if raw >= 0:
        quantity = Quantity.from_str(text)
        assert (type(quantity), quantity.raw, quantity.precision) == (Quantity, raw, precision)
    else:
        with pytest.raises(ValueError, match="quantity must not be negative"):
            Quantity.from_str(text)
    currency = currency_or_inferred(code, precision)
    for money in (Money.from_amount_str(text, code), Money.parse(f"{text} {code}")):
        assert (type(money), money.raw, money.precision, money.currency) == (Money, raw, precision, currency)
        assert str(money) == str(Money(raw, precision, currency))


@settings(max_examples=600, deadline=None)
@given(st.floats(-1e12, 1e12, allow_nan=False), st.sampled_from(["USD", "JPY", "BTC", "XRP"]))
def test_from_double_in_gives_what_the_computed_powers_of_ten_give(value: float, code: str) -> None:
    currency = Currency.from_str(code)
    precision = currency.precision
    units = round_half_away_from_zero(value * 10.0**precision)
    money = Money.from_double_in(value, currency)
    assert (money.raw, money.precision, money.currency) == (units * 10 ** (16 - precision), precision, currency)


@pytest.mark.parametrize(
    ("value", "rounded"), [(0.5, 1), (-0.5, -1), (0.49999999999999994, 0), (2.4999999, 2), (-7.5, -8)]
)
def test_round_half_away_from_zero_has_no_plus_one_half_error(value: float, rounded: int) -> None:
    assert round_half_away_from_zero(value) == rounded


def test_round_half_away_from_zero_refuses_non_finite_values() -> None:
    with pytest.raises(ValueError):
        round_half_away_from_zero(float("inf"))


# -- the flip split's commission (section 7.6) --------------------------------------------------


@pytest.mark.parametrize(
    ("commission", "closing", "total", "first", "second"),
    [
        ("3.30 USD", "100000", "150000", "2.20 USD", "1.10 USD"),
        ("0.05 USD", "1", "3", "0.02 USD", "0.03 USD"),
        ("2.30 USD", "100", "400", "0.57 USD", "1.73 USD"),
        ("-0.03 USD", "1", "2", "-0.02 USD", "-0.01 USD"),
        ("5 JPY", "1", "2", "3 JPY", "2 JPY"),
    ],
)
def test_split_commission_matches_the_library_examples(
    commission: str, closing: str, total: str, first: str, second: str
) -> None:
    one, two = split_commission(Money.parse(commission), Quantity.from_str(closing), Quantity.from_str(total))
    assert (str(one), str(two)) == (first, second)
    assert one.raw + two.raw == Money.parse(commission).raw


def test_derive_opening_event_id_is_deterministic_and_a_valid_uuid4() -> None:
    fill_event_id = "9f507b68-2c1d-4e5f-8a9b-0c1d2e3f4a5b"
    derived = derive_opening_event_id(fill_event_id)
    assert derived == derive_opening_event_id(fill_event_id)
    parsed = uuid.UUID(derived)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == derived  # lowercase, hyphenated
    assert derived != fill_event_id
    assert derived != derive_opening_event_id("4b5ebd22-e894-4030-8680-a06117294d8c")


# -- identifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tag"), [("FX-118", "118"), ("MOMENTUM-042", "042"), ("A-B-C", "C")])
def test_a_trader_id_has_a_tag_after_its_last_dash(text: str, tag: str) -> None:
    assert TraderId(text).get_tag() == tag


@pytest.mark.parametrize("text", ["FX118", "", "TRADER"])
def test_a_trader_id_without_a_dash_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        TraderId(text)


@pytest.mark.parametrize(
    ("text", "symbol", "venue"),
    [
        ("UD:U$: GN 2534559.GLBX", "UD:U$: GN 2534559", "GLBX"),
        ("EUR/USD.IDEALPRO", "EUR/USD", "IDEALPRO"),
        ("BTCUSDT-PERP.BINANCE", "BTCUSDT-PERP", "BINANCE"),
        ("ESZ5.XCME.GLBX", "ESZ5.XCME", "GLBX"),
    ],
)
def test_an_instrument_id_is_split_at_the_last_dot(text: str, symbol: str, venue: str) -> None:
    instrument_id = InstrumentId(text)
    assert (instrument_id.symbol, instrument_id.venue) == (symbol, venue)
    assert instrument_id == text


@pytest.mark.parametrize("text", ["EURUSD", ".SIM", "EURUSD.", ""])
def test_an_instrument_id_without_symbol_and_venue_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        InstrumentId(text)


def test_an_account_id_has_an_issuer_before_its_first_dash() -> None:
    assert AccountId("IB-U7712345").get_issuer() == "IB"
    assert AccountId("BYBIT-UNIFIED-79").get_issuer() == "BYBIT"
    with pytest.raises(ValueError):
        AccountId("IBU7712345")


@pytest.mark.parametrize(("text", "valid"), [("MeanRev-002", True), ("EXTERNAL", True), ("MeanRev", False)])
def test_a_strategy_id_is_name_tag_or_external(text: str, valid: bool) -> None:
    if valid:
        assert StrategyId(text) == text
    else:
        with pytest.raises(ValueError):
            StrategyId(text)


@pytest.mark.parametrize("kind", [ClientOrderId, PositionId, TradeId])
def test_free_form_identifiers_take_any_non_empty_string_but_not_an_empty_one(
    kind: type[ClientOrderId] | type[PositionId] | type[TradeId],
) -> None:
    assert kind("x y/z:1").value == "x y/z:1"
    with pytest.raises(ValueError):
        kind("")


def test_identifiers_hash_and_compare_like_their_text() -> None:
    orders = {ClientOrderId("O-1"): 1}
    assert orders["O-1"] == 1
    assert TraderId("FX-118") == "FX-118"
