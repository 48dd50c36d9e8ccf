"""Retention's pure parts: the marks the ledger makes, the sweep's requests and the purge ops it
plans from given answers (no server: the generator is fed by hand), and the policy config."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from tests.unit.factories import SERIALIZER, OrderEvents, currency_pair, fill
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall, conflict_operation, cycle_member, plan_marks
from tradecache.cache.retention import (
    Clock,
    ClosedIds,
    Cycle,
    IndexPage,
    Purge,
    ReadKeys,
    RetentionPolicy,
    SweepReport,
    digest,
    order_list_members,
    plan_position,
    seen_field,
    sweep,
    take,
)
from tradecache.config import parse_config
from tradecache.errors import ConfigError
from tradecache.model.enums import OrderSide, OrderType
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger, Mark

TRADER = "TESTER-001"
KEYS = Keys(TRADER)


def packed(data: dict[str, Any]) -> bytes:
    result: bytes = msgpack.packb(data, use_bin_type=True)
    return result


# -- marks ---------------------------------------------------------------------------------------


def test_an_order_is_marked_closed_when_it_closes_and_reopened_by_a_late_fill() -> None:
    ledger = Ledger(TraderId(TRADER))
    events = OrderEvents("O-1")
    for event in (events.initialized(OrderType.MARKET), events.submitted(), events.accepted()):
        assert not ledger.apply(event).marks  # none (an empty sequence)
    assert ledger.apply(events.canceled()).marks == [Mark(Collection.ORDERS, "O-1", closed=True)]
    late = events.filled("40", side=OrderSide.BUY, order_type=OrderType.MARKET)
    assert ledger.apply(late).marks == [Mark(Collection.ORDERS, "O-1", closed=False)]  # PARTIALLY_FILLED


def test_a_position_is_marked_at_each_fill_that_makes_it_flat_with_the_fills_after_it() -> None:
    ledger = Ledger(TraderId(TRADER))
    ledger.apply(currency_pair())

    def trade(coid: str, side: OrderSide, quantity: str) -> list[Mark]:
        events = OrderEvents(coid)
        for event in (events.initialized(OrderType.MARKET, side, quantity), events.submitted(), events.accepted()):
            ledger.apply(event)
        filled = events.filled(quantity, side=side, order_type=OrderType.MARKET, position_id="NET-1")
        return [mark for mark in ledger.apply(filled).marks if mark.collection == Collection.POSITIONS]

    assert trade("O-1", OrderSide.BUY, "100") == []
    closing = trade("O-2", OrderSide.SELL, "100")
    assert [(m.closed, m.later) for m in closing] == [(True, 0)]
    assert trade("O-3", OrderSide.BUY, "100") == []  # opens again: the cycle's mark stays
    flip = trade("O-4", OrderSide.SELL, "150")  # through zero: closing half, then the opening half
    assert [(m.closed, m.later) for m in flip] == [(True, 1)]


def test_marks_become_script_ops_on_the_closed_sets() -> None:
    call = ScriptCall()
    plan_marks(
        [Mark(Collection.ORDERS, "O-1", True), Mark(Collection.ORDERS, "O-2", False),
         Mark(Collection.POSITIONS, "P-1", True, "e-1", 1)],
        KEYS, call,
    )  # fmt: skip
    assert call.args == [3, "Z", "O-1", "U", "O-2", "Y", "P-1", "e-1", 1]
    assert call.keys == [
        KEYS.closed(Collection.ORDERS),
        KEYS.closed(Collection.ORDERS),
        KEYS.closed(Collection.POSITIONS),
        KEYS.entity(Collection.POSITIONS, "P-1"),
        KEYS.trimmed(Collection.POSITIONS),
        KEYS.seen(Collection.POSITIONS),  # only a fill this call appends is marked (not on a retry)
    ]
    assert call.writes == 0  # marks change no entity


def test_a_conflict_refusal_names_its_operation() -> None:
    refusal = "CONFLICT tradecache: operation 3: id x is already stored"
    assert conflict_operation(refusal) == (2, "id x is already stored")
    assert conflict_operation("WRONGTYPE tradecache: key holds a string") is None


# -- the sweep -----------------------------------------------------------------------------------


class Driver:
    """Feeds a sweep the answers a test gives, and keeps what it asked."""

    def __init__(self, policy: RetentionPolicy, token: str | None = "token") -> None:
        self.steps = sweep(policy, KEYS, token)
        self.request: Any = next(self.steps)
        self.report: SweepReport | None = None

    def answer(self, value: Any) -> Any:
        try:
            self.request = self.steps.send(value)
        except StopIteration as done:
            self.report = done.value
            self.request = None
        return self.request


def order_events(coid: str, *, order_list_id: str | None = None) -> list[bytes]:
    events = OrderEvents(coid)
    init = SERIALIZER.to_map(events.initialized(OrderType.MARKET))
    init["order_list_id"] = order_list_id
    return [packed(init), SERIALIZER.serialize(events.submitted()), SERIALIZER.serialize(events.denied())]


def event_id(raw: bytes) -> str:
    value: str = msgpack.unpackb(raw)["event_id"]
    return value


def test_a_sweep_of_orders_plans_their_removal_with_their_events_fields_and_command() -> None:
    driver = Driver(RetentionPolicy(closed_orders_after=60, slice_size=2))
    assert isinstance(driver.request, Clock)
    request = driver.answer(1_000_000)
    assert request == ClosedIds(KEYS.closed(Collection.ORDERS), 1_000_000 - 60_000, 2)
    one, two = order_events("O-1"), order_events("O-2", order_list_id="OL-1")
    command = packed({"type": "SubmitOrder", "command_id": "c-1"})
    reads = driver.answer(["O-1", "O-2"])
    assert isinstance(reads, ReadKeys)
    assert [(r.command, r.key) for r in reads.reads] == [
        ("LRANGE", KEYS.entity(Collection.ORDERS, "O-1")),
        ("LRANGE", KEYS.entity(Collection.ORDERS, "O-2")),
        ("GET", KEYS.entity(Collection.SUBMIT_ORDER, "O-1")),
        ("GET", KEYS.entity(Collection.SUBMIT_ORDER, "O-2")),
    ]
    lists = driver.answer([one, two, command, None])
    assert isinstance(lists, ReadKeys) and lists.reads[0].key == KEYS.entity(Collection.SUBMIT_ORDER_LIST, "OL-1")
    members = [{"client_order_id": "O-2"}, {"client_order_id": "O-3"}]
    order_list = packed({"type": "SubmitOrderList", "command_id": "c-9", "orders": members})
    purge = driver.answer([order_list])
    assert isinstance(purge, Purge)
    assert purge.kinds == ["fence", "orders", "orders", "submit_order_list_commands"]
    assert purge.args[:3] == [4, "F", "token"]
    first = purge.args.index("O") + 1
    assert purge.args[first : first + 9] == [
        "O-1", 940_000, 3, digest(command), seen_field("O-1", "c-1"), 3,
        *(seen_field("O-1", event_id(raw)) for raw in one),
    ]  # fmt: skip
    last = purge.args.index("L") + 1
    assert purge.args[last : last + 4] == ["OL-1", digest(order_list), seen_field("OL-1", "c-9"), 2]
    assert purge.keys[-2:] == [KEYS.entity(Collection.ORDERS, "O-2"), KEYS.entity(Collection.ORDERS, "O-3")]
    # The next slice comes while a slice removed something; an empty one ends the orders.
    assert isinstance(driver.answer([0, 2, 1, 0]), ClosedIds)
    tombstones = driver.answer([])
    assert isinstance(tombstones, Purge) and tombstones.kinds == ["fence", "tombstones"]
    assert driver.answer([0, 5]) is None and driver.report is not None
    report = driver.report
    assert (report.orders, report.submit_order_commands, report.tombstones, report.calls) == (2, 1, 5, 2)
    assert report.submit_order_list_commands == 0  # O-3 still stored: the script kept the list


def test_a_slice_whose_candidates_all_changed_ends_the_sweep_of_that_kind() -> None:
    driver = Driver(RetentionPolicy(closed_orders_after=60), token=None)
    driver.answer(10**9)
    driver.answer(["O-1"])
    purge = driver.answer([order_events("O-1"), None])
    assert isinstance(purge, Purge) and purge.kinds == ["orders"]  # not fenced: the Python API
    assert isinstance(driver.answer([0]), Purge)  # straight to the tombstones
    driver.answer([0])
    assert driver.report is not None and (driver.report.orders, driver.report.skipped) == (0, 1)


def fills(coid: str, count: int) -> list[bytes]:
    return [SERIALIZER.serialize(fill(f"{coid}-{n}", OrderSide.BUY, "1", "1.1", "0.01 USD", position_id="P-1"))
            for n in range(count)]  # fmt: skip


def test_a_positions_old_cycles_are_trimmed_and_a_position_closed_for_good_goes() -> None:
    stored = fills("O", 5)
    cycle = Cycle.parse(cycle_member("P-1", 10, event_id(stored[2])))  # 7 fills trimmed before
    purge = Purge()
    plan_position(purge, KEYS, [cycle], 7, len(stored), stored[:3])
    assert purge.kinds == ["position_fills"] and purge.planned == [3]
    assert purge.args[1:7] == ["Q", "P-1", 3, digest(stored[0]), 7, 1]
    assert purge.args[-4:] == [3, *(seen_field("P-1", event_id(raw)) for raw in stored[:3])]
    whole = Purge()
    last = Cycle.parse(cycle_member("P-1", 12, event_id(stored[4])))
    plan_position(whole, KEYS, [cycle, last], 7, len(stored), stored)
    assert whole.kinds == ["positions"] and whole.args[1:4] == ["P", "P-1", 5]
    assert KEYS.index(Collection.POSITIONS) in whole.keys


def test_a_cycle_whose_fill_is_not_where_its_mark_says_only_loses_its_mark() -> None:
    stored = fills("O", 3)
    purge = Purge()
    plan_position(purge, KEYS, [Cycle.parse(cycle_member("P-1", 2, "not-that-fill"))], 0, 3, stored[:2])
    assert purge.args[1:7] == ["Q", "P-1", 0, "", 0, 1] and purge.planned == [0]


def test_accounts_keep_their_last_states() -> None:
    driver = Driver(RetentionPolicy(account_states=2, slice_size=10))
    assert driver.answer(0) == IndexPage(KEYS.index(Collection.ACCOUNTS), None, 10)
    lengths = driver.answer(["SIM-001", "SIM-002"])
    assert isinstance(lengths, ReadKeys) and [r.command for r in lengths.reads] == ["LLEN", "LLEN"]
    heads = driver.answer([5, 2])
    assert isinstance(heads, ReadKeys) and [(r.key, r.count) for r in heads.reads] == [
        (KEYS.entity(Collection.ACCOUNTS, "SIM-001"), 3)
    ]
    states = [packed({"type": "AccountState", "event_id": f"e-{n}"}) for n in range(3)]
    purge = driver.answer([states])
    assert isinstance(purge, Purge) and purge.args[1:8] == ["F", "token", "T", 3, digest(states[0]), 3, "7:SIM-001e-0"]
    assert isinstance(driver.answer([0, 3]), ReadKeys)  # lengths again
    assert driver.answer([2]) == IndexPage(KEYS.index(Collection.ACCOUNTS), "SIM-002", 10)
    driver.answer([])
    assert driver.report is not None and driver.report.account_states == 3


def test_take_counts_removals_and_skips() -> None:
    purge = Purge()
    for kind in ("orders", "orders", "positions", "position_fills", "account_states"):
        purge.add(kind, (), "X", planned=4 if kind == "position_fills" else 0)
    report = SweepReport()
    assert take(report, purge, [2, 0, 1, 1, 7]) == 3
    assert (report.orders, report.submit_order_commands, report.skipped) == (1, 1, 1)
    assert (report.positions, report.position_fills, report.account_states) == (1, 4, 7)


def test_an_order_lists_members_are_read_from_its_command() -> None:
    command = packed({"command_id": "c", "orders": [{"client_order_id": "A"}, {"client_order_id": "B"}, "junk"]})
    assert order_list_members(command) == ("c", ["A", "B"])
    assert order_list_members(b"\xc1 not msgpack") == (None, [])


# -- configuration -------------------------------------------------------------------------------


def test_the_policy_is_the_traders_entry_over_the_sections_keys() -> None:
    data = {"closed_orders_after": 60, "account_states": 10, "traders": {"B-2": {"account_states": 5}}}
    retention = parse_config({"trader_id": "A-1", "retention": data}, {}).retention
    assert retention.policy("A-1") == RetentionPolicy(closed_orders_after=60, account_states=10)
    assert retention.policy("B-2") == RetentionPolicy(closed_orders_after=60, account_states=5)
    assert not parse_config({"trader_id": "A-1"}, {}).retention.policy("A-1").enabled


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"closed_orders_after": 0.5}, "retention.closed_orders_after", "at least 1 second"),
        ({"account_states": -1}, "retention.account_states", "0 (keep all) or more"),
        ({"traders": {"B-2": {"closed_positions_after": 0.1}}}, "retention.traders.B-2.closed_positions_after", "1 s"),
        ({"traders": {"B-2": {"age": 1}}}, "retention.traders.B-2.age", "unknown key"),
        ({"traders": ["B-2"]}, "retention.traders", "mapping"),
        ({"sweep_slice": 0}, "retention.sweep_slice", "1..10000"),
    ],
)
def test_a_bad_retention_value_is_refused_naming_the_key(data: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"trader_id": "A-1", "retention": data}, {})
    assert caught.value.key == key
    assert fragment in caught.value.problem or fragment in str(caught.value)
