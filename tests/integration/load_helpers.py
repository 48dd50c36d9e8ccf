"""Asking the load service from tests: raw requests that keep the reply's headers and error code."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from tradecache.model import Collection
from tradecache.wire import CURSOR_HEADER, MSGPACK

ERROR_CODE = "Nats-Service-Error-Code"


@dataclass
class Reply:
    value: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> int | None:
        code = self.headers.get(ERROR_CODE)
        return None if code is None else int(code)

    @property
    def cursor(self) -> str | None:
        return self.headers.get(CURSOR_HEADER)


async def ask(nc: Any, subject: str, body: Any = None, *, as_msgpack: bool = False, raw: bytes | None = None) -> Reply:
    """One request: `body` sent as JSON (None: empty), or `raw` bytes as they are."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = {"Accept": MSGPACK} if as_msgpack else None
    reply = await nc.request(subject, data, timeout=10, headers=headers)
    value = msgpack.unpackb(reply.data, raw=False) if as_msgpack else json.loads(reply.data)
    return Reply(value, dict(reply.headers or {}))


def without_events(items: dict[str, Any]) -> dict[str, Any]:
    return {key: {k: v for k, v in item.items() if k != "events"} for key, item in items.items()}


Load = Callable[..., Awaitable[Any]]  # load(endpoint name, body=None) -> the decoded reply
StoredEvents = Callable[[Collection, str], list[bytes]]  # the list Redis holds for an entity

# Snapshot collections: endpoint (plural, singular, id field) and the stored list they replay.
SNAPSHOTS = (
    ("orders", "order", "client_order_id", Collection.ORDERS),
    ("positions", "position", "position_id", Collection.POSITIONS),
    ("accounts", "account", "account_id", Collection.ACCOUNTS),
)


async def check_snapshot_endpoints(
    load: Load, expected: dict[str, Any], stored_events: StoredEvents, as_msgpack: bool
) -> dict[str, dict[str, Any]]:
    """orders/positions/accounts: each collection equals `expected` (without its events), each
    entity alone equals its item, in msgpack the events are the stored payloads' maps, and an
    unknown id is null. Returns the collections by plural name."""
    found = {}
    for plural, single, id_field, collection in SNAPSHOTS:
        items = await load(plural)
        assert without_events(items) == expected[plural], plural
        for entity_id, item in items.items():
            assert await load(single, {id_field: entity_id}) == item
            if as_msgpack:  # bytes stay bytes: the events are the stored payloads' maps
                stored = stored_events(collection, entity_id)
                assert item["events"] == [msgpack.unpackb(p, raw=False) for p in stored]
        assert await load(single, {id_field: "NO-SUCH-ID"}) is None
        found[plural] = items
    return found


async def check_reference_endpoints(load: Load, expected: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """instruments and currencies: the ids expected, each alone equal to its item. Returns both."""
    instruments = await load("instruments")
    assert sorted(instruments) == expected["instruments"]
    for instrument_id, instrument in instruments.items():
        assert await load("instrument", {"instrument_id": instrument_id}) == instrument
    currencies = await load("currencies")
    assert sorted(currencies) == expected["currencies"]
    for code, currency in currencies.items():
        assert await load("currency", {"code": code}) == currency
    return instruments, currencies


async def check_command_endpoints(load: Load, expected: dict[str, Any]) -> None:
    """SubmitOrder and SubmitOrderList commands: the expected fields, each alone equal."""
    commands = await load("submit_order_commands")
    wanted = ("command_id", "strategy_id", "position_id")
    summary = {key: {name: command.get(name) for name in wanted} for key, command in commands.items()}
    assert summary == expected["submit_order_commands"]
    for key, command in commands.items():
        assert await load("submit_order_command", {"client_order_id": key}) == command
    lists = await load("submit_order_list_commands")
    assert {
        key: {"command_id": c["command_id"], "client_order_ids": [o["client_order_id"] for o in c["orders"]]}
        for key, c in lists.items()
    } == expected["submit_order_list_commands"]
    for key, command in lists.items():
        assert await load("submit_order_list_command", {"order_list_id": key}) == command
