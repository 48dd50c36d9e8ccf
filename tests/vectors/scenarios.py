"""Loading the NautilusTrader-made scenarios of tests/data/vectors, and rebuilding state from stored bytes."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from tradecache.errors import EventRejected
from tradecache.model import Collection, Ledger, Write, WriteOp, replay_account, replay_order, replay_position
from tradecache.model.events import AccountState, OrderEvent, OrderFilled
from tradecache.model.identifiers import TraderId
from tradecache.model.instruments import Instrument
from tradecache.model.ledger import Divergence
from tradecache.model.messages import Kind
from tradecache.serialization import MsgPackSerializer
from tradecache.serialization.snapshots import account_snapshot, order_snapshot, position_snapshot

REPO = Path(__file__).resolve().parents[2]


# The subject kind of each message `kind` of the scenario files.
SCENARIO_KINDS = {
    "currency": Kind.CURRENCY,
    "instrument": Kind.INSTRUMENT,
    "order_event": Kind.ORDER,
    "position_event": Kind.POSITION,
    "account_state": Kind.ACCOUNT,
    "submit_order": Kind.COMMAND,
    "submit_order_list": Kind.COMMAND,
}


# The repository's own copy of the scenarios (tests/data/vectors/README.md says where they come from).
VECTORS = REPO / "tests" / "data" / "vectors"


def vectors_dir() -> Path:
    """The scenario folder (TRADECACHE_VECTORS overrides it); a missing folder is an error."""
    folder = Path(os.environ.get("TRADECACHE_VECTORS", VECTORS))
    scenarios = folder / "scenarios"
    if not scenarios.is_dir():
        raise FileNotFoundError(f"vector scenarios not found at {scenarios} (set TRADECACHE_VECTORS)")
    return scenarios


def scenario_paths() -> list[Path]:
    return sorted(vectors_dir().glob("*.json"))


@dataclass
class Scenario:
    name: str
    trader_id: str
    messages: list[tuple[str, str, bytes]]  # (kind, type, payload)
    expected: dict[str, Any]
    stored_positions: dict[str, list[bytes]] | None

    @classmethod
    def load(cls, path: Path) -> Scenario:
        data = json.loads(path.read_text())
        stored = data.get("stored_positions")
        return cls(
            name=data["name"],
            trader_id=data["trader_id"],
            messages=[(m["kind"], m["type"], base64.b64decode(m["payload_b64"])) for m in data["messages"]],
            expected=data["expected"],
            stored_positions=(
                {pid: [base64.b64decode(b) for b in payloads] for pid, payloads in stored.items()} if stored else None
            ),
        )


@dataclass
class MemoryStore:
    """What the writes of a ledger leave behind, in the shapes of the Redis layout (for pure tests)."""

    serializer: MsgPackSerializer
    lists: dict[tuple[Collection, str], list[bytes]] = field(default_factory=dict)
    values: dict[tuple[Collection, str], bytes] = field(default_factory=dict)
    hashes: dict[tuple[Collection, str], dict[str, bytes]] = field(default_factory=dict)

    def apply(self, write: Write) -> None:
        where = (write.collection, write.key)
        if write.op == WriteOp.APPEND:
            assert write.value is not None and not isinstance(write.value, dict)
            self.lists.setdefault(where, []).append(self.serializer.serialize(write.value))
        elif write.op == WriteOp.SET:
            assert write.value is not None and not isinstance(write.value, dict)
            self.values[where] = self.serializer.serialize(write.value)
        elif write.op == WriteOp.MERGE:
            assert isinstance(write.value, dict)
            self.hashes.setdefault(where, {}).update(write.value)
        else:
            self.lists.pop(where, None)
            self.values.pop(where, None)
            self.hashes.pop(where, None)

    def keys(self, collection: Collection) -> list[str]:
        found = {key for (c, key) in [*self.lists, *self.values, *self.hashes] if c == collection}
        return sorted(found)

    def decoded_list(self, collection: Collection, key: str) -> list[Any]:
        return [self.serializer.deserialize(raw) for raw in self.lists[(collection, key)]]


@dataclass
class Replay:
    ledger: Ledger
    store: MemoryStore
    rejected: list[EventRejected]
    duplicates: int
    divergences: list[Divergence]


def replay_into_store(scenario: Scenario) -> Replay:
    """Apply every message as the sidecar would: refused ones are set aside (dead-lettered)."""
    serializer = MsgPackSerializer(timestamps_as_str=True)
    replay = Replay(Ledger(TraderId(scenario.trader_id)), MemoryStore(serializer), [], 0, [])
    for _kind, _type, payload in scenario.messages:
        try:
            outcome = replay.ledger.apply(serializer.deserialize(payload))
        except EventRejected as exc:
            replay.rejected.append(exc)
            continue
        replay.duplicates += outcome.duplicate
        if outcome.divergence is not None:
            replay.divergences.append(outcome.divergence)
        for write in outcome.writes:
            replay.store.apply(write)
    return replay


def state_from_store(store: MemoryStore) -> dict[str, Any]:
    """Rebuild the `expected` schema from the stored bytes alone, as a load would."""
    instruments: dict[str, Instrument] = {}
    for key in store.keys(Collection.INSTRUMENTS):
        instrument = store.serializer.deserialize(store.values[(Collection.INSTRUMENTS, key)])
        assert isinstance(instrument, Instrument)
        instruments[key] = instrument
    orders = {}
    for key in store.keys(Collection.ORDERS):
        events = store.decoded_list(Collection.ORDERS, key)
        assert all(isinstance(e, OrderEvent) for e in events)
        orders[key] = order_snapshot(replay_order(events))
    positions = {}
    for key in store.keys(Collection.POSITIONS):
        fills = store.decoded_list(Collection.POSITIONS, key)
        assert all(isinstance(f, OrderFilled) for f in fills)
        positions[key] = position_snapshot(replay_position(instruments[fills[0].instrument_id.value], fills))
    accounts = {}
    for key in store.keys(Collection.ACCOUNTS):
        states = store.decoded_list(Collection.ACCOUNTS, key)
        assert all(isinstance(s, AccountState) for s in states)
        accounts[key] = account_snapshot(replay_account(states))
    submit_orders = {}
    for key in store.keys(Collection.SUBMIT_ORDER):
        command = store.serializer.deserialize(store.values[(Collection.SUBMIT_ORDER, key)])
        submit_orders[key] = {
            "command_id": command.command_id,
            "strategy_id": command.strategy_id.value,
            "position_id": None if command.position_id is None else command.position_id.value,
        }
    submit_lists = {}
    for key in store.keys(Collection.SUBMIT_ORDER_LIST):
        command = store.serializer.deserialize(store.values[(Collection.SUBMIT_ORDER_LIST, key)])
        submit_lists[key] = {
            "command_id": command.command_id,
            "client_order_ids": [coid.value for coid in command.client_order_ids],
        }
    return {
        "orders": orders,
        "positions": positions,
        "accounts": accounts,
        "instruments": sorted(instruments),
        "currencies": store.keys(Collection.CURRENCIES),
        "submit_order_commands": submit_orders,
        "submit_order_list_commands": submit_lists,
    }


def moved_to(scenario: Scenario, trader_id: str) -> Scenario:
    """The scenario for another trader: every `trader_id` in its payloads replaced, nested ones too.

    The vectors re-pack byte for byte, so nothing else changes. A trader no other test uses keeps
    earlier tests' messages and checkpoints out of the way (a daemon that found its checkpoint
    gone would replay them first, and `expected` would no longer be this stream's result).
    """

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: trader_id if key == "trader_id" else move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    def moved(payload: bytes) -> bytes:
        return msgpack.packb(move(msgpack.unpackb(payload, raw=False)), use_bin_type=True)

    return dataclasses.replace(
        scenario,
        trader_id=trader_id,
        messages=[(kind, type_name, moved(payload)) for kind, type_name, payload in scenario.messages],
        stored_positions=None
        if scenario.stored_positions is None
        else {key: [moved(fill) for fill in fills] for key, fills in scenario.stored_positions.items()},
    )
