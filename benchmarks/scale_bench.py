"""How ingest and load time and memory grow with the number of stored orders.

For each size (fresh redis-server with AOF everysec and nats-server each time):
1. JetStream is pre-filled with `size` order lifecycles of `benchmarks/feed.py`'s workload (about
   6.6 messages per order: order events, fills with positions, account states, commands).
2. The daemon ingests the backlog: events/s, its RSS, Redis `used_memory`.
3. Loads of every stored order: `load.orders` from the daemon (paged; the first time, replies
   built; again, replies cached), tradecache's `RedisCacheDatabase.load_orders()`, and, up to
   `--nautilus-max` orders, NautilusTrader's own `load_orders()` (`benchmarks/nautilus_load.py`).
A markdown table of all sizes is printed at the end.

Usage: python benchmarks/scale_bench.py [--sizes 10000,100000,1000000] [--nautilus-max 100000] [--quick]
1,000,000 orders (6.6M messages) take about 11 minutes here.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nats
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import nautilus_load, stored
from benchmarks.daemon_runner import rss_mb, server_versions, start_daemon, wait_ready
from benchmarks.feed import TRADER, Feed, prefill_windows
from benchmarks.load_bench import raw_pages
from tradecache.cache.keys import Keys
from tradecache.dev.stack import NatsServer, RedisServer, free_port


def ingest_with_progress(client: redis.Redis, last: int, every: float) -> float:
    """Wait for the checkpoint to reach `last`, printing the rate of each `every` seconds (a cliff
    shows as it happens); the seconds it took."""
    key = Keys(TRADER).checkpoint()
    started = mark = time.perf_counter()
    done_at_mark = 0
    while True:
        done = int(client.get(key) or 0)
        now = time.perf_counter()
        if done >= last:
            return now - started
        if now - mark >= every:
            rate = (done - done_at_mark) / (now - mark)
            print(f"    {now - started:6.0f} s: {done:,} of {last:,} messages, {rate:,.0f} events/s "
                  f"in the last {every:g} s", flush=True)  # fmt: skip
            mark, done_at_mark = now, done
        time.sleep(0.005)


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load_orders_service(nats_url: str) -> tuple[float, float, int]:
    """`load.orders` paged through, first and again: seconds, seconds, megabytes sent."""
    nc = await nats.connect(nats_url)
    timings = []
    size = 0
    for _ in range(2):
        started = time.perf_counter()
        _, size = await raw_pages(nc, f"tradecache.load.{TRADER}.orders")
        timings.append(time.perf_counter() - started)
    await nc.close()
    return timings[0], timings[1], size // 1_000_000


def one_size(args: argparse.Namespace, orders: int, show_servers: bool) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="tc-scale-bench-"))
    redis_server = RedisServer(data_dir=folder / "redis", appendonly=True)
    nats_server = NatsServer(data_dir=folder / "nats")
    redis_server.start()
    nats_server.start()
    daemon: subprocess.Popen[bytes] | None = None
    row: dict[str, float] = {"orders": orders}
    try:
        if show_servers:
            print(f"servers: {server_versions(redis_server.binary, nats_server.binary)}")
        started = time.perf_counter()
        last = asyncio.run(prefill_windows(nats_server.url, Feed(uuid.uuid4().hex[:6]).orders(orders)))
        row["messages"] = last
        print(f"{orders:,} orders: {last:,} messages stored in the stream in {time.perf_counter() - started:.1f} s",
              flush=True)  # fmt: skip
        port = free_port()
        config = {
            "trader_id": TRADER,
            "redis": {"url": redis_server.url},
            "nats": {"servers": [nats_server.url]},
            "http": {"listen": f"127.0.0.1:{port}"},
            "logging": {"level": "WARNING"},
        }
        if args.memory_budget is not None:
            config["ingest"] = {"memory_budget_bytes": args.memory_budget}
        daemon = start_daemon(folder, "daemon", config)
        client = redis.Redis.from_url(redis_server.url)
        wait_ready(port, timeout=120)
        row["ingest_s"] = ingest_with_progress(client, last, args.progress)
        row["ingest_rate"] = last / row["ingest_s"]
        row["rss_ingest"] = rss_mb(daemon.pid)
        row["redis_mb"] = int(client.info("memory")["used_memory"]) / 2**20
        print(f"  ingest: {row['ingest_s']:.1f} s = {row['ingest_rate']:,.0f} events/s; daemon RSS "
              f"{row['rss_ingest']:.0f} MB; Redis used_memory {row['redis_mb']:.0f} MB", flush=True)  # fmt: skip
        first, again, megabytes = asyncio.run(load_orders_service(nats_server.url))
        row["service_first"], row["service_again"] = first, again
        row["rss_load"], row["peak"] = rss_mb(daemon.pid), peak_mb(daemon.pid)
        print(f"  load.orders ({megabytes} MB): first {first:.2f} s, again {again:.2f} s; daemon RSS after "
              f"{row['rss_load']:.0f} MB, peak {row['peak']:.0f} MB", flush=True)  # fmt: skip
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        db = stored.database(redis_server.url, TRADER)
        started = time.perf_counter()
        loaded = len(db.load_orders())
        row["python_load"] = time.perf_counter() - started
        db.close()
        assert loaded == orders, (loaded, orders)
        text = f"  load_orders(): {row['python_load']:.2f} s"
        if orders <= args.nautilus_max:
            result = nautilus_load.run(redis_server.url, TRADER)
            assert result["orders"] == orders, result
            row["nautilus_load"] = result["seconds"]
            text += f"; NautilusTrader {result['version']} load_orders(): {result['seconds']:.2f} s"
            text += f" ({result['seconds'] / row['python_load']:.1f}x ours)"
        print(text, flush=True)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        redis_server.stop()
        nats_server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return row


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| stored orders | messages | ingest | daemon RSS after ingest / after load.orders (peak) | Redis used_memory "
        "| load.orders first / again | load_orders() | NautilusTrader load_orders() |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        nautilus = f"{row['nautilus_load']:.2f} s" if "nautilus_load" in row else "not measured"
        lines.append(
            f"| {row['orders']:,.0f} | {row['messages']:,.0f} | {row['ingest_s']:.1f} s ({row['ingest_rate']:,.0f}/s) "
            f"| {row['rss_ingest']:.0f} / {row['rss_load']:.0f} ({row['peak']:.0f}) MB | {row['redis_mb']:.0f} MB "
            f"| {row['service_first']:.2f} / {row['service_again']:.2f} s | {row['python_load']:.2f} s | {nautilus} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="stored orders, comma-separated")
    parser.add_argument("--nautilus-max", type=int, default=100_000, help="NautilusTrader's load up to this size")
    parser.add_argument("--progress", type=float, default=30.0, help="print the ingest rate every this many seconds")
    parser.add_argument("--memory-budget", type=int, help="the daemon's ingest.memory_budget_bytes (default: its own)")
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the benchmark still works")
    args = parser.parse_args()
    sizes = [200, 400] if args.quick else [int(size) for size in args.sizes.split(",")]
    rows = [one_size(args, size, show_servers=n == 0) for n, size in enumerate(sizes)]
    print(table(rows))
    growth, base = rows[-1], rows[0]
    factor = growth["orders"] / base["orders"]
    if len(rows) > 1:
        print(f"from {base['orders']:,.0f} to {growth['orders']:,.0f} orders ({factor:,.0f}x): ingest rate "
              f"{growth['ingest_rate'] / base['ingest_rate']:.2f}x, load_orders() time "
              f"{growth['python_load'] / base['python_load']:.1f}x, load.orders first "
              f"{growth['service_first'] / base['service_first']:.1f}x, Redis memory "
              f"{growth['redis_mb'] / base['redis_mb']:.1f}x, daemon RSS after ingest "
              f"{growth['rss_ingest'] / base['rss_ingest']:.2f}x")  # fmt: skip
    wanted = {10_000, 100_000, 1_000_000}
    missing = ", ".join(f"{size:,}" for size in sorted(wanted - set(sizes))) or "none"
    met = "MET" if wanted <= set(sizes) else "NOT MET"
    print(f"GOAL scale of cost, figures at 10,000, 100,000 and 1,000,000 stored orders: measured "
          f"{', '.join(f'{size:,}' for size in sizes)} (missing: {missing}): {met}")  # fmt: skip


if __name__ == "__main__":
    main()
