"""Load-request latency and throughput, beside a bare NATS + Redis responder measured in the same run.

1. One order of 10 events is stored (plus 2,000 other 10-event orders, each asked once to
   measure replies that are built rather than cached; with orders of 4 events, 10,000 orders
   in all for the bulk load). A second trader (a second daemon) holds 10,000 orders of 4 events,
   as `cache_bench.py` measures `load_orders()`.
2. A bare responder (its own process: a task per request, one LRANGE, the raw list packed as the
   reply) and tradecache (`python -m tradecache run`, its own process) each answer:
   - 10,000 sequential requests for that order: p50 / p99 latency;
   - 32 concurrent requesters: requests/s.
   tradecache answers `load.order` as SPEC section 3 says: the order rebuilt by replaying its
   events with the model, its snapshot plus the events, in JSON (the default) and in msgpack.
3. `load.orders` of the 10,000 orders, paged (pages of up to 1,000, which the service cuts to
   fit the 1 MB max payload): the service's time to send them all (msgpack, not unpacked), and
   `CacheClient` fetching and unpacking them, then rebuilding `Order` objects.

Usage: python benchmarks/load_bench.py [--requests 10000] [--concurrency 32] [--orders 10000]
Private redis-server and nats-server are started on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemon_runner import start_daemon, wait_ready
from tests.unit.factories import OrderEvents
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.keys import Keys
from tradecache.client import CacheClient
from tradecache.dev.stack import NatsServer, RedisServer, free_port
from tradecache.model import Collection
from tradecache.model.enums import OrderType
from tradecache.model.identifiers import TraderId
from tradecache.model.orders import Order
from tradecache.serialization import MsgPackSerializer

TRADER = "LOADBENCH-001"
BULK_TRADER = "LOADBENCH-002"  # 4-event orders only, as cache_bench's load_orders() of 10k orders
ORDER_ID = "O-BENCH-10"
BARE_SUBJECT = "bare.load.order"


COLD_ORDERS = 2000


def ten_event_order(client_order_id: str = ORDER_ID) -> list[Any]:
    make = OrderEvents(client_order_id, trader_id=TRADER)
    return [
        make.initialized(OrderType.LIMIT, quantity="1000", options={"price": "1.10000", "display_qty": None,
                                                                     "expire_time_ns": 0}),
        make.submitted(),
        make.accepted(),
        make.pending_update(),
        make.updated("1000", price="1.10010"),
        make.pending_update(),
        make.updated("1000", price="1.10020"),
        make.filled("200", order_type=OrderType.LIMIT),
        make.filled("300", order_type=OrderType.LIMIT),
        make.filled("100", order_type=OrderType.LIMIT),
    ]  # fmt: skip


def store(redis_url: str, orders: int) -> None:
    db = RedisCacheDatabase(
        TraderId(TRADER), logging.getLogger("bench"), MsgPackSerializer(), CacheDatabaseConfig.from_url(redis_url)
    )
    with db.batch():
        for client_order_id in [ORDER_ID, *(f"O-COLD-{n:05d}" for n in range(COLD_ORDERS))]:
            events = ten_event_order(client_order_id)
            order = Order(events[0])
            db.add_order(order)
            for event in events[1:]:
                order.apply(event)
                db.update_order(order)
        four_event_orders(db, TRADER, orders - COLD_ORDERS - 1)  # `orders` in all, with the 10-event ones
    db.close()
    bulk = RedisCacheDatabase(
        TraderId(BULK_TRADER), logging.getLogger("bench"), MsgPackSerializer(), CacheDatabaseConfig.from_url(redis_url)
    )
    with bulk.batch():
        four_event_orders(bulk, BULK_TRADER, orders)
    bulk.close()


def four_event_orders(db: RedisCacheDatabase, trader: str, count: int) -> None:
    for n in range(count):
        make = OrderEvents(f"O-{n:06d}", trader_id=trader)
        order = Order(make.initialized(OrderType.MARKET, options={}))
        db.add_order(order)
        for event in (make.submitted(), make.accepted(), make.filled(order_type=OrderType.MARKET)):
            order.apply(event)
            db.update_order(order)


# -- the bare responder (run in its own process with --serve-bare) ----------------------------


async def serve_bare(nats_url: str, redis_url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    key = Keys(TRADER).entity(Collection.ORDERS, ORDER_ID)
    nc = await nats.connect(nats_url)

    async def answer(msg: Any) -> None:
        events = await client.lrange(key, 0, -1)
        await msg.respond(msgpack.packb(events, use_bin_type=True))

    async def on_request(msg: Any) -> None:
        asyncio.get_running_loop().create_task(answer(msg))  # a task per request, as tradecache does

    await nc.subscribe(BARE_SUBJECT, cb=on_request)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.close()


# -- measuring ---------------------------------------------------------------------------------


async def sequential(nc: Any, subject: str, body: bytes, headers: dict[str, str] | None, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        reply = await nc.request(subject, body, timeout=5, headers=headers)
        latencies.append(time.perf_counter() - started)
        assert reply.data and not (reply.headers or {}).get("Nats-Service-Error-Code")
    return latencies


async def concurrent(nc: Any, subject: str, body: bytes, headers: dict[str, str] | None, count: int,
                     workers: int) -> float:  # fmt: skip
    async def worker(share: int) -> None:
        for _ in range(share):
            await nc.request(subject, body, timeout=10, headers=headers)

    started = time.perf_counter()
    await asyncio.gather(*(worker(count // workers) for _ in range(workers)))
    return (count // workers) * workers / (time.perf_counter() - started)


async def raw_pages(nc: Any, subject: str) -> tuple[int, int]:
    """Every page of a collection as the service sends it (msgpack), not unpacked: pages, bytes."""
    pages = size = 0
    cursor: str | None = None
    while True:
        body = {"limit": 1000} if cursor is None else {"limit": 1000, "cursor": cursor}
        reply = await nc.request(subject, json.dumps(body).encode(), timeout=30,
                                 headers={"Accept": "application/msgpack"})  # fmt: skip
        headers = reply.headers or {}
        assert "Nats-Service-Error-Code" not in headers, headers
        pages, size = pages + 1, size + len(reply.data)
        cursor = headers.get("Tradecache-Cursor")
        if cursor is None:
            return pages, size


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


def describe(name: str, latencies: list[float]) -> str:
    return (f"{name:<34} p50 {percentile(latencies, 0.5) * 1000:6.3f} ms   "
            f"p99 {percentile(latencies, 0.99) * 1000:6.3f} ms")  # fmt: skip


async def measure(nats_url: str, args: argparse.Namespace) -> None:
    nc = await nats.connect(nats_url)
    order_subject = f"tradecache.load.{TRADER}.order"
    order_body = b'{"client_order_id": "%s"}' % ORDER_ID.encode()
    as_msgpack = {"Accept": "application/msgpack"}
    warm = 500
    for subject, body, headers in ((BARE_SUBJECT, b"", None), (order_subject, order_body, None)):
        await sequential(nc, subject, body, headers, warm)

    # Interleaved rounds, so that whatever else the machine does hits all three alike.
    rounds = 10
    bare: list[float] = []
    ours: list[float] = []
    ours_mp: list[float] = []
    for _ in range(rounds):
        bare += await sequential(nc, BARE_SUBJECT, b"", None, args.requests // rounds)
        ours += await sequential(nc, order_subject, order_body, None, args.requests // rounds)
        ours_mp += await sequential(nc, order_subject, order_body, as_msgpack, args.requests // rounds)
    print(f"\n{len(bare):,} sequential requests each (10 interleaved rounds), an order of 10 events:")
    print(describe("bare responder (LRANGE, raw reply)", bare))
    print(describe("tradecache load.order (JSON)", ours))
    print(describe("tradecache load.order (msgpack)", ours_mp))
    cold = []
    for n in range(COLD_ORDERS):  # each a different order, asked once: every reply is built
        body = b'{"client_order_id": "O-COLD-%05d"}' % n
        cold.extend(await sequential(nc, order_subject, body, None, 1))
    print(describe(f"  same, {COLD_ORDERS:,} distinct orders once", cold) + "  (reply built, not cached)")
    p99_bare = percentile(bare, 0.99)
    print(f"p99 ratio to the bare responder: JSON {percentile(ours, 0.99) / p99_bare:.2f}x, "
          f"msgpack {percentile(ours_mp, 0.99) / p99_bare:.2f}x (goal <= 1.25x)")  # fmt: skip

    rates: dict[str, list[float]] = {"bare": [], "json": [], "msgpack": []}
    for _ in range(rounds):
        share = args.requests // rounds
        rates["bare"].append(await concurrent(nc, BARE_SUBJECT, b"", None, share, args.concurrency))
        rates["json"].append(await concurrent(nc, order_subject, order_body, None, share, args.concurrency))
        rates["msgpack"].append(await concurrent(nc, order_subject, order_body, as_msgpack, share, args.concurrency))
    rate_bare, rate_ours, rate_mp = (statistics.median(rates[name]) for name in ("bare", "json", "msgpack"))
    print(
        f"\n{args.concurrency} concurrent requesters (median of 10 interleaved rounds of {args.requests // rounds:,}):"
    )
    print(f"bare responder                     {rate_bare:8,.0f} requests/s")
    print(f"tradecache load.order (JSON)       {rate_ours:8,.0f} requests/s ({rate_ours / rate_bare:.2f}x)")
    print(f"tradecache load.order (msgpack)    {rate_mp:8,.0f} requests/s ({rate_mp / rate_bare:.2f}x) (goal >= 0.8x)")

    cache = CacheClient(nc, TRADER, timeout=30)
    print(f"\nload.orders of {args.orders:,} orders (pages of up to 1,000, cut to fit 1 MB; msgpack, not unpacked):")
    for trader, what in ((BULK_TRADER, "of 4 events"), (TRADER, f"{COLD_ORDERS + 1:,} of 10 events, rest of 4")):
        for attempt in ("first (replies built)", "again (replies cached)"):
            started = time.perf_counter()
            pages, size = await raw_pages(nc, f"tradecache.load.{trader}.orders")
            seconds = time.perf_counter() - started
            print(f"  {what:<30} {attempt:<24} {pages} pages, {size / 1e6:.1f} MB in {seconds:.2f} s (goal < 1 s)")
    started = time.perf_counter()
    snapshots = await cache.collection("orders")
    seconds = time.perf_counter() - started
    print(f"  CacheClient.collection(): {len(snapshots):,} snapshots fetched and unpacked in {seconds:.2f} s")
    started = time.perf_counter()
    orders = await cache.load_orders()
    seconds = time.perf_counter() - started
    print(f"  CacheClient.load_orders(): {len(orders):,} Order objects rebuilt client-side in {seconds:.2f} s")
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--serve-bare", nargs=2, metavar=("NATS", "REDIS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare(*args.serve_bare))
        return
    folder = Path(tempfile.mkdtemp(prefix="tc-load-bench-"))
    redis_server = RedisServer(data_dir=folder / "redis", appendonly=False)
    nats_server = NatsServer(data_dir=folder / "nats")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis_server.start()
        nats_server.start()
        print(f"redis-server {redis_server.binary}, nats-server {nats_server.binary}")
        store(redis_server.url, args.orders)
        port = free_port()
        config = {
            "trader_id": TRADER,
            "redis": {"url": redis_server.url},
            "nats": {"servers": [nats_server.url]},
            "http": {"listen": f"127.0.0.1:{port}"},
            "logging": {"level": "WARNING"},
        }
        processes.append(start_daemon(folder, "daemon", config))
        bulk_port = free_port()
        bulk_config = {**config, "trader_id": BULK_TRADER, "http": {"listen": f"127.0.0.1:{bulk_port}"}}
        processes.append(start_daemon(folder, "bulk", bulk_config))
        bare = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", nats_server.url, redis_server.url], stdout=subprocess.PIPE
        )
        processes.append(bare)
        assert bare.stdout is not None and bare.stdout.readline().strip() == b"ready"
        wait_ready(port)
        wait_ready(bulk_port)
        asyncio.run(measure(nats_server.url, args))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        nats_server.stop()
        redis_server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
