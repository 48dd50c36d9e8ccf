"""The ledger: what storing one message means, as pure logic.

A `Ledger` holds the state of one trader that validation needs (orders, positions, accounts,
known instruments and the ids already stored) and turns each decoded message into an `Outcome`:
the `Write`s to make (append an event to a list, set a value, merge a hash, delete), or a
duplicate, or an `EventRejected`. It applies SPEC section 1's rules of application:

- order events go to their order's list: OrderInitialized creates it, any other event needs it
  (`unknown_order`) and must pass the order's state machine (`invalid_transition`);
- an OrderFilled with a position_id also goes to that position's list; a fill that takes an open
  position through zero is stored as its closing and opening halves (`positions.split_flip`);
  when the node names the new side itself (`P-` ids) the opening half waits for the
  PositionOpened that carries the new id;
- position events are not stored: they are compared with the position rebuilt from the stored
  fills and a mismatch is reported as `divergence`;
- an event whose id is already stored for its entity is a duplicate: nothing is written.

Nothing here does I/O. The Redis executors turn `Write`s into commands (`tradecache.cache`).
A refused message raises before any state changes, so the ledger stays as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple

from tradecache.errors import EventRejected, OrderEventRefused, RejectReason
from tradecache.model.accounts import Account, replay_account
from tradecache.model.budget import BALANCE_BYTES, ENTITY_BYTES, MemoryBudget, event_bytes, instrument_bytes
from tradecache.model.enums import PositionSide
from tradecache.model.events import (
    AccountState,
    OrderEvent,
    OrderFilled,
    OrderInitialized,
    PositionClosed,
    PositionEvent,
    PositionOpened,
    StrategyDeleted,
    StrategyState,
    SubmitOrder,
    SubmitOrderList,
)
from tradecache.model.identifiers import ClientOrderId, TraderId
from tradecache.model.instruments import Instrument
from tradecache.model.maybe_set import MaybeSet
from tradecache.model.messages import Kind, Message, type_name_of
from tradecache.model.order_fsm import CLOSED_STATUSES
from tradecache.model.orders import Order, replay_order
from tradecache.model.positions import Position, flips, split_flip
from tradecache.model.values import Currency, register_currency

# Account event ids remembered in memory for dedupe (older repeats are caught by the store).
RECENT_ACCOUNT_EVENTS: Final = 100_000
# Estimated bytes of orders, positions, accounts and instruments kept in memory (`model/budget.py`).
DEFAULT_MEMORY_BUDGET: Final = 64 * 1024 * 1024
# Opening halves held in memory for their PositionOpened (`Ledger.pending_openings`). Past this
# many, the oldest wait in the store only, and from then on each PositionOpened whose half memory
# lacks reads it by id (a producer that never sends PositionOpened cannot grow memory).
MAX_PENDING_OPENINGS: Final = 10_000
# Position ids the node generates itself; a flip gives the new side a fresh one of these.
NODE_POSITION_ID_PREFIX: Final = "P-"


def purged(at_ms: int) -> str:
    """Why an event for an order retention removed is refused."""
    when = datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="seconds")
    return (
        f"the order was closed and removed by retention at {when}; an event arriving after that is not applied "
        "(retention.closed_orders_after is shorter than this event's delay)"
    )


class Collection(StrEnum):
    """The stored collections of SPEC section 2 (the middle part of each key)."""

    CURRENCIES = "currencies"
    INSTRUMENTS = "instruments"
    ACCOUNTS = "accounts"
    ORDERS = "orders"
    POSITIONS = "positions"
    STRATEGIES = "strategies"
    SUBMIT_ORDER = "commands:submit_order"
    SUBMIT_ORDER_LIST = "commands:submit_order_list"


class WriteOp(StrEnum):
    APPEND = "append"  # push to the end of a list
    SET = "set"  # replace a whole value
    MERGE = "merge"  # set fields of a hash
    DELETE = "delete"  # remove the key


# Budget keys per collection, looked up once (a StrEnum member lookup costs on the hot path).
_ORDERS, _POSITIONS, _ACCOUNTS, _INSTRUMENTS = (
    Collection.ORDERS.value,
    Collection.POSITIONS.value,
    Collection.ACCOUNTS.value,
    Collection.INSTRUMENTS.value,
)
# Enum members the hot paths use, as module globals: `Enum.MEMBER` costs ~75 ns, a global ~10.
_C_ORDERS, _C_POSITIONS, _C_ACCOUNTS, _C_SUBMIT_ORDER = (
    Collection.ORDERS,
    Collection.POSITIONS,
    Collection.ACCOUNTS,
    Collection.SUBMIT_ORDER,
)
_APPEND, _SET = WriteOp.APPEND, WriteOp.SET
_KIND_ORDER, _KIND_ACCOUNT, _KIND_COMMAND = Kind.ORDER, Kind.ACCOUNT, Kind.COMMAND
_FLAT: Final = PositionSide.FLAT


@dataclass(slots=True, unsafe_hash=True)
class Write:
    """One change to the store. `value` is the message (or, for MERGE, the fields to set).

    Not changed once built, but not declared frozen: a frozen dataclass sets each field through
    `object.__setattr__`, which doubled the cost of building one (one or more per message)."""

    op: WriteOp
    collection: Collection
    key: str
    value: Message | dict[str, bytes] | None = None


class Mark(NamedTuple):
    """Retention's bookkeeping: an order that closed (`closed` True) or reopened; a position that
    went flat with the fill `event_id` (each such point closes a cycle of its fills), followed by
    `later` more fills of the same message (a flip's opening half)."""

    collection: Collection
    key: str
    closed: bool
    event_id: str = ""
    later: int = 0


class Divergence(NamedTuple):
    position_id: str
    event_type: str
    differences: tuple[str, ...]


@dataclass(slots=True)
class Outcome:
    """What applying one message did.

    The fields most messages leave empty default to one shared empty tuple, not a new list each
    (four lists per message were a good part of the ledger's allocations, and of its GC work);
    the ledger assigns a list when it has something to put there."""

    kind: Kind
    writes: list[Write] = field(default_factory=list)
    duplicate: bool = False
    divergence: Divergence | None = None
    # A duplicate recognised in memory, as the append it repeats: the store checks that what it
    # holds under that id is the same (a different payload is a conflict, not a duplicate).
    checks: Sequence[Write] = ()
    # Orders and positions that closed or reopened (retention purges closed ones after an age).
    marks: Sequence[Mark] = ()
    # Opening halves of flips now waiting for their PositionOpened, and the opening order ids of
    # those that stopped waiting: stored beside the writes (they must survive a restart).
    held: Sequence[OrderFilled] = ()
    released: Sequence[str] = ()


class PositionSummary(NamedTuple):
    """The fields a position event is checked against (SPEC section 1)."""

    side: str
    quantity: str
    signed_qty: float
    avg_px_open: float
    realized_pnl: str | None

    @classmethod
    def of(cls, position: Position) -> PositionSummary:
        pnl = None if position.realized_pnl is None else str(position.realized_pnl)
        return cls(position.side.name, str(position.quantity), position.signed_qty, position.avg_px_open, pnl)

    @classmethod
    def published(cls, event: PositionEvent) -> PositionSummary:
        pnl = None if event.realized_pnl is None else str(event.realized_pnl)
        return cls(event.side.name, str(event.quantity), event.signed_qty, event.avg_px_open, pnl)

    def differences(self, other: PositionSummary) -> tuple[str, ...]:
        return tuple(
            f"{name}: stored {mine!r} != published {theirs!r}"
            for name, mine, theirs in zip(self._fields, self, other, strict=True)
            if mine != theirs
        )


class Ledger:
    """The stored state of one trader, as far as validating the next message needs it."""

    def __init__(self, trader_id: TraderId, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.trader_id = trader_id
        self.budget = MemoryBudget(memory_budget)
        self.orders: dict[str, Order] = {}
        self.positions: dict[str, Position] = {}
        self.accounts: dict[str, Account] = {}
        self.instruments: dict[str, Instrument] = {}
        # The instruments `_instrument_for_positions` found a position can be computed with (by
        # id; valid while `instruments` holds that very object): checked once, not per fill.
        self._positionable: dict[str, Instrument] = {}
        # After a fill leaves a position FLAT: what its PositionClosed should say.
        self.closed_summaries: dict[str, PositionSummary] = {}
        # Opening halves of split fills waiting for the node's PositionOpened to name their id.
        # They are stored too (a hash of the trader's), and read back once after a start (the
        # whole hash: memory then holds them all), or one by one when needed once there were
        # more than MAX_PENDING_OPENINGS (memory holds some; kept across resets).
        self.pending_openings: dict[ClientOrderId, OrderFilled] = {}
        self._pending_openings_read = False
        self._pending_openings_by_id = False
        # Orders changed since the last `evict`, and the latest account event ids (dedupe of
        # older repeats is left to the store's seen-hash; applying a state twice is harmless).
        self._touched_orders: set[str] = set()
        self._recent_account_events: dict[str, None] = {}
        # Orders retention removed, as read with the state of the current batch (see `hydrate`).
        self._purged_orders: dict[str, int] = {}
        # Counts the resets: work applied ahead on this memory is valid only while it is unchanged.
        self.generation = 0
        # Since the store was known empty (`assume_empty_store`): the entities stored that memory
        # does not hold (dropped, or written without being kept). None: the store is not known.
        self._stored_not_held: MaybeSet | None = None

    # -- entry point ---------------------------------------------------------------------

    def assume_empty_store(self) -> None:
        """The store holds nothing of this trader now, and only this ledger writes it from here
        (`tradecache rebuild`, after its checks or its flush). Then an entity memory does not
        hold is stored only if it was written and then dropped (or written without being kept):
        those are remembered in a filter of fixed size that may say "maybe" (a read, as without
        this), and `missing` asks for no other. `reset` ends it."""
        self._stored_not_held = MaybeSet()

    def apply(self, message: Message) -> Outcome:
        """Apply one decoded message. Raises `EventRejected` (and changes nothing) if it is refused."""
        # One lookup of the message's class instead of a chain of isinstance tests.
        handler = _HANDLERS.get(message.__class__)
        if handler is None:
            handler = _handler_for(message.__class__)
        outcome = handler(self, message)
        if self._stored_not_held is not None:
            for write in outcome.writes:
                held = self._held(write.collection)
                if held is not None and write.key not in held:  # e.g. a position with no instrument
                    self._note_stored(write.collection, write.key)
        return outcome

    def _held(self, collection: Collection) -> Mapping[str, object] | None:
        """Memory's entities of `collection`, for those `missing` reads (None: another one)."""
        if collection is Collection.ORDERS:
            return self.orders
        if collection is Collection.POSITIONS:
            return self.positions
        if collection is Collection.ACCOUNTS:
            return self.accounts
        if collection is Collection.INSTRUMENTS:
            return self.instruments
        return None

    def _note_stored(self, collection: Collection, key: str) -> None:
        if self._stored_not_held is not None:
            self._stored_not_held.add((collection._value_, key))  # plain strs: hashed in C

    def _apply(self, message: Message) -> Outcome:
        """Any message (`_HANDLERS` takes the most frequent classes straight to their part)."""
        self._check_trader(message)
        if isinstance(message, OrderEvent):
            return self._apply_order_event(message)
        if isinstance(message, PositionEvent):
            return self._apply_position_event(message)
        if isinstance(message, AccountState):
            return self._apply_account_state(message)
        if isinstance(message, SubmitOrder):
            return self._apply_command(_C_SUBMIT_ORDER, message.client_order_id, message)
        if isinstance(message, SubmitOrderList):
            return self._apply_command(Collection.SUBMIT_ORDER_LIST, message.order_list_id, message)
        if isinstance(message, StrategyState):
            merge = Write(WriteOp.MERGE, Collection.STRATEGIES, message.strategy_id.value, dict(message.state))
            return Outcome(Kind.STRATEGY, [merge])
        if isinstance(message, StrategyDeleted):
            return Outcome(Kind.STRATEGY, [Write(WriteOp.DELETE, Collection.STRATEGIES, message.strategy_id.value)])
        if isinstance(message, Currency):
            register_currency(message)
            return Outcome(Kind.CURRENCY, [Write(WriteOp.SET, Collection.CURRENCIES, message.code, message)])
        self.instruments[message.id.value] = message
        self._positionable.pop(message.id.value, None)  # checked again when a fill needs it
        self.budget.set((_INSTRUMENTS, message.id.value), instrument_bytes(message.data))
        return Outcome(Kind.INSTRUMENT, [Write(WriteOp.SET, Collection.INSTRUMENTS, message.id.value, message)])

    def _check_trader(self, message: Message) -> None:
        trader_id = getattr(message, "trader_id", None)
        if trader_id is not None and trader_id != self.trader_id:
            self._refuse_trader(message, trader_id)

    def _refuse_trader(self, message: Message, trader_id: object) -> None:
        raise EventRejected(
            RejectReason.TRADER_MISMATCH,
            f"{type_name_of(message)} is for trader '{trader_id}', this sidecar serves '{self.trader_id}'",
        )

    # -- orders --------------------------------------------------------------------------

    def _order_message(self, event: OrderEvent) -> Outcome:
        """An order event (the handler `apply` finds for its class): the trader's check, then applied."""
        trader_id = event.trader_id
        if trader_id is not None and trader_id != self.trader_id:
            self._refuse_trader(event, trader_id)
        return self._apply_order_event(event)

    def _apply_order_event(self, event: OrderEvent) -> Outcome:
        key = event.client_order_id.value
        self._touched_orders.add(key)
        order = self.orders.get(key)
        if order is None:
            if key in self._purged_orders:
                raise OrderEventRefused(
                    RejectReason.UNKNOWN_ORDER, key, event.type_name, purged(self._purged_orders[key])
                )
            if not isinstance(event, OrderInitialized):
                raise OrderEventRefused(
                    RejectReason.UNKNOWN_ORDER, key, event.type_name, "no OrderInitialized was stored for it"
                )
            self.orders[key] = Order(event)
            self.budget.set((_ORDERS, key), ENTITY_BYTES + event_bytes(event))
            return Outcome(_KIND_ORDER, [Write(_APPEND, _C_ORDERS, key, event)])
        if order.has_event(event.event_id):
            return Outcome(_KIND_ORDER, [], True, None, [Write(_APPEND, _C_ORDERS, key, event)])
        if isinstance(event, OrderFilled) and event.position_id is not None:
            return self._apply_fill_with_position(order, event)
        was_closed = order.status in CLOSED_STATUSES
        order.apply(event)
        self.budget.add((_ORDERS, key), event_bytes(event))
        writes = [Write(_APPEND, _C_ORDERS, key, event)]
        # Closed (again: a late event a closed order accepts restarts its age), or reopened (a
        # late fill of a canceled order): see `_order_marks`.
        if order.status in CLOSED_STATUSES:
            return Outcome(_KIND_ORDER, writes, False, None, (), [Mark(_C_ORDERS, key, True)])
        if was_closed:
            return Outcome(_KIND_ORDER, writes, False, None, (), [Mark(_C_ORDERS, key, False)])
        return Outcome(_KIND_ORDER, writes)

    def _apply_fill_with_position(self, order: Order, fill: OrderFilled) -> Outcome:
        assert fill.position_id is not None
        position_key = fill.position_id.value
        position = self.positions.get(position_key)
        instrument = self._instrument_for_positions(fill.instrument_id.value)
        stored, waiting = self._position_fills(fill, position)
        if position is not None and position.is_open and position.is_duplicate(stored[0]):
            raise EventRejected(
                RejectReason.INVALID_TRANSITION,
                f"position '{position_key}' already holds trade '{fill.trade_id}' with the same side, price "
                "and quantity",
            )
        was_closed = order.is_closed
        order.apply(fill)  # raises (changing nothing) if the order refuses the fill
        # Accepted: from here on state changes.
        self.budget.add((_ORDERS, order.client_order_id.value), event_bytes(fill))
        if waiting is not None:
            self._hold_opening(waiting)
        writes = [Write(_APPEND, _C_ORDERS, order.client_order_id.value, fill)]
        marks = _order_marks(order, was_closed)
        for index, half in enumerate(stored):
            writes.append(self._store_position_fill(half, instrument))
            held = self.positions.get(position_key)
            if held is not None and held.side == _FLAT:
                # A closed cycle: the fills up to this one are history once it is old enough
                # (retention), whether the position stays flat or a NETTING id opens again.
                later = len(stored) - 1 - index
                marks = [*marks, Mark(_C_POSITIONS, position_key, True, half.event_id, later)]
        return Outcome(_KIND_ORDER, writes, marks=marks, held=() if waiting is None else [waiting])

    def _instrument_for_positions(self, instrument_id: str) -> Instrument | None:
        """The instrument, if a position can be computed with it.

        An instrument of a type this project does not know is kept whole, and may lack what a
        position needs (a quote currency, a base currency when inverse). Its fills are stored
        all the same, as for an instrument never received; only the in-memory position (and so
        the check of position events) is skipped.
        """
        instrument = self.instruments.get(instrument_id)
        if instrument is None:
            return None
        self.budget.touch((_INSTRUMENTS, instrument_id))
        if self._positionable.get(instrument_id) is instrument:
            return instrument
        try:
            instrument.get_cost_currency()
            instrument.quote_currency  # noqa: B018  # raises when it cannot be read
            instrument.multiplier.as_double()
            instrument.size_precision  # noqa: B018
        except (ValueError, TypeError, KeyError, ArithmeticError):
            return None
        self._positionable[instrument_id] = instrument
        return instrument

    def _position_fills(
        self, fill: OrderFilled, position: Position | None
    ) -> tuple[list[OrderFilled], OrderFilled | None]:
        """The fills to store now for `fill` (itself, or the halves of a flip), and an opening half
        that must wait for the node to name its position (HEDGING `P-` ids)."""
        if not flips(position, fill):
            return [fill], None
        assert position is not None
        assert fill.position_id is not None
        closing, opening = split_flip(position, fill)
        if opening is None:
            return [closing], None
        if fill.position_id.value.startswith(NODE_POSITION_ID_PREFIX):
            # The node gives the new side an id of its own, published in the next PositionOpened.
            return [closing], opening
        return [closing, opening], None

    def _store_position_fill(self, fill: OrderFilled, instrument: Instrument | None) -> Write:
        assert fill.position_id is not None
        key = fill.position_id.value
        if instrument is not None:
            position = self.positions.get(key)
            if position is None:
                position = self.positions[key] = Position(instrument, fill)
                self.budget.set((_POSITIONS, key), ENTITY_BYTES + event_bytes(fill))
            else:
                position.apply(fill)
                if position.event_count == 1:
                    # Reopened after FLAT: memory holds this cycle's fills only (the stored
                    # list keeps every cycle's, but it is not what is charged).
                    self.budget.set((_POSITIONS, key), ENTITY_BYTES + event_bytes(fill))
                else:
                    self.budget.add((_POSITIONS, key), event_bytes(fill))
            if position.side == _FLAT:
                self.closed_summaries[key] = PositionSummary.of(position)
        return Write(_APPEND, _C_POSITIONS, key, fill)

    # -- position events -----------------------------------------------------------------

    def _apply_position_event(self, event: PositionEvent) -> Outcome:
        outcome = Outcome(Kind.POSITION)
        if isinstance(event, PositionOpened):
            outcome.writes.extend(self._release_pending_opening(event, outcome))
        key = event.position_id.value
        expected = (
            self.closed_summaries.get(key)
            if isinstance(event, PositionClosed)
            else (PositionSummary.of(self.positions[key]) if key in self.positions else None)
        )
        if expected is None:
            outcome.divergence = Divergence(key, event.type_name, ("no stored position to compare with",))
            return outcome
        differences = expected.differences(PositionSummary.published(event))
        if differences:
            outcome.divergence = Divergence(key, event.type_name, differences)
        return outcome

    def _hold_opening(self, opening: OrderFilled) -> None:
        pending = self.pending_openings
        pending[opening.client_order_id] = opening
        if len(pending) > MAX_PENDING_OPENINGS:  # the oldest waits in the store only
            del pending[next(iter(pending))]
            self._pending_openings_read = False
            self._pending_openings_by_id = True

    def _release_pending_opening(self, event: PositionOpened, outcome: Outcome) -> list[Write]:
        opening = self.pending_openings.pop(event.opening_order_id, None)
        if opening is None:
            return []
        outcome.released = [str(event.opening_order_id)]
        if opening.order_side != event.entry:
            return []
        named = dataclasses.replace(opening, position_id=event.position_id)
        instrument = self.instruments.get(named.instrument_id.value)
        return [self._store_position_fill(named, instrument)]

    # -- accounts and commands -------------------------------------------------------------

    def _apply_account_state(self, state: AccountState) -> Outcome:
        key = state.account_id.value
        account = self.accounts.get(key)
        if state.event_id in self._recent_account_events:
            repeated = Write(_APPEND, _C_ACCOUNTS, key, state)
            return Outcome(_KIND_ACCOUNT, [], True, checks=[repeated])
        if account is None:
            account = self.accounts[key] = Account(state)
        else:
            account.apply(state)
        self._charge_account(key, account)
        self._recent_account_events[state.event_id] = None
        return Outcome(_KIND_ACCOUNT, [Write(_APPEND, _C_ACCOUNTS, key, state)])

    def _charge_account(self, key: str, account: Account) -> None:
        # Accounts keep their current state only (`evict`): balances and margins, no history.
        cost = ENTITY_BYTES + BALANCE_BYTES * account.holdings + event_bytes(account.last_event)
        self.budget.set((_ACCOUNTS, key), cost)

    def _apply_command(self, collection: Collection, key: str, command: SubmitOrder | SubmitOrderList) -> Outcome:
        # A repeated command_id is recognised by the store (the write is "set if new"), which
        # keeps the ledger from remembering every command ever sent.
        return Outcome(_KIND_COMMAND, [Write(_SET, collection, key, command)])

    def _submit_order(self, command: SubmitOrder) -> Outcome:
        trader_id = command.trader_id
        if trader_id is not None and trader_id != self.trader_id:
            self._refuse_trader(command, trader_id)
        return self._apply_command(_C_SUBMIT_ORDER, command.client_order_id, command)

    # -- state kept in memory, and state brought back from the store ------------------------

    def missing(self, messages: Iterable[Message], *, assume_new: bool = False) -> StateRequest:
        """The stored entities `messages` refer to that are not in memory (to read before applying).

        With `assume_new`, an order memory lacks whose first event among `messages` is its
        OrderInitialized is taken for new instead of read (`StateRequest.assumed_orders`): the
        caller must make its writes conditional on that (`ScriptCall.expect_new`), since the
        store may still hold it (a restart, an eviction, another writer before this one).
        """
        request = StateRequest()
        assumed = request.assumed_orders
        for message in messages:
            if isinstance(message, OrderEvent):
                key = message.client_order_id.value
                if key not in self.orders and key not in assumed and self._maybe_stored(Collection.ORDERS, key):
                    if (
                        assume_new
                        and message.__class__ is OrderInitialized
                        and key not in request.orders
                        and key not in self._purged_orders
                    ):
                        assumed.add(key)
                    else:
                        request.orders.add(key)
                if isinstance(message, OrderFilled) and message.position_id is not None:
                    self._request_position(request, message.position_id.value, message.instrument_id.value)
            elif isinstance(message, PositionEvent):
                self._request_position(request, message.position_id.value, message.instrument_id.value)
                if isinstance(message, PositionOpened) and not self._pending_openings_read:
                    if not self._pending_openings_by_id:
                        request.pending_openings = True
                        request.pending_limit = MAX_PENDING_OPENINGS
                    elif message.opening_order_id not in self.pending_openings:
                        request.pending_ids.add(str(message.opening_order_id))
            elif isinstance(message, AccountState):
                key = message.account_id.value
                if key not in self.accounts and self._maybe_stored(Collection.ACCOUNTS, key):
                    request.accounts.add(key)
        return request

    def _maybe_stored(self, collection: Collection, key: str) -> bool:
        """Whether an entity memory does not hold may be stored (always, unless `assume_empty_store`)."""
        stored = self._stored_not_held
        return stored is None or (collection._value_, key) in stored

    def _request_position(self, request: StateRequest, position_id: str, instrument_id: str) -> None:
        if position_id not in self.positions and self._maybe_stored(Collection.POSITIONS, position_id):
            request.positions.add(position_id)
        if instrument_id not in self.instruments and self._maybe_stored(Collection.INSTRUMENTS, instrument_id):
            request.instruments.add(instrument_id)

    def hydrate(self, stored: StoredState) -> None:
        """Take entities read from the store (absent ones are simply not in `stored`)."""
        self._purged_orders.update(stored.purged_orders)
        held = stored.pending_openings
        if stored.pending_openings_over or (held is not None and len(held) > MAX_PENDING_OPENINGS):
            self._pending_openings_by_id = True  # too many: memory keeps its own, the rest is read by id
        elif held is not None:
            for opening in held:
                # Memory may hold newer ones than the store's copy (this batch's): it wins.
                self.pending_openings.setdefault(opening.client_order_id, opening)
            self._pending_openings_read = True
        for opening in stored.pending_by_id:
            if opening.client_order_id not in self.pending_openings:
                self._hold_opening(opening)
        for key, stored_instrument in stored.instruments.items():
            self.instruments[key] = stored_instrument
            self.budget.set((_INSTRUMENTS, key), instrument_bytes(stored_instrument.data))
        for key, events in stored.orders.items():
            if events and key not in self.orders:
                self.orders[key] = replay_order(events)
                self.budget.set((_ORDERS, key), ENTITY_BYTES + sum(event_bytes(e) for e in events))
        for key, states in stored.accounts.items():
            if states and key not in self.accounts:
                account = self.accounts[key] = replay_account(states)
                self._recent_account_events.update((state.event_id, None) for state in states[-1000:])
                account.forget_history()
                self._charge_account(key, account)
        for key, fills in stored.positions.items():
            if not fills or key in self.positions:
                continue
            instrument = self._instrument_for_positions(fills[0].instrument_id.value)
            if instrument is None:
                continue
            position = self.positions[key] = self._replay_position(key, instrument, fills)
            # Charged for what memory keeps: the fills since the position last went FLAT.
            self.budget.set((_POSITIONS, key), ENTITY_BYTES + sum(event_bytes(f) for f in position.events))

    def _replay_position(self, key: str, instrument: Instrument, fills: list[OrderFilled]) -> Position:
        """The position rebuilt from its fills, noting what it was the last time it went FLAT.

        A PositionClosed is compared with that state. After a restart between a flipping fill
        (stored as a closing and an opening half) and the PositionClosed that follows it, the
        position read back is open again; its last FLAT state is what the node closed.
        """
        position = Position(instrument, fills[0])
        if position.side == PositionSide.FLAT:
            self.closed_summaries[key] = PositionSummary.of(position)
        for fill in fills[1:]:
            position.apply(fill)
            if position.side == PositionSide.FLAT:
                self.closed_summaries[key] = PositionSummary.of(position)
        return position

    def forget(self, message: Message) -> None:
        """Drop from memory what `message` may have touched (it is read back when needed)."""
        for name, store, collection in (
            ("client_order_id", self.orders, Collection.ORDERS),
            ("position_id", self.positions, Collection.POSITIONS),
            ("account_id", self.accounts, Collection.ACCOUNTS),
        ):
            key = getattr(message, name, None)
            if key is not None:
                self._note_stored(collection, str(key))
                store.pop(str(key), None)
                self.budget.drop((collection.value, str(key)))
        if isinstance(message, Instrument):
            self._note_stored(Collection.INSTRUMENTS, message.id.value)
            self.instruments.pop(message.id.value, None)
            self._positionable.pop(message.id.value, None)
            self.budget.drop((_INSTRUMENTS, message.id.value))
        if isinstance(message, AccountState):
            self._recent_account_events.pop(message.event_id, None)
        client_order_id = getattr(message, "client_order_id", None)
        if client_order_id is not None and self.pending_openings.pop(client_order_id, None) is not None:
            self._pending_openings_read = False  # read back from the store when next needed
        position_id = getattr(message, "position_id", None)
        if position_id is not None:
            self.closed_summaries.pop(str(position_id), None)

    def reset(self) -> None:
        """Forget everything read from or written to the store; it is read back when needed.

        For when memory may hold what Redis does not (a write Redis refused) or Redis what memory
        does not (another writer). Opening halves waiting for their PositionOpened too: they are
        stored with the fill that made them, so the store's copy is the one to trust.
        """
        self.pending_openings.clear()
        self._pending_openings_read = False
        self.orders.clear()
        self.positions.clear()
        self.accounts.clear()
        self.instruments.clear()
        self._positionable.clear()
        self.closed_summaries.clear()
        self._touched_orders.clear()
        self._recent_account_events.clear()
        self._purged_orders.clear()
        self.budget.clear()
        self.generation += 1
        self._stored_not_held = None  # memory no longer knows what is stored

    def evict(self, open_orders_limit: int, positions_limit: int = 100_000) -> int:
        """Bound memory after a batch; what is dropped is read back from the store when needed.

        Closed orders touched by the batch are forgotten and open orders are capped (oldest
        first). Positions are kept, flat ones included (a NETTING position's list keeps growing,
        so reading it back on every reopening would cost more each time), up to
        `positions_limit`, beyond which the least recently used flat ones go. Accounts keep
        their state but not their history. Then, while the estimated size of what is left is
        over the memory budget, the least recently used entities of any kind go. Returns how
        many orders were dropped.
        """
        before = len(self.orders)
        self._purged_orders.clear()
        for key in self._touched_orders:
            order = self.orders.get(key)
            if order is not None and order.is_closed:
                self._drop(Collection.ORDERS, key)
        self._touched_orders.clear()
        if len(self.orders) > open_orders_limit:
            # Oldest first: dicts keep insertion order, and orders are inserted when initialized.
            for key in list(self.orders)[: len(self.orders) - open_orders_limit]:
                self._drop(Collection.ORDERS, key)
        if len(self.positions) > positions_limit:
            flat = [key for key, position in self.positions.items() if position.is_closed]
            for key in flat[: len(self.positions) - positions_limit]:
                self._drop(Collection.POSITIONS, key)
        for account in self.accounts.values():
            account.forget_history()
        while len(self._recent_account_events) > RECENT_ACCOUNT_EVENTS:
            del self._recent_account_events[next(iter(self._recent_account_events))]
        for collection, key in self.budget.evict():
            self._drop(Collection(collection), key, charged=False)
        return before - len(self.orders)

    def _drop(self, collection: Collection, key: str, *, charged: bool = True) -> None:
        self._note_stored(collection, key)
        if charged:
            self.budget.drop((collection.value, key))
        if collection == Collection.ORDERS:
            self.orders.pop(key, None)
        elif collection == Collection.POSITIONS:
            self.positions.pop(key, None)
            self.closed_summaries.pop(key, None)
        elif collection == Collection.ACCOUNTS:
            self.accounts.pop(key, None)
        else:
            self.instruments.pop(key, None)
            self._positionable.pop(key, None)


def _order_marks(order: Order, was_closed: bool) -> Sequence[Mark]:
    """Closed (again: a late event a closed order accepts restarts its age), or reopened (a late
    fill of a canceled order)."""
    if order.is_closed:
        return [Mark(_C_ORDERS, order.client_order_id.value, True)]
    if was_closed:
        return [Mark(_C_ORDERS, order.client_order_id.value, False)]
    return ()


# What `Ledger.apply` calls for a message of a class, found once per class (`_handler_for`).
_Handler = Callable[[Ledger, Any], Outcome]
_HANDLERS: dict[type, _Handler] = {}


def _handler_for(cls: type) -> _Handler:
    """The handler of messages of class `cls`: the classes most messages are get their own (the
    trader's check in place, no isinstance chain); any other takes `Ledger._apply`, which checks
    what it is."""
    handler: _Handler
    if issubclass(cls, OrderEvent):
        handler = Ledger._order_message
    elif issubclass(cls, AccountState) and not hasattr(cls, "trader_id"):  # nothing to check
        handler = Ledger._apply_account_state
    elif issubclass(cls, SubmitOrder):
        handler = Ledger._submit_order
    else:
        handler = Ledger._apply
    _HANDLERS[cls] = handler
    return handler


@dataclass
class StateRequest:
    """Ids of stored entities to read before a batch is applied."""

    orders: set[str] = field(default_factory=set)
    positions: set[str] = field(default_factory=set)
    accounts: set[str] = field(default_factory=set)
    instruments: set[str] = field(default_factory=set)
    # The opening halves waiting for their PositionOpened: all of them (once after a start), or
    # those of these opening orders (`MAX_PENDING_OPENINGS`).
    pending_openings: bool = False
    pending_limit: int = 0  # ... unless the hash holds more than this many (0: no limit)
    pending_ids: set[str] = field(default_factory=set)
    # Orders taken for new without a read (`Ledger.missing(assume_new=True)`): nothing to read.
    assumed_orders: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.orders
            or self.positions
            or self.accounts
            or self.instruments
            or self.pending_openings
            or self.pending_ids
        )


@dataclass
class StoredState:
    """Entities read from the store: event lists (empty when absent) and instruments."""

    orders: dict[str, list[OrderEvent]] = field(default_factory=dict)
    positions: dict[str, list[OrderFilled]] = field(default_factory=dict)
    accounts: dict[str, list[AccountState]] = field(default_factory=dict)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    # The opening halves waiting for their PositionOpened, when they were asked for: all of them,
    # or those found of the ids asked for.
    pending_openings: list[OrderFilled] | None = None
    pending_openings_over: bool = False  # asked for, and more than `pending_limit`: not sent
    pending_by_id: list[OrderFilled] = field(default_factory=list)
    # Orders retention removed (client order id -> when, ms since the epoch): refused as purged.
    purged_orders: dict[str, int] = field(default_factory=dict)


__all__ = [
    "NODE_POSITION_ID_PREFIX",
    "Collection",
    "Divergence",
    "Ledger",
    "Mark",
    "Outcome",
    "PositionSummary",
    "StateRequest",
    "StoredState",
    "Write",
    "WriteOp",
]
