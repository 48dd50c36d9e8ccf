"""One trader's state as plain dicts, from a node's dump (tests/nautilus/node.py) and from tradecache.

Both sides come out in the same shape, so a test compares them with one `==`:
`orders` {id: {"summary", "events" (maps)}}, `positions` {id: summary}, `accounts` {id: {"summary",
"event_ids"}}, `instruments` {id: map}, `currencies` {code: fields}, `strategies` {id: {field: bytes}}.
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack

from tradecache.cache import RedisCacheDatabase
from tradecache.model.identifiers import StrategyId
from tradecache.model.ledger import Collection
from tradecache.serialization.msgpack import encode_currency
from tradecache.serialization.snapshots import account_snapshot, order_snapshot, position_snapshot

POSITION_FIELDS = [
    "instrument_id",
    "side",
    "signed_qty",
    "quantity",
    "peak_qty",
    "avg_px_open",
    "avg_px_close",
    "realized_pnl",
    "commissions",
    "is_open",
    "is_closed",
    "opening_order_id",
    "closing_order_id",
    "ts_opened",
    "ts_closed",
]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _b64map(data: str) -> Any:
    return _unpack(base64.b64decode(data))


def node_view(dump: dict[str, Any]) -> dict[str, Any]:
    return {
        "orders": {
            cid: {"summary": order["summary"], "events": [_b64map(e) for e in order["events"]]}
            for cid, order in dump["orders"].items()
        },
        "positions": {pid: {k: summary[k] for k in POSITION_FIELDS} for pid, summary in dump["positions"].items()},
        "accounts": {
            aid: {"summary": account["summary"], "event_ids": list(dict.fromkeys(account["event_ids"]))}
            for aid, account in dump["accounts"].items()
        },
        "instruments": {iid: _b64map(raw) for iid, raw in dump["instruments"].items()},
        "currencies": dump["currencies"],
        "strategies": {
            sid: {field: base64.b64decode(value) for field, value in state.items()}
            for sid, state in dump["strategies"].items()
        },
    }


def api_view(db: RedisCacheDatabase, client: Any, strategy_ids: list[str]) -> dict[str, Any]:
    """What tradecache's Python API loads (and, for events, the lists it stored)."""
    keys = db.keys

    def stored(collection: Collection, entity_id: str) -> list[Any]:
        return [_unpack(raw) for raw in client.lrange(keys.entity(collection, entity_id), 0, -1)]

    return {
        "orders": {
            cid.value: {"summary": order_snapshot(order), "events": stored(Collection.ORDERS, cid.value)}
            for cid, order in db.load_orders().items()
        },
        "positions": {
            pid.value: {k: position_snapshot(position)[k] for k in POSITION_FIELDS}
            for pid, position in db.load_positions().items()
        },
        "accounts": {
            aid.value: {
                "summary": {k: v for k, v in account_snapshot(account).items() if k != "event_count"},
                "event_ids": [event.event_id for event in account.events],
            }
            for aid, account in db.load_accounts().items()
        },
        "instruments": {iid.value: _unpack(raw) for iid, raw in _stored_instruments(db, client).items()},
        "currencies": {
            code: {k: v for k, v in encode_currency(currency).items() if k not in ("type", "code")}
            for code, currency in db.load_currencies().items()
        },
        "strategies": {sid: db.load_strategy(StrategyId(sid)) for sid in strategy_ids},
    }


def _stored_instruments(db: RedisCacheDatabase, client: Any) -> dict[Any, bytes]:
    return {iid: client.get(db.keys.entity(Collection.INSTRUMENTS, iid.value)) for iid in db.load_instruments()}


def _currency_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("type", "code")}


def service_view(replies: dict[str, Any], strategies: dict[str, dict[str, bytes]]) -> dict[str, Any]:
    """What the load service answered (msgpack replies of the collection endpoints)."""
    return {
        "orders": {
            cid: {"summary": {k: v for k, v in item.items() if k != "events"}, "events": item["events"]}
            for cid, item in replies["orders"].items()
        },
        "positions": {pid: {k: item[k] for k in POSITION_FIELDS} for pid, item in replies["positions"].items()},
        "accounts": {
            aid: {
                "summary": {k: v for k, v in item.items() if k not in ("events", "event_count")},
                "event_ids": [event["event_id"] for event in item["events"]],
            }
            for aid, item in replies["accounts"].items()
        },
        "instruments": replies["instruments"],
        "currencies": {code: _currency_fields(item) for code, item in replies["currencies"].items()},
        "strategies": strategies,
    }


__all__ = ["POSITION_FIELDS", "api_view", "node_view", "service_view"]
