"""Accounts rebuilt from AccountState events (wire-format.md section 8).

The first state creates the account (cash, margin or betting) and fixes its type and base
currency. Each later state must agree with them; its balances replace the balances of the same
currencies, other currencies keep theirs. A margin account keeps the margins of its first state
only, as NautilusTrader's replay does.
"""

from __future__ import annotations

from collections.abc import Iterable

from tradecache.errors import EventRejected, RejectReason
from tradecache.model.enums import AccountType
from tradecache.model.events import AccountBalance, AccountState, MarginBalance
from tradecache.model.identifiers import AccountId, InstrumentId
from tradecache.model.values import Currency, Money


class Account:
    """A cash, margin or betting account."""

    def __init__(self, state: AccountState) -> None:
        self.id: AccountId = state.account_id
        self.account_type: AccountType = state.account_type
        self.base_currency: Currency | None = state.base_currency
        self._balances: dict[str, AccountBalance] = {}
        self._margins: dict[InstrumentId | None, MarginBalance] = {}
        self.events: list[AccountState] = []
        self._check_balances(state)
        self._take_state(state)
        if self.account_type == AccountType.MARGIN:
            for margin in state.margins:
                self._margins[margin.instrument_id] = margin

    @property
    def is_cash_account(self) -> bool:
        return self.account_type == AccountType.CASH

    @property
    def is_margin_account(self) -> bool:
        return self.account_type == AccountType.MARGIN

    @property
    def event_count(self) -> int:
        return len(self.events)

    @property
    def last_event(self) -> AccountState:
        return self.events[-1]

    @property
    def event_ids(self) -> set[str]:
        return {event.event_id for event in self.events}

    @property
    def holdings(self) -> int:
        """How many balances and margins the account holds now."""
        return len(self._balances) + len(self._margins)

    def balances(self) -> dict[Currency, AccountBalance]:
        """The latest balance of each currency.

        Raises:
            Nothing.
        """
        return {balance.currency: balance for balance in self._balances.values()}

    def balance(self, currency: Currency | None = None) -> AccountBalance | None:
        """The latest balance in `currency` (the base currency when None), or None.

        Raises:
            ValueError: no `currency` given for a multi-currency account (it has no base currency).
        """
        code = (currency or self.base_currency or _no_currency()).code
        return self._balances.get(code)

    def balance_total(self, currency: Currency | None = None) -> Money | None:
        """The total of `balance(currency)`, or None.

        Raises:
            ValueError: no `currency` given for a multi-currency account (it has no base currency).
        """
        found = self.balance(currency)
        return None if found is None else found.total

    def balance_locked(self, currency: Currency | None = None) -> Money | None:
        """The locked part of `balance(currency)`, or None.

        Raises:
            ValueError: no `currency` given for a multi-currency account (it has no base currency).
        """
        found = self.balance(currency)
        return None if found is None else found.locked

    def balance_free(self, currency: Currency | None = None) -> Money | None:
        """The free part of `balance(currency)`, or None.

        Raises:
            ValueError: no `currency` given for a multi-currency account (it has no base currency).
        """
        found = self.balance(currency)
        return None if found is None else found.free

    def margins(self) -> dict[InstrumentId | None, MarginBalance]:
        """The latest margin of each instrument (None: the account-wide one).

        Raises:
            Nothing.
        """
        return dict(self._margins)

    def __repr__(self) -> str:
        return f"Account({self.id.value}, {self.account_type.name}, events={self.event_count})"

    def forget_history(self) -> None:
        """Drop all but the latest state from `events` (balances and margins are kept).

        For holders that only validate what comes next (the daemon's ledger): the history is in
        the store, and an account's states grow without bound.

        Raises:
            Nothing.
        """
        if len(self.events) > 1:
            del self.events[:-1]

    def apply(self, state: AccountState) -> None:
        """Apply a later state. Raises `EventRejected` and changes nothing when it does not fit.

        Raises:
            EventRejected: the state does not fit the account (another type or base currency, a balance
                whose total - locked is not free, a negative cash balance); nothing is changed.
        """
        problem = self._mismatch(state)
        if problem:
            raise EventRejected(RejectReason.INVALID_FIELD, f"AccountState for '{self.id}': {problem}")
        self._check_balances(state)
        self._take_state(state)

    def _mismatch(self, state: AccountState) -> str:
        if state.account_id != self.id:
            return f"account_id '{state.account_id}' differs"
        if state.account_type != self.account_type:
            return f"account_type {state.account_type.name} differs from {self.account_type.name}"
        base = None if state.base_currency is None else state.base_currency.code
        own = None if self.base_currency is None else self.base_currency.code
        if base != own:
            return f"base_currency {base} differs from {own}"
        if own is not None and (len(state.balances) != 1 or state.balances[0].currency.code != own):
            return f"a single-currency account takes exactly one balance, in {own}"
        return ""

    def _check_balances(self, state: AccountState) -> None:
        if self.account_type == AccountType.MARGIN:
            return
        for balance in state.balances:
            if balance.total.raw < 0:
                raise EventRejected(
                    RejectReason.INVALID_FIELD,
                    f"AccountState for '{state.account_id}': a {state.account_type.name} account cannot "
                    f"hold a negative total balance ({balance.total})",
                )

    def _take_state(self, state: AccountState) -> None:
        for balance in state.balances:
            self._balances[balance.currency.code] = balance
        self.events.append(state)


def _no_currency() -> Currency:
    raise ValueError("a multi-currency account needs the currency named")


def replay_account(states: Iterable[AccountState]) -> Account:
    """Rebuild an account from its stored states, oldest first."""
    iterator = iter(states)
    first = next(iterator, None)
    if first is None:
        raise ValueError("an account needs at least one AccountState")
    account = Account(first)
    for state in iterator:
        account.apply(state)
    return account


__all__ = ["Account", "replay_account"]
