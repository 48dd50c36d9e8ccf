"""End-to-end ingest throughput and lag, beside a naive sink measured in the same run.

1. Pre-fills JetStream with N messages (default 100k) in a realistic mix: ~70% order events,
   ~15% fills with positions, ~10% account states, ~5% SubmitOrder commands.
2. tradecache (`python -m tradecache run`, a separate process): events/s from ready to the
   checkpoint reaching the last sequence (every message decoded, validated, applied, in Redis,
   acked), and its RSS.
3. A naive sink on the same stream: nats-py fetch(), then one awaited RPUSH and one ack per
   message (measured on the first `--naive` messages).
4. Event lag p50/p99 while publishing at a steady 1,000 events/s (from tradecache's histogram).

Usage: python benchmarks/ingest_bench.py [--events 100000] [--naive 20000] [--paced-seconds 10]
Private redis-server and nats-server are started on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import msgpack
import nats
import redis
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemon_runner import quantile, rss_mb, start_daemon, wait_ready
from tradecache.cache.keys import Keys
from tradecache.dev.stack import NatsServer, RedisServer, free_port

TRADER = "BENCH-001"
PREFIX = f"tradecache.in.{TRADER}"
BASE_TS = 1_764_000_000_000_000_000


def _pack(data: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


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
    """Generates the message mix, order lifecycle by order lifecycle."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.ts = BASE_TS
        self.order = 0
        self.trade = 0

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
        self.trade += 1
        t = self._tick()
        fill = {
            "type": "OrderFilled", **head, "venue_order_id": venue, "account_id": "SIM-001",
            "trade_id": f"T-{self.run}-{self.trade}", "position_id": f"{instrument}-Bench-001", "order_side": side,
            "order_type": "LIMIT", "last_qty": "100000", "last_px": "1.10001", "currency": "USD",
            "commission": "2.20 USD", "liquidity_side": "MAKER", "event_id": str(uuid.uuid4()), "ts_event": t,
            "ts_init": t, "info": {}, "reconciliation": False,
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

    def messages(self, count: int) -> list[tuple[str, bytes]]:
        out = [("instrument", _pack(_instrument(n))) for n in range(20)]
        while len(out) < count:
            out.extend(self.lifecycle())
        return out[:count] if len(out) > count else out


def mix(messages: list[tuple[str, bytes]]) -> str:
    counts: dict[str, int] = {}
    for kind, payload in messages:
        name = msgpack.unpackb(payload, raw=False)["type"]
        label = "fills" if name == "OrderFilled" else kind
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{k} {v / len(messages):.0%}" for k, v in sorted(counts.items()))


async def prefill(nats_url: str, messages: list[tuple[str, bytes]]) -> int:
    nc = await nats.connect(nats_url, pending_size=256 * 1024 * 1024)
    js = nc.jetstream()
    with contextlib.suppress(Exception):  # already there
        await js.add_stream(name="TRADECACHE", subjects=["tradecache.in.>"])
    before = (await js.stream_info("TRADECACHE")).state.last_seq
    # Core publishes in windows, each flushed and stored before the next: a stream flooded with
    # unacknowledged publishes drops some, and the benchmark would wait for them for ever.
    window = 5000
    for start in range(0, len(messages), window):
        for kind, payload in messages[start : start + window]:
            await nc.publish(f"{PREFIX}.{kind}", payload)
        await nc.flush(timeout=60)
        target = before + min(start + window, len(messages))
        for _ in range(400):
            if (await js.stream_info("TRADECACHE")).state.last_seq >= target:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(f"the stream stored {target - before - window}..{target - before} messages, not all")
    last: int = (await js.stream_info("TRADECACHE")).state.last_seq
    await nc.close()
    return last


async def naive_sink(nats_url: str, redis_url: str, count: int, confirm_acks: bool = False) -> float:
    """fetch(), then one awaited RPUSH and one ack per message (`confirm_acks`: the ack awaits the
    server's confirmation, `ack_sync`, as a sink that must know its ack landed does)."""
    import redis.asyncio as aioredis

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    client = aioredis.Redis.from_url(redis_url)
    durable = "naive-sink-confirmed" if confirm_acks else "naive-sink"
    sub = await js.pull_subscribe(f"{PREFIX}.>", durable=durable, stream="TRADECACHE")
    done = 0
    start = time.perf_counter()
    while done < count:
        for msg in await sub.fetch(min(256, count - done), timeout=5):
            await client.rpush(f"naive:{msg.subject}", msg.data)
            if confirm_acks:
                await msg.ack_sync()
            else:
                await msg.ack()
            done += 1
    seconds = time.perf_counter() - start
    await client.aclose()
    await nc.close()
    return done / seconds


def scrape_lag(port: int) -> dict[float, float]:
    """Cumulative bucket counts of tradecache_event_lag_seconds, summed over kinds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tradecache_event_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def wait_checkpoint(client: redis.Redis, sequence: int, timeout: float = 600) -> None:
    key = Keys(TRADER).checkpoint()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = client.get(key)
        if raw is not None and int(raw) >= sequence:
            return
        time.sleep(0.005)
    raise TimeoutError(f"checkpoint did not reach {sequence}")


async def paced(nats_url: str, feed: Feed, rate: int, seconds: float) -> int:
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
            await nc.publish(f"{PREFIX}.{kind}", payload)
            sent += 1
        await asyncio.sleep(0.001)
    await nc.flush()
    last = (await js.stream_info("TRADECACHE")).state.last_seq
    await nc.close()
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=20_000)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tc-ingest-bench-"))
    redis_server = RedisServer(data_dir=folder / "redis", appendonly=True)
    nats_server = NatsServer(data_dir=folder / "nats")
    redis_server.start()
    nats_server.start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        feed = Feed(uuid.uuid4().hex[:6])
        messages = feed.messages(args.events)
        print(f"stream: {len(messages):,} messages ({mix(messages)})")
        last = asyncio.run(prefill(nats_server.url, messages))
        print(f"redis-server {redis_server.binary}, nats-server {nats_server.binary}")

        rate_naive = asyncio.run(naive_sink(nats_server.url, redis_server.url, min(args.naive, len(messages))))
        print(f"naive sink (fetch + awaited RPUSH + ack per message): {rate_naive:,.0f} events/s")
        count = min(args.naive, len(messages))
        rate_confirmed = asyncio.run(naive_sink(nats_server.url, redis_server.url, count, confirm_acks=True))
        print(f"naive sink with confirmed acks (ack_sync, a round trip): {rate_confirmed:,.0f} events/s")

        port = free_port()
        config = {
            "trader_id": TRADER,
            "redis": {"url": redis_server.url},
            "nats": {"servers": [nats_server.url]},
            "http": {"listen": f"127.0.0.1:{port}"},
            "ingest": {"batch_size": args.batch_size},
            "logging": {"level": "WARNING"},
        }
        daemon = start_daemon(folder, "daemon", config)
        client = redis.Redis.from_url(redis_server.url)
        wait_ready(port)
        start = time.perf_counter()
        wait_checkpoint(client, last)
        seconds = time.perf_counter() - start
        rate = len(messages) / seconds
        print(f"tradecache end to end: {len(messages):,} events in {seconds:.2f} s = {rate:,.0f} events/s "
              f"({rate / rate_naive:.1f}x the naive sink, "
              f"{rate / rate_confirmed:.1f}x the one with confirmed acks)")  # fmt: skip
        print(f"tradecache RSS after the backlog: {rss_mb(daemon.pid):.1f} MB")

        before = scrape_lag(port)
        paced_last = asyncio.run(paced(nats_server.url, feed, 1000, args.paced_seconds))
        wait_checkpoint(client, paced_last)
        after = scrape_lag(port)
        window = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
        print(f"event lag at 1,000 events/s for {args.paced_seconds:.0f} s ({window[float('inf')]:,.0f} events): "
              f"p50 {quantile(0.5, window) * 1000:.2f} ms, p99 {quantile(0.99, window) * 1000:.2f} ms")  # fmt: skip
        print(f"tradecache RSS at the end: {rss_mb(daemon.pid):.1f} MB")
        daemon.send_signal(signal.SIGTERM)
        print(f"tradecache exit code after SIGTERM: {daemon.wait(timeout=30)}")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        redis_server.stop()
        nats_server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
