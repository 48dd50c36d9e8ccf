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
   fit the 1 MB max payload): the service's time to send them all (msgpack, not unpacked), the
   first time (replies built) and again (replies cached), the first time again on `--attempts`
   - 1 more fresh daemons (best of them, as for load_orders()), and `CacheClient` fetching and
   unpacking them, then rebuilding `Order` objects.
4. On the same Redis contents (the second trader's 10,000 orders of 4 events): tradecache's
   `RedisCacheDatabase.load_orders()` and NautilusTrader's own `CacheDatabaseAdapter.load_orders()`
   (`benchmarks/nautilus_load.py`, a process of its own; nautilus_trader is in .venv).
Each goal of issue 15 that this benchmark measures is printed with MET or NOT MET.

Usage: python benchmarks/load_bench.py [--requests 10000] [--concurrency 32] [--orders 10000] [--quick]
Private redis-server and nats-server are started on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import nautilus_load, stored
from benchmarks.daemon_runner import server_versions, start_daemon, wait_ready
from tradecache.cache.keys import Keys
from tradecache.client import CacheClient
from tradecache.dev.stack import NatsServer, RedisServer, free_port
from tradecache.model import Collection

TRADER = "LOADBENCH-001"
BULK_TRADER = "LOADBENCH-002"  # 4-event orders only: the loads of goal 2
ORDER_ID = "O-BENCH-10"
BARE_SUBJECT = "bare.load.order"


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def store(redis_url: str, orders: int, cold: int) -> None:
    """TRADER: the 10-event order asked for, `cold` other 10-event orders, the rest of 4 events;
    BULK_TRADER: `orders` orders of 4 events."""
    db = stored.database(redis_url, TRADER)
    with db.batch():
        stored.store_ten_event_orders(db, TRADER, [ORDER_ID, *(f"O-COLD-{n:05d}" for n in range(cold))])
        stored.store_four_event_orders(db, TRADER, orders - cold - 1)
    db.close()
    stored.fill(redis_url, BULK_TRADER, orders)


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


async def measure(
    nats_url: str, args: argparse.Namespace, fresh_bulk_daemon: Callable[[], None]
) -> dict[str, float]:
    """The service's figures; returns those the goals need. `fresh_bulk_daemon` replaces the bulk
    trader's daemon by a new one, ready (for first builds)."""
    nc = await nats.connect(nats_url)
    order_subject = f"tradecache.load.{TRADER}.order"
    order_body = b'{"client_order_id": "%s"}' % ORDER_ID.encode()
    as_msgpack = {"Accept": "application/msgpack"}
    warm = min(500, args.requests)
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
    print(f"{len(bare):,} sequential requests each (10 interleaved rounds), an order of 10 events:")
    print(describe("bare responder (LRANGE, raw reply)", bare))
    print(describe("tradecache load.order (JSON)", ours))
    print(describe("tradecache load.order (msgpack)", ours_mp))
    cold = []
    for n in range(args.cold):  # each a different order, asked once: every reply is built
        body = b'{"client_order_id": "O-COLD-%05d"}' % n
        cold.extend(await sequential(nc, order_subject, body, None, 1))
    print(describe(f"  same, {args.cold:,} distinct orders once", cold) + "  (reply built, not cached)")
    p99_bare = percentile(bare, 0.99)
    figures = {"order_p99_ratio": max(percentile(ours, 0.99), percentile(ours_mp, 0.99)) / p99_bare}

    rates: dict[str, list[float]] = {"bare": [], "json": [], "msgpack": []}
    for _ in range(rounds):
        share = args.requests // rounds
        rates["bare"].append(await concurrent(nc, BARE_SUBJECT, b"", None, share, args.concurrency))
        rates["json"].append(await concurrent(nc, order_subject, order_body, None, share, args.concurrency))
        rates["msgpack"].append(await concurrent(nc, order_subject, order_body, as_msgpack, share, args.concurrency))
    rate_bare, rate_ours, rate_mp = (statistics.median(rates[name]) for name in ("bare", "json", "msgpack"))
    print(f"{args.concurrency} concurrent requesters (median of 10 interleaved rounds of {args.requests // rounds:,}):")
    print(f"bare responder                     {rate_bare:8,.0f} requests/s")
    print(f"tradecache load.order (JSON)       {rate_ours:8,.0f} requests/s ({rate_ours / rate_bare:.2f}x)")
    print(f"tradecache load.order (msgpack)    {rate_mp:8,.0f} requests/s ({rate_mp / rate_bare:.2f}x)")

    cache = CacheClient(nc, TRADER, timeout=30)
    print(f"load.orders of {args.orders:,} orders (pages of up to 1,000, cut to fit 1 MB; msgpack, not unpacked):")
    for trader, what in ((BULK_TRADER, "of 4 events"), (TRADER, f"{args.cold + 1:,} of 10 events, rest of 4")):
        for attempt in ("first (replies built)", "again (replies cached)"):
            started = time.perf_counter()
            pages, size = await raw_pages(nc, f"tradecache.load.{trader}.orders")
            seconds = time.perf_counter() - started
            print(f"  {what:<30} {attempt:<24} {pages} pages, {size / 1e6:.1f} MB in {seconds:.3f} s")
            if trader == BULK_TRADER:
                figures["orders_first" if attempt.startswith("first") else "orders_again"] = seconds
    # The first build once more on each of `attempts - 1` fresh daemons (a first build happens once
    # a daemon): the best of them counts, as for both load_orders() figures.
    firsts = [figures["orders_first"]]
    for _ in range(args.attempts - 1):
        fresh_bulk_daemon()
        started = time.perf_counter()
        await raw_pages(nc, f"tradecache.load.{BULK_TRADER}.orders")
        firsts.append(time.perf_counter() - started)
    figures["orders_first"] = min(firsts)
    print(f"  of 4 events, first build on {len(firsts)} fresh daemons: best {min(firsts):.3f} s (runs: {runs(firsts)})")
    started = time.perf_counter()
    snapshots = await cache.collection("orders")
    seconds = time.perf_counter() - started
    print(f"  CacheClient.collection(): {len(snapshots):,} snapshots fetched and unpacked in {seconds:.2f} s")
    started = time.perf_counter()
    orders = await cache.load_orders()
    seconds = time.perf_counter() - started
    print(f"  CacheClient.load_orders(): {len(orders):,} Order objects rebuilt client-side in {seconds:.2f} s")
    await nc.close()
    return figures


def python_load_orders(redis_url: str, expected: int, attempts: int) -> list[float]:
    """tradecache's `RedisCacheDatabase.load_orders()` of BULK_TRADER, `attempts` times: seconds."""
    db = stored.database(redis_url, BULK_TRADER)
    timings = []
    try:
        for _ in range(attempts):
            started = time.perf_counter()
            orders = db.load_orders()
            timings.append(time.perf_counter() - started)
            assert len(orders) == expected, len(orders)
    finally:
        db.close()
    return timings


def nautilus_load_orders(redis_url: str, expected: int, attempts: int) -> tuple[list[float], str]:
    """NautilusTrader's own `load_orders()` of BULK_TRADER, a process each time: seconds, its version."""
    timings, version = [], ""
    for _ in range(attempts):
        result = nautilus_load.run(redis_url, BULK_TRADER)
        assert result["orders"] == expected, result
        timings.append(result["seconds"])
        version = result["version"]
    return timings, version


def runs(timings: list[float]) -> str:
    return ", ".join(f"{seconds:.3f}" for seconds in timings)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--cold", type=int, default=2000, help="10-event orders each asked once")
    parser.add_argument("--attempts", type=int, default=3,
                        help="load_orders() runs of each side; fresh daemons' first load.orders (the best counts)")
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the benchmark still works")
    parser.add_argument("--serve-bare", nargs=2, metavar=("NATS", "REDIS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare(*args.serve_bare))
        return
    if args.quick:
        args.requests, args.concurrency, args.orders, args.cold, args.attempts = 200, 8, 300, 20, 2
    folder = Path(tempfile.mkdtemp(prefix="tc-load-bench-"))
    redis_server = RedisServer(data_dir=folder / "redis", appendonly=False)
    nats_server = NatsServer(data_dir=folder / "nats")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis_server.start()
        nats_server.start()
        print(f"servers: {server_versions(redis_server.binary, nats_server.binary)}")
        store(redis_server.url, args.orders, args.cold)
        our_runs = python_load_orders(redis_server.url, args.orders, args.attempts)
        their_runs, version = nautilus_load_orders(redis_server.url, args.orders, args.attempts)
        ours, theirs = min(our_runs), min(their_runs)
        print(f"load_orders() of {args.orders:,} orders of 4 events, the same Redis contents, best of {args.attempts}:")
        print(f"  NautilusTrader {version} CacheDatabaseAdapter.load_orders(): {theirs:.3f} s "
              f"(runs: {runs(their_runs)})")  # fmt: skip
        print(f"  tradecache RedisCacheDatabase.load_orders():            {ours:.3f} s "
              f"({theirs / ours:.1f}x faster) (runs: {runs(our_runs)})")  # fmt: skip
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
        bulk = [processes[-1]]

        def fresh_bulk_daemon() -> None:
            stop(bulk[0])
            port = free_port()
            bulk[0] = start_daemon(folder, f"bulk-{port}", {**bulk_config, "http": {"listen": f"127.0.0.1:{port}"}})
            processes.append(bulk[0])
            wait_ready(port)
            time.sleep(1.0)  # its build worker started (it starts with the service), as for the first one

        bare = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", nats_server.url, redis_server.url], stdout=subprocess.PIPE
        )
        processes.append(bare)
        assert bare.stdout is not None and bare.stdout.readline().strip() == b"ready"
        wait_ready(port)
        wait_ready(bulk_port)
        figures = asyncio.run(measure(nats_server.url, args, fresh_bulk_daemon))
        first, again, ratio = figures["orders_first"], figures["orders_again"], figures["order_p99_ratio"]
        n = f"{args.orders:,}"
        print(f"GOAL load.orders first build of {n} orders <= 0.5 s: {first:.3f} s, best of {args.attempts} "
              f"fresh daemons (again {again:.3f} s): "
              f"{verdict(first <= 0.5)}")  # fmt: skip
        print(f"GOAL load.orders first build >= 10x NautilusTrader's load_orders(): {theirs / first:.1f}x "
              f"({theirs:.3f} s vs {first:.3f} s): {verdict(theirs / first >= 10)}")  # fmt: skip
        print(f"GOAL load_orders() of {n} orders <= 0.25 s: {ours:.3f} s: {verdict(ours <= 0.25)}")
        print(f"GOAL load_orders() >= 10x NautilusTrader's load_orders(): {theirs / ours:.1f}x "
              f"({theirs:.3f} s vs {ours:.3f} s): {verdict(theirs / ours >= 10)}")  # fmt: skip
        print(f"GOAL load.order p99 <= 1.25x a bare responder: {ratio:.2f}x (the slower of JSON and msgpack): "
              f"{verdict(ratio <= 1.25)}")  # fmt: skip
    finally:
        for process in processes:
            stop(process)
        nats_server.stop()
        redis_server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
