"""Retention: closed orders (with their commands), closed positions and old account states
removed from Redis, planned here without I/O.

Model. Ingest keeps, per trader, a sorted set of closed orders and one of closed positions
(`Keys.closed`), scored by when each closed (Redis' clock, ms): `APPLY_SCRIPT` adds an entity in
the same atomic call as the event that closed it and removes it in the call of an event that
reopens it (a late fill of a canceled order, a NETTING position's next fill). A sweep is a
generator (`sweep`) that yields what it needs from Redis (`Clock`, `ClosedIds`, `IndexPage`,
`ReadKeys`, `Purge`) and is sent the answers: the daemon drives it asynchronously
(`daemon/retention.py`), the Python API synchronously (`RedisCacheDatabase.apply_retention`).

Each slice is one atomic `PURGE_SCRIPT` call, fenced by the lease token like ingest's writes,
that re-checks every guard before it removes anything: an order or position is removed only if
it is still in its closed set with a score at or below the cutoff and its list has exactly the
length that was read (so the `seen` fields removed with it are exactly its events'); a command
only if it still holds the bytes that were read. With an order go its list, its `seen` fields,
its index entry, its SubmitOrder command (and that command's `seen` field and index entry), the
opening half of a flip it made if one is still held for a PositionOpened that never came, and
a tombstone (`Keys.purged`, kept as long as the retention age) by which a late event for it is
refused as purged instead of re-creating it. A SubmitOrderList goes when none of its orders is
stored any more. An account keeps its last `account_states` states: older ones are trimmed from
the head with their `seen` fields. Nothing here reads a key pattern (no KEYS, no SCAN): closed
sets and the accounts index say what to look at. The Lua side is `cache/purge_script.py`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any, Final

import msgpack

from tradecache.cache.keys import Keys
from tradecache.model.ledger import Collection


@dataclass(frozen=True)
class RetentionPolicy:
    """What one trader keeps. Zero (the default) keeps everything of that kind."""

    closed_orders_after: float = 0.0  # seconds after an order closed (with its SubmitOrder command)
    closed_positions_after: float = 0.0  # seconds after a position closed (went flat)
    account_states: int = 0  # the last N states of each account are kept
    slice_size: int = 200  # entities per atomic purge call

    @property
    def enabled(self) -> bool:
        return self.closed_orders_after > 0 or self.closed_positions_after > 0 or self.account_states > 0


@dataclass
class SweepReport:
    """What one sweep removed, by kind, and how many candidates it left for a later sweep."""

    orders: int = 0
    submit_order_commands: int = 0
    submit_order_list_commands: int = 0
    positions: int = 0
    position_fills: int = 0  # fills of closed cycles trimmed from a position that opened again
    account_states: int = 0
    tombstones: int = 0  # purged-order marks that outlived the retention age
    skipped: int = 0  # changed since read (a late event, a reopening): looked at again next sweep
    calls: int = 0  # purge script calls (slices)

    def removed(self) -> dict[str, int]:
        """What the sweep removed, by the kinds of `tradecache_retention_removed_total`.

        Raises:
            Nothing.
        """
        return {
            "orders": self.orders,
            "submit_order_commands": self.submit_order_commands,
            "submit_order_list_commands": self.submit_order_list_commands,
            "positions": self.positions,
            "position_fills": self.position_fills,
            "account_states": self.account_states,
        }


# -- what a sweep asks of Redis -----------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """Redis' clock in milliseconds (`TIME`): the clock closed sets are scored with."""


@dataclass(frozen=True)
class ClosedIds:
    """`ZRANGEBYSCORE key -inf cutoff LIMIT 0 limit`: ids closed at or before the cutoff, oldest first."""

    key: str
    cutoff_ms: int
    limit: int


@dataclass(frozen=True)
class IndexPage:
    """`ZRANGEBYLEX key (after + LIMIT 0 limit` (from the start when `after` is None)."""

    key: str
    after: str | None
    limit: int


@dataclass(frozen=True)
class Read:
    """`LRANGE key 0 count-1` (`count` -1: all), `GET key`, `LLEN key` or `HGET key field`."""

    command: str
    key: str
    count: int = -1
    field: str = ""


@dataclass(frozen=True)
class ReadKeys:
    """Several reads in one round trip; the answer is their results in order."""

    reads: tuple[Read, ...]


@dataclass
class Purge:
    """One `PURGE_SCRIPT` call (a slice), built up op by op; the answer is each op's count."""

    keys: list[str] = field(default_factory=list)
    args: list[bytes | str | int] = field(default_factory=lambda: [0])
    kinds: list[str] = field(default_factory=list)  # what each op removes, for the report
    planned: list[int] = field(default_factory=list)  # for `Q`: the fills it trims

    def add(self, kind: str, keys: Sequence[str], op: str, *args: bytes | str | int, planned: int = 0) -> None:
        self.keys.extend(keys)
        self.args.append(op)
        self.args.extend(args)
        self.kinds.append(kind)
        self.planned.append(planned)
        self.args[0] = len(self.kinds)


Request = Clock | ClosedIds | IndexPage | ReadKeys | Purge
Sweep = Generator[Request, Any, SweepReport]


# -- planning ------------------------------------------------------------------------------------


def seen_field(entity: str, stored_id: str) -> str:
    """The `seen` hash field of (entity, event or command id), as `APPLY_SCRIPT` writes it: the
    entity id's length in bytes, `:`, the entity id, the id."""
    return f"{len(entity.encode())}:{entity}{stored_id}"


def digest(value: bytes) -> str:
    """What `redis.sha1hex` gives for `value`."""
    return sha1(value).hexdigest()


def unpacked(raw: bytes | None) -> dict[str, Any]:
    """A stored payload as a map ({} when it is not one: another writer's bytes)."""
    if not raw:
        return {}
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def event_fields(entity: str, events: Sequence[bytes]) -> list[str]:
    """The `seen` fields of a stored list's events (an event without an id has none)."""
    ids = (_text(unpacked(raw).get("event_id")) for raw in events)
    return [seen_field(entity, event_id) for event_id in ids if event_id is not None]


def plan_order(purge: Purge, keys: Keys, coid: str, cutoff: int, events: list[bytes], command: bytes | None) -> None:
    """Remove a closed order, its events' dedupe fields, its SubmitOrder command and a flip's
    opening half still held for it (op `O`)."""
    command_id = _text(unpacked(command).get("command_id")) if command else None
    names = (
        keys.entity(Collection.ORDERS, coid),
        keys.seen(Collection.ORDERS),
        keys.index(Collection.ORDERS),
        keys.closed(Collection.ORDERS),
        keys.purged(Collection.ORDERS),
        keys.entity(Collection.SUBMIT_ORDER, coid),
        keys.seen(Collection.SUBMIT_ORDER),
        keys.index(Collection.SUBMIT_ORDER),
        keys.pending_openings(),
    )
    fields = event_fields(coid, events)
    with_command = command is not None and command_id is not None
    purge.add(
        "orders", names, "O", coid, cutoff, len(events),
        digest(command) if with_command and command else "",
        seen_field(coid, command_id) if with_command and command_id else "",
        len(fields), *fields,
    )  # fmt: skip


@dataclass(frozen=True)
class Cycle:
    """A member of the positions' closed set: the position, its fills since its list began when
    one made it flat (see `plan.cycle_member`), and that fill's event id."""

    member: str
    position_id: str
    index: int
    event_id: str

    @classmethod
    def parse(cls, member: str) -> Cycle:
        position_id, _, rest = member.partition("\n")
        index, _, event_id = rest.partition("\n")
        return cls(member, position_id, int(index) if index.isdigit() else 0, event_id)


def plan_position(
    purge: Purge, keys: Keys, cycles: Sequence[Cycle], trimmed: int, length: int, head: list[bytes]
) -> None:
    """Remove a position's closed cycles old enough to go: its fills up to the latest of them
    (op `Q`), or the whole position when they are all it holds (op `P`).

    `trimmed` is how many fills earlier sweeps took from its list, `length` the list's length,
    `head` its first fills up to the latest cycle's end (read for their dedupe fields). That
    last fill must be the one the cycle names; if not (an append the store skipped), only the
    marks go."""
    position_id = cycles[0].position_id
    members = [cycle.member for cycle in cycles]
    latest = max(cycles, key=lambda cycle: cycle.index)
    count = max(0, latest.index - trimmed)
    ids = [_text(unpacked(raw).get("event_id")) for raw in head[:count]]
    if count and (len(ids) != count or ids[-1] != latest.event_id):
        count, ids = 0, []
    fields = [seen_field(position_id, event_id) for event_id in ids if event_id is not None]
    stored, seen, closed, counts = (
        keys.entity(Collection.POSITIONS, position_id),
        keys.seen(Collection.POSITIONS),
        keys.closed(Collection.POSITIONS),
        keys.trimmed(Collection.POSITIONS),
    )
    if count and count == length:
        names = (stored, seen, keys.index(Collection.POSITIONS), closed, counts)
        purge.add("positions", names, "P", position_id, count, len(members), *members, len(fields), *fields)
        return
    first = digest(head[0]) if count else ""
    purge.add(
        "position_fills", (stored, seen, closed, counts), "Q", position_id, count, first, trimmed,
        len(members), *members, len(fields), *fields, planned=count,
    )  # fmt: skip


def order_list_members(command: bytes | None) -> tuple[str | None, list[str]]:
    """A stored SubmitOrderList's command id and the client order ids of its orders."""
    data = unpacked(command)
    orders = data.get("orders")
    members = [
        coid
        for coid in (_text(order.get("client_order_id")) for order in orders if isinstance(order, dict))
        if coid is not None
    ] if isinstance(orders, list) else []  # fmt: skip
    return _text(data.get("command_id")), members


def plan_order_list(purge: Purge, keys: Keys, order_list_id: str, command: bytes) -> None:
    """Remove a SubmitOrderList once none of its orders is stored (op `L`, checked in the script)."""
    command_id, members = order_list_members(command)
    if command_id is None:
        return
    names = [
        keys.entity(Collection.SUBMIT_ORDER_LIST, order_list_id),
        keys.seen(Collection.SUBMIT_ORDER_LIST),
        keys.index(Collection.SUBMIT_ORDER_LIST),
        *(keys.entity(Collection.ORDERS, coid) for coid in members),
    ]
    purge.add(
        "submit_order_list_commands", names, "L", order_list_id, digest(command),
        seen_field(order_list_id, command_id), len(members),
    )  # fmt: skip


def plan_account_trim(purge: Purge, keys: Keys, account_id: str, head: list[bytes]) -> None:
    """Drop the `head` states (the oldest) of an account with their dedupe fields (op `T`)."""
    fields = event_fields(account_id, head)
    names = (keys.entity(Collection.ACCOUNTS, account_id), keys.seen(Collection.ACCOUNTS))
    purge.add("account_states", names, "T", len(head), digest(head[0]), len(fields), *fields)


def fenced(token: str | None, keys: Keys) -> Purge:
    """A new purge call, conditional on the lease holding `token` (None: not fenced)."""
    purge = Purge()
    if token is not None:
        purge.add("fence", (keys.lease(),), "F", token)
    return purge


def take(report: SweepReport, purge: Purge, results: Sequence[int]) -> int:
    """Count a purge call's results; returns how many of its order and position ops did their
    work (0: every candidate changed since it was read)."""
    report.calls += 1
    done = 0
    for kind, planned, result in zip(purge.kinds, purge.planned, results, strict=True):
        count = int(result)
        if kind == "orders":
            report.orders += 1 if count else 0
            report.submit_order_commands += 1 if count == 2 else 0
        elif kind == "positions":
            report.positions += count
        elif kind == "position_fills":
            report.position_fills += planned if count else 0
        elif kind == "submit_order_list_commands":
            report.submit_order_list_commands += count
        elif kind == "account_states":
            report.account_states += count
        elif kind == "tombstones":
            report.tombstones += count
        if kind in ("orders", "positions", "position_fills"):
            done += 1 if count else 0
            report.skipped += 0 if count else 1
    return done


# -- the sweep ----------------------------------------------------------------------------------

# The most account states trimmed from one account per op (the rest waits for the next slice).
TRIM_MAX: Final = 1000


def sweep(policy: RetentionPolicy, keys: Keys, token: str | None) -> Sweep:
    """One sweep of `policy` over a trader (see the module docstring for the protocol)."""
    report = SweepReport()
    now: int = yield Clock()
    if policy.closed_orders_after > 0:
        cutoff = now - int(policy.closed_orders_after * 1000)
        yield from _sweep_orders(policy, keys, token, cutoff, report)
        tombstones = fenced(token, keys)
        tombstones.add("tombstones", (keys.purged(Collection.ORDERS),), "X", cutoff)
        take(report, tombstones, (yield tombstones))
    if policy.closed_positions_after > 0:
        cutoff = now - int(policy.closed_positions_after * 1000)
        yield from _sweep_positions(policy, keys, token, cutoff, report)
    if policy.account_states > 0:
        yield from _sweep_accounts(policy, keys, token, report)
    return report


def _sweep_orders(policy: RetentionPolicy, keys: Keys, token: str | None, cutoff: int, report: SweepReport) -> Any:
    while True:
        ids: list[str] = yield ClosedIds(keys.closed(Collection.ORDERS), cutoff, policy.slice_size)
        if not ids:
            return
        reads = [Read("LRANGE", keys.entity(Collection.ORDERS, coid)) for coid in ids]
        reads += [Read("GET", keys.entity(Collection.SUBMIT_ORDER, coid)) for coid in ids]
        stored = yield ReadKeys(tuple(reads))
        purge = fenced(token, keys)
        lists: dict[str, None] = {}
        for coid, events, command in zip(ids, stored[: len(ids)], stored[len(ids) :], strict=True):
            plan_order(purge, keys, coid, cutoff, list(events), command)
            order_list_id = _text(unpacked(events[0]).get("order_list_id")) if events else None
            if order_list_id is not None:
                lists[order_list_id] = None
        if lists:
            commands = yield ReadKeys(tuple(Read("GET", keys.entity(Collection.SUBMIT_ORDER_LIST, i)) for i in lists))
            for order_list_id, command in zip(lists, commands, strict=True):
                if command:
                    plan_order_list(purge, keys, order_list_id, command)
        if not take(report, purge, (yield purge)):
            return  # every candidate changed since it was read: the next sweep looks again


def _sweep_positions(policy: RetentionPolicy, keys: Keys, token: str | None, cutoff: int, report: SweepReport) -> Any:
    while True:
        members: list[str] = yield ClosedIds(keys.closed(Collection.POSITIONS), cutoff, policy.slice_size)
        if not members:
            return
        by_position: dict[str, list[Cycle]] = {}
        for member in members:
            cycle = Cycle.parse(member)
            by_position.setdefault(cycle.position_id, []).append(cycle)
        ids = list(by_position)
        sizes = yield ReadKeys(
            tuple(Read("HGET", keys.trimmed(Collection.POSITIONS), field=pid) for pid in ids)
            + tuple(Read("LLEN", keys.entity(Collection.POSITIONS, pid)) for pid in ids)
        )
        trimmed = [int(value or 0) for value in sizes[: len(ids)]]
        lengths = [int(value) for value in sizes[len(ids) :]]
        heads = yield ReadKeys(
            tuple(
                Read(
                    "LRANGE",
                    keys.entity(Collection.POSITIONS, pid),
                    max(1, max(c.index for c in by_position[pid]) - done),
                )
                for pid, done in zip(ids, trimmed, strict=True)
            )
        )
        purge = fenced(token, keys)
        for pid, done, length, head in zip(ids, trimmed, lengths, heads, strict=True):
            plan_position(purge, keys, by_position[pid], done, length, list(head))
        if not take(report, purge, (yield purge)):
            return


def _over(ids: Sequence[str], lengths: Sequence[Any], keep: int) -> dict[str, int]:
    """Accounts holding more than `keep` states, and how many to drop now (at most TRIM_MAX)."""
    return {
        account_id: min(int(n) - keep, TRIM_MAX) for account_id, n in zip(ids, lengths, strict=True) if int(n) > keep
    }


def _lengths(keys: Keys, ids: Sequence[str]) -> ReadKeys:
    return ReadKeys(tuple(Read("LLEN", keys.entity(Collection.ACCOUNTS, account_id)) for account_id in ids))


def _sweep_accounts(policy: RetentionPolicy, keys: Keys, token: str | None, report: SweepReport) -> Any:
    after: str | None = None
    while True:
        ids: list[str] = yield IndexPage(keys.index(Collection.ACCOUNTS), after, policy.slice_size)
        if not ids:
            return
        after = ids[-1]
        over = _over(ids, (yield _lengths(keys, ids)), policy.account_states)
        while over:
            heads = yield ReadKeys(
                tuple(Read("LRANGE", keys.entity(Collection.ACCOUNTS, account_id), n) for account_id, n in over.items())
            )
            purge = fenced(token, keys)
            for account_id, head in zip(over, heads, strict=True):
                if head:
                    plan_account_trim(purge, keys, account_id, list(head))
            before = report.account_states
            take(report, purge, (yield purge))
            if report.account_states == before:
                break  # changed since read (another writer): the next sweep looks again
            over = _over(list(over), (yield _lengths(keys, list(over))), policy.account_states)


__all__ = [
    "TRIM_MAX",
    "Clock",
    "ClosedIds",
    "Cycle",
    "IndexPage",
    "Purge",
    "Read",
    "ReadKeys",
    "Request",
    "RetentionPolicy",
    "Sweep",
    "SweepReport",
    "digest",
    "event_fields",
    "order_list_members",
    "plan_account_trim",
    "plan_order",
    "plan_order_list",
    "plan_position",
    "seen_field",
    "sweep",
    "take",
]
