"""The ingest workload the benchmarks share: realistic order lifecycles, fills with positions,
account states and SubmitOrder commands in NautilusTrader's wire format, and publishing them.

Each lifecycle: a LIMIT order (a third of them first sent as a SubmitOrder command) submitted,
accepted, most of them modified once, filled in one trade that opens or adds to a position on one
of 20 instruments, and two of three followed by an account state. Over 100k messages: order events
~70%, fills ~15%, account states ~10%, commands ~5%. Deterministic but for the uuids and `run`.
Published as SPEC's producers publish (`tradecache.client.Publisher`): with `Nats-Msg-Id` = the event's
or command's id, so every delivery carries headers, as a real node's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack
import nats

from tradecache.client import producer_headers
from tradecache.serialization.msgpack import MsgPackSerializer

TRADER = "BENCH-001"
PREFIX = f"tradecache.in.{TRADER}"
BASE_TS = 1_764_000_000_000_000_000


def _pack(data: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def instruments() -> list[tuple[str, bytes]]:
    """The 20 currency pairs the order lifecycles trade."""
    return [("instrument", _pack(_instrument(n))) for n in range(20)]


def _instrument(n: int) -> dict[str, Any]:
    return {
        "type": "CurrencyPair", "id": f"P{n:02d}/USD.SIM", "raw_symbol": f"P{n:02d}/USD", "base_currency": "EUR",
        "quote_currency": "USD", "price_precision": 5, "price_increment": "0.00001", "size_precision": 0,
        "size_increment": "1", "multiplier": "1", "lot_size": "1000", "max_quantity": None, "min_quantity": None,
        "max_notional": None, "min_notional": None, "max_price": None, "min_price": None, "margin_init": "0.03",
        "margin_maint": "0.03", "maker_fee": "0.00002", "taker_fee": "0.00002", "ts_event": str(BASE_TS),
        "ts_init": str(BASE_TS), "tick_scheme_name": None, "info": None,
    }  # fmt: skip


class Feed:
    """Generates the message mix, order lifecycle by order lifecycle; with `fills_per_order`, each
    order is filled in that many equal trades (a divisor of its quantity, 100,000)."""

    def __init__(self, run: str, fills_per_order: int = 1) -> None:
        if fills_per_order < 1 or 100_000 % fills_per_order:
            raise ValueError(f"fills_per_order must divide 100,000, not {fills_per_order}")
        self.run = run
        self.ts = BASE_TS
        self.order = 0
        self.trade = 0
        self.fills_per_order = fills_per_order

    def _tick(self) -> str:
        self.ts += 1000
        return str(self.ts)

    def _head(self, coid: str, instrument: str) -> dict[str, Any]:
        return {"trader_id": TRADER, "strategy_id": "Bench-001", "instrument_id": instrument, "client_order_id": coid}

    def lifecycle(self) -> list[tuple[str, bytes]]:
        n = self.order = self.order + 1
        instrument = f"P{n % 20:02d}/USD.SIM"
        coid = f"O-{self.run}-{n}"
        side = "BUY" if (n // 20) % 2 == 0 else "SELL"
        head = self._head(coid, instrument)
        ts = self._tick()
        init = {
            "type": "OrderInitialized", **head, "order_side": side, "order_type": "LIMIT", "quantity": "100000",
            "time_in_force": "GTC", "post_only": False, "reduce_only": False, "quote_quantity": False,
            "options": {"price": "1.10000", "display_qty": None, "expire_time_ns": 0},
            "emulation_trigger": "NO_TRIGGER", "trigger_instrument_id": None, "contingency_type": "NO_CONTINGENCY",
            "order_list_id": None, "linked_order_ids": None, "parent_order_id": None, "exec_algorithm_id": None,
            "exec_algorithm_params": None, "exec_spawn_id": None, "tags": None, "event_id": str(uuid.uuid4()),
            "ts_init": ts, "ts_event": ts, "reconciliation": False,
        }  # fmt: skip
        out: list[tuple[str, bytes]] = []
        if n % 3 == 0:
            nested = {**init, "ts_init": int(ts), "ts_event": int(ts)}
            command = {
                "type": "SubmitOrder", "client_id": None, "trader_id": TRADER, "strategy_id": "Bench-001",
                "order": nested, "position_id": None, "command_id": str(uuid.uuid4()), "ts_init": self._tick(),
            }  # fmt: skip
            out.append(("command", _pack(command)))
        out.append(("order", _pack(init)))
        venue = f"V-{self.run}-{n}"

        def event(kind: str, **fields: Any) -> None:
            t = self._tick()
            body = {"type": kind, **head, **fields, "event_id": str(uuid.uuid4()), "ts_event": t, "ts_init": t}
            out.append(("order", _pack(body)))

        event("OrderSubmitted", account_id="SIM-001")
        event("OrderAccepted", venue_order_id=venue, account_id="SIM-001", reconciliation=False)
        if n % 6 != 0:
            event("OrderPendingUpdate", venue_order_id=venue, account_id="SIM-001", reconciliation=False)
            event("OrderUpdated", venue_order_id=venue, account_id="SIM-001", quantity="100000", price="1.10001",
                  trigger_price=None, reconciliation=False)  # fmt: skip
        for _ in range(self.fills_per_order):
            self.trade += 1
            t = self._tick()
            fill = {
                "type": "OrderFilled", **head, "venue_order_id": venue, "account_id": "SIM-001",
                "trade_id": f"T-{self.run}-{self.trade}", "position_id": f"{instrument}-Bench-001",
                "order_side": side, "order_type": "LIMIT", "last_qty": str(100_000 // self.fills_per_order),
                "last_px": "1.10001", "currency": "USD", "commission": "2.20 USD", "liquidity_side": "MAKER",
                "event_id": str(uuid.uuid4()), "ts_event": t, "ts_init": t, "info": {}, "reconciliation": False,
            }  # fmt: skip
            out.append(("order", _pack(fill)))
        if n % 3 != 2:
            state = {
                "type": "AccountState", "account_id": "SIM-001", "account_type": "MARGIN", "base_currency": "USD",
                "balances": [{"type": "AccountBalance", "total": "1000000.00", "locked": "3300.00",
                              "free": "996700.00", "currency": "USD"}],
                "margins": [], "reported": True, "info": {}, "event_id": str(uuid.uuid4()), "ts_event": self._tick(),
                "ts_init": str(self.ts),
            }  # fmt: skip
            out.append(("account", _pack(state)))
        return out

    def orders(self, count: int, window: int = 5000) -> Iterator[list[tuple[str, bytes]]]:
        """The instruments, then `count` order lifecycles, in windows of about `window` messages."""
        out = instruments()
        for _ in range(count):
            out.extend(self.lifecycle())
            if len(out) >= window:
                yield out
                out = []
        if out:
            yield out

    def messages(self, count: int) -> list[tuple[str, bytes]]:
        out = instruments()
        while len(out) < count:
            out.extend(self.lifecycle())
        return out[:count] if len(out) > count else out


class OneOrder(Feed):
    """One order filled in as many trades as the stream has room for (an entity that keeps
    growing: every fill adds to it and to its position). Paced publishing (`lifecycle`) goes on
    with the mix."""

    def messages(self, count: int) -> list[tuple[str, bytes]]:
        head = instruments()
        return (head + one_order_in_parts(self.run, max(count - len(head) - 4, 1)))[:count]


# How a malformed payload of `HalfMalformed` starts: 0xc1 is never used in msgpack.
MALFORMED = b"\xc1 not msgpack "


class HalfMalformed(Feed):
    """The mix, every other message (but the instruments) replaced by bytes that are not msgpack:
    a broken producer. Each is refused and dead-lettered, and the good ones must not wait for them."""

    def messages(self, count: int) -> list[tuple[str, bytes]]:
        good = super().messages(count)
        return [
            (kind, MALFORMED + str(n).encode()) if n % 2 and kind != "instrument" else (kind, payload)
            for n, (kind, payload) in enumerate(good)
        ]


def one_order_in_parts(run: str, fills: int) -> list[tuple[str, bytes]]:
    """One order lifecycle of the mix (without its account state) whose fill comes in `fills`
    trades of 10 each (its quantity raised to match)."""
    out: list[tuple[str, bytes]] = []
    for kind, payload in Feed(f"{run}-one").lifecycle():  # not an id `Feed(run)` gives its orders
        fields = msgpack.unpackb(payload, raw=False)
        if fields["type"] in ("OrderInitialized", "OrderUpdated"):
            fields["quantity"] = str(10 * fills)
        elif fields["type"] == "OrderFilled":
            for n in range(fills):
                part = {**fields, "last_qty": "10", "trade_id": f"T-{run}-part-{n}", "event_id": str(uuid.uuid4())}
                out.append((kind, _pack(part)))
            continue
        elif fields["type"] == "AccountState":
            continue
        out.append((kind, _pack(fields)))
    return out


# `ingest_bench.py --workload`: the feeds a benchmark can publish.
WORKLOADS: dict[str, Callable[[str], Feed]] = {
    "mix": Feed,
    "partial-fills": lambda run: Feed(run, fills_per_order=10),
    "one-order": OneOrder,
    "half-malformed": HalfMalformed,
}


_SERIALIZER = MsgPackSerializer()


def headers_of(payload: bytes) -> dict[str, str] | None:
    """The headers `Publisher` sends with `payload` (`Nats-Msg-Id` = its event or command id; none for
    reference data such as instruments, nor for a payload that is not a message at all)."""
    if payload.startswith(MALFORMED):
        return None
    return producer_headers(_SERIALIZER.deserialize(payload))


def mix(messages: list[tuple[str, bytes]]) -> str:
    counts: dict[str, int] = {}
    for kind, payload in messages:
        name = "" if payload.startswith(MALFORMED) else msgpack.unpackb(payload, raw=False)["type"]
        label = "fills" if name == "OrderFilled" else "malformed" if not name else kind
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{k} {v / len(messages):.0%}" for k, v in sorted(counts.items()))


async def prefill(nats_url: str, messages: list[tuple[str, bytes]]) -> int:
    """Store `messages` in the stream (made if missing); the stream's last sequence after them."""
    window = 5000
    return await prefill_windows(
        nats_url, (messages[start : start + window] for start in range(0, len(messages), window))
    )


async def prefill_windows(nats_url: str, windows: Iterable[list[tuple[str, bytes]]]) -> int:
    """Store each window of messages before publishing the next; the stream's last sequence."""
    nc = await nats.connect(nats_url, pending_size=256 * 1024 * 1024)
    js = nc.jetstream()
    with contextlib.suppress(Exception):  # already there
        await js.add_stream(name="TRADECACHE", subjects=["tradecache.in.>"])
    target = (await js.stream_info("TRADECACHE")).state.last_seq
    # Core publishes in windows, each flushed and stored before the next: a stream flooded with
    # unacknowledged publishes drops some, and the benchmark would wait for them for ever.
    for messages in windows:
        for kind, payload in messages:
            await nc.publish(f"{PREFIX}.{kind}", payload, headers=headers_of(payload))
        await nc.flush(timeout=60)
        target += len(messages)
        for _ in range(1000):
            if (await js.stream_info("TRADECACHE")).state.last_seq >= target:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(f"the stream did not store all of the {len(messages)} messages before {target}")
    last: int = (await js.stream_info("TRADECACHE")).state.last_seq
    await nc.close()
    return last


async def publish_at(nats_url: str, feed: Feed, rate: int, seconds: float) -> list[tuple[int, float]]:
    """Publish `rate` messages a second for `seconds` through JetStream (each publish awaits its
    stream acknowledgement, which gives its sequence): (sequence, perf_counter before publishing)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sent: list[tuple[int, float]] = []
    pending: list[tuple[str, bytes]] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        due = int((time.perf_counter() - start) * rate)
        while len(sent) < due:
            if not pending:
                pending = feed.lifecycle()
            kind, payload = pending.pop(0)
            headers = headers_of(payload)  # before the clock starts: a producer has them at hand
            published = time.perf_counter()
            ack = await js.publish(f"{PREFIX}.{kind}", payload, stream="TRADECACHE", headers=headers)
            sent.append((ack.seq, published))
        await asyncio.sleep(0.0005)
    await nc.close()
    return sent


async def paced(nats_url: str, feed: Feed, rate: int, seconds: float) -> int:
    """Core-publish `rate` messages a second for `seconds`; the stream's last sequence after them."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sent, last = 0, 0
    start = time.perf_counter()
    pending: list[tuple[str, bytes]] = []
    while time.perf_counter() - start < seconds:
        due = int((time.perf_counter() - start) * rate)
        while sent < due:
            if not pending:
                pending = feed.lifecycle()
            kind, payload = pending.pop(0)
            await nc.publish(f"{PREFIX}.{kind}", payload, headers=headers_of(payload))
            sent += 1
        await asyncio.sleep(0.001)
    await nc.flush()
    last = (await js.stream_info("TRADECACHE")).state.last_seq
    await nc.close()
    return last


__all__ = [
    "BASE_TS",
    "PREFIX",
    "TRADER",
    "Feed",
    "instruments",
    "mix",
    "paced",
    "prefill",
    "prefill_windows",
    "publish_at",
]
