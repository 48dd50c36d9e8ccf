"""Accounts rebuilt from AccountState events (wire-format.md section 8)."""

from __future__ import annotations

import pytest

from tests.unit.factories import account_state
from tradecache.errors import EventRejected, RejectReason
from tradecache.model.accounts import Account, replay_account
from tradecache.model.enums import AccountType
from tradecache.model.events import AccountState
from tradecache.model.values import Currency

CASH, MARGIN, BETTING = AccountType.CASH, AccountType.MARGIN, AccountType.BETTING
USD, EUR, BTC = Currency.from_str("USD"), Currency.from_str("EUR"), Currency.from_str("BTC")


def balances(account: Account) -> dict[str, tuple[str, str, str]]:
    return {
        currency.code: (str(balance.total), str(balance.locked), str(balance.free))
        for currency, balance in account.balances().items()
    }


def assert_refused(account: Account, state: AccountState) -> None:
    before = (balances(account), account.event_count, account.margins())
    with pytest.raises(EventRejected) as caught:
        account.apply(state)
    assert caught.value.reason == RejectReason.INVALID_FIELD
    assert (balances(account), account.event_count, account.margins()) == before


@pytest.mark.parametrize("account_type", [CASH, MARGIN, BETTING])
def test_the_first_state_creates_the_account_with_its_balances(account_type: AccountType) -> None:
    account = Account(account_state(account_type, [("USD", "1000.00", "100.00")], base_currency="USD"))
    assert account.account_type == account_type
    assert account.base_currency == USD
    assert balances(account) == {"USD": ("1000.00 USD", "100.00 USD", "900.00 USD")}
    assert str(account.balance_total()) == "1000.00 USD"
    assert str(account.balance_free(USD)) == "900.00 USD"
    assert account.event_count == 1


@pytest.mark.parametrize("account_type", [CASH, MARGIN])
def test_a_single_currency_account_refuses_a_state_with_another_base_currency(account_type: AccountType) -> None:
    account = Account(account_state(account_type, [("USD", "1000.00", "0.00")], base_currency="USD"))
    assert_refused(account, account_state(account_type, [("EUR", "1000.00", "0.00")], base_currency="EUR"))
    assert_refused(account, account_state(account_type, [("USD", "1000.00", "0.00")], base_currency=None))


@pytest.mark.parametrize("account_type", [CASH, MARGIN])
def test_a_single_currency_account_refuses_two_balances_or_a_balance_in_another_currency(
    account_type: AccountType,
) -> None:
    account = Account(account_state(account_type, [("USD", "1000.00", "0.00")], base_currency="USD"))
    two = account_state(account_type, [("USD", "900.00", "0.00"), ("EUR", "5.00", "0.00")], base_currency="USD")
    assert_refused(account, two)
    assert_refused(account, account_state(account_type, [("EUR", "5.00", "0.00")], base_currency="USD"))
    account.apply(account_state(account_type, [("USD", "900.00", "10.00")], base_currency="USD"))
    assert balances(account) == {"USD": ("900.00 USD", "10.00 USD", "890.00 USD")}


def test_an_account_refuses_a_state_of_another_type_or_id() -> None:
    account = Account(account_state(CASH, [("USD", "1.00", "0.00")]))
    assert_refused(account, account_state(MARGIN, [("USD", "1.00", "0.00")]))
    assert_refused(account, account_state(CASH, [("USD", "1.00", "0.00")], account_id="SIM-002"))


@pytest.mark.parametrize("account_type", [CASH, BETTING])
def test_a_cash_or_betting_account_refuses_a_negative_total(account_type: AccountType) -> None:
    with pytest.raises(EventRejected):
        Account(account_state(account_type, [("USD", "-1.00", "0.00")]))
    account = Account(account_state(account_type, [("USD", "10.00", "0.00")]))
    assert_refused(account, account_state(account_type, [("USD", "-0.01", "0.00")]))


def test_a_margin_account_may_hold_a_negative_total() -> None:
    account = Account(account_state(MARGIN, [("USD", "10.00", "0.00")]))
    account.apply(account_state(MARGIN, [("USD", "-5.00", "0.00")]))
    assert balances(account)["USD"][0] == "-5.00 USD"


def test_balances_are_replaced_per_currency_and_never_removed() -> None:
    account = replay_account(
        [
            account_state(CASH, [("USD", "1000.00", "0.00"), ("EUR", "500.00", "0.00")]),
            account_state(CASH, [("USD", "990.00", "10.00")]),
            account_state(CASH, [("BTC", "0.50000000", "0.00000000")]),
        ]
    )
    assert balances(account) == {
        "USD": ("990.00 USD", "10.00 USD", "980.00 USD"),
        "EUR": ("500.00 EUR", "0.00 EUR", "500.00 EUR"),
        "BTC": ("0.50000000 BTC", "0.00000000 BTC", "0.50000000 BTC"),
    }
    assert account.event_count == 3
    assert account.balance(EUR) is not None
    with pytest.raises(ValueError):
        account.balance()  # a multi-currency account needs the currency named


def test_a_margin_account_keeps_the_margins_of_its_first_state_only() -> None:
    first = account_state(
        MARGIN,
        [("USD", "1000.00", "300.00")],
        margins=[("USD", "200.00", "100.00", "EUR/USD.SIM"), ("USD", "100.00", "50.00", "GBP/USD.SIM")],
    )
    later = account_state(MARGIN, [("USD", "1000.00", "500.00")], margins=[("USD", "500.00", "250.00", "AUD/USD.SIM")])
    account = replay_account([first, later])
    margins = account.margins()
    assert sorted(str(key) for key in margins) == ["EUR/USD.SIM", "GBP/USD.SIM"]
    assert str(margins["EUR/USD.SIM"].initial) == "200.00 USD"
    assert account.event_count == 2
    assert account.last_event is later


def test_a_cash_account_ignores_margins() -> None:
    state = account_state(CASH, [("USD", "10.00", "0.00")], margins=[("USD", "1.00", "1.00", "EUR/USD.SIM")])
    assert Account(state).margins() == {}
