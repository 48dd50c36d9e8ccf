"""Worst-case payloads and peak memory, for the memory test and `scripts/memory.py`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgpack

from tests.unit.factories import OrderEvents
from tradecache.serialization import MsgPackSerializer

SERIALIZER = MsgPackSerializer()


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def peak_rss(pid: int | None) -> int:
    """A process' peak resident set size, in bytes (VmHWM of /proc/<pid>/status)."""
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def instrument(n: int) -> bytes:
    """A CurrencyPair named after `n` (about 400 bytes)."""
    symbol = f"I{n:07d}/USD"
    return pack({
        "type": "CurrencyPair", "id": f"{symbol}.SIM", "raw_symbol": symbol, "base_currency": "EUR",
        "quote_currency": "USD", "price_precision": 5, "price_increment": "0.00001", "size_precision": 0,
        "size_increment": "1", "multiplier": "1", "lot_size": "1000", "max_quantity": None, "min_quantity": None,
        "max_notional": None, "min_notional": None, "max_price": None, "min_price": None, "margin_init": "0.03",
        "margin_maint": "0.03", "maker_fee": "0.00002", "taker_fee": "0.00002", "ts_event": "1", "ts_init": "1",
        "tick_scheme_name": None, "info": None,
    })  # fmt: skip


def bombs(trader: str, size: int) -> dict[str, tuple[str, bytes, str]]:
    """Payloads of about `size` bytes, each the worst of its kind: (subject kind, payload, expected outcome)."""
    n = size - 64
    state_100k = {f"{i:05x}": bytes([i % 256]) for i in range(100_000)}
    balances = [
        {"type": "AccountBalance", "total": "1.00", "locked": "0.00", "free": "1.00", "currency": f"Q{i:05d}"}
        for i in range(n // 84)
    ]
    init = SERIALIZER.to_map(OrderEvents("O-X", trader_id=trader).initialized(), top_level=False)
    per_order = len(pack({**init, "client_order_id": "O-99999"}))
    orders = [{**init, "client_order_id": f"O-{i}"} for i in range((n - 512) // per_order)]
    return {
        # 1 MB array of empty maps: 80 MB of objects when unpacked; refused at its header.
        "empty maps": ("order", b"\xdd" + (n - 5).to_bytes(4, "big") + b"\x80" * (n - 5), "limit_exceeded"),
        # Many small containers, every one within the per-container limits: stopped at the element limit.
        "nested arrays": (
            "order",
            pack({"type": "OrderFilled", "info": [[[0, 1]] * 30_000] * (n // 90_010)}),
            "limit_exceeded",
        ),
        "maps in info": (
            "order",
            pack({"type": "OrderFilled", "info": [[{"a": 1}] * 20_000] * (n // 80_010)}),
            "limit_exceeded",
        ),
        "deep nesting": ("order", b"\x91" * n, "limit_exceeded"),
        "long strings": (
            "order",
            pack({"type": "OrderFilled", "params": ["x" * 60_000] * (n // 60_010)}),
            "field_too_large",
        ),
        # Valid: the largest messages that are accepted.
        "100k-field state": (
            "strategy",
            pack(
                {
                    "type": "StrategyState",
                    "trader_id": trader,
                    "strategy_id": "S-1",
                    "state": state_100k,
                    "ts_event": "1",
                }
            ),
            "written",
        ),
        "large state values": (
            "strategy",
            pack(
                {
                    "type": "StrategyState",
                    "trader_id": trader,
                    "strategy_id": "S-2",
                    "state": {f"v{i}": bytes(262_144) for i in range(n // 262_200)},
                    "ts_event": "1",
                }
            ),
            "written",
        ),
        "account of many balances": (
            "account",
            pack(
                {
                    "type": "AccountState",
                    "account_id": "SIM-001",
                    "account_type": "CASH",
                    "base_currency": None,
                    "reported": True,
                    "balances": balances,
                    "margins": [],
                    "info": {},
                    "event_id": str(uuid.uuid4()),
                    "ts_event": "1",
                    "ts_init": "1",
                }
            ),
            "written",
        ),
        "order list of many orders": (
            "command",
            pack(
                {
                    "type": "SubmitOrderList",
                    "client_id": None,
                    "trader_id": trader,
                    "strategy_id": "S-1",
                    "order_list_id": "OL-1",
                    "orders": orders,
                    "position_id": None,
                    "command_id": str(uuid.uuid4()),
                    "ts_init": "1",
                }
            ),
            "written",
        ),
    }


__all__ = ["bombs", "instrument", "pack", "peak_rss"]
