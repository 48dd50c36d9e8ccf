"""Ingest while the load service is flooded: the daemon's peak memory, event lag and false 503s.

1. 10,000 orders of 4 events are stored for the trader (through the Python API), and the daemon
   (`python -m tradecache run`, its own process) is started on them.
2. Baseline: events are published at a steady rate (`--rate`, 500/s) for `--seconds`, with no
   load request: event lag p50 / p99 from the daemon's `tradecache_event_lag_seconds`.
3. Flood of unpaged requests: the same feed, while `--clients` (200) requesters each ask
   `load.orders` with an empty body (the whole collection) again and again for `--seconds`.
4. Flood of paged requests: the same feed, while 200 clients each page through the whole
   collection (`{"limit": 1000}` and the cursors), as `CacheClient.collection()` does; a busy
   reply (429) is retried after a short pause, as `CacheClient` does.
For each phase: the replies by error code, the event lag p50 / p99 (ratio to the baseline), and
the daemon's peak RSS (`VmHWM` in /proc/<pid>/status, the high-water mark since it started).
Goal: peak RSS <= 256 MB, lag p99 <= 50 ms, no 503 "Redis is unavailable" while Redis is up.

Usage: python benchmarks/flood_bench.py [--orders 10000] [--clients 200] [--seconds 10] [--rate 500]
                                       [--phases unpaged,paged]
Private redis-server and nats-server are started on free ports (TRADECACHE_NATS_SERVER picks
the binary; nats-server 2.9 sometimes leaves a pull without its end, which stalls ingest for
`fetch_expires` + 1 s whatever the load: see docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemon_runner import quantile, start_daemon, wait_ready
from benchmarks.feed import PREFIX, TRADER, Feed, instruments, paced
from benchmarks.ingest_bench import scrape_lag, wait_checkpoint
from benchmarks.stored import store_four_event_orders
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.dev.stack import NatsServer, RedisServer, free_port
from tradecache.model.identifiers import TraderId
from tradecache.serialization import MsgPackSerializer

ERROR_CODE = "Nats-Service-Error-Code"
ERROR = "Nats-Service-Error"
SUBJECT = f"tradecache.load.{TRADER}.orders"
LAG_GOAL_MS = 50.0
RSS_GOAL_MB = 256.0


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def store(redis_url: str, orders: int) -> None:
    db = RedisCacheDatabase(
        TraderId(TRADER), logging.getLogger("bench"), MsgPackSerializer(), CacheDatabaseConfig.from_url(redis_url)
    )
    with db.batch():
        store_four_event_orders(db, TRADER, orders)
    db.close()


class Tally:
    """Replies by outcome: "ok", an error code, or "timeout"; and the false 503s' messages."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.unavailable: list[str] = []

    def reply(self, msg: Any) -> str | None:
        headers = msg.headers or {}
        code = headers.get(ERROR_CODE)
        self.counts[code or "ok"] += 1
        if code == "503":
            self.unavailable.append(headers.get(ERROR, ""))
        return code

    def __str__(self) -> str:
        return ", ".join(f"{name}: {count:,}" for name, count in sorted(self.counts.items()))


async def unpaged_client(nc: Any, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            tally.reply(await nc.request(SUBJECT, b"", timeout=30))
        except TimeoutError:
            tally.counts["timeout"] += 1


async def paged_client(nc: Any, tally: Tally, deadline: float, pages: collections.Counter[str]) -> None:
    """Pages through the collection again and again until `deadline` (a walk in progress ends)."""
    cursor: str | None = None
    while cursor is not None or time.monotonic() < deadline:
        body = {"limit": 1000} if cursor is None else {"limit": 1000, "cursor": cursor}
        try:
            msg = await nc.request(SUBJECT, json.dumps(body).encode(), timeout=30,
                                   headers={"Accept": "application/msgpack"})  # fmt: skip
        except TimeoutError:
            tally.counts["timeout"] += 1
            cursor = None
            continue
        code = tally.reply(msg)
        if code == "429":
            await asyncio.sleep(0.05)
            continue
        if code is not None:
            cursor = None
            continue
        cursor = (msg.headers or {}).get("Tradecache-Cursor")
        pages["pages"] += 1
        if cursor is None:
            pages["walks"] += 1


async def flood(nats_url: str, clients: int, seconds: float, paged: bool) -> tuple[Tally, collections.Counter[str]]:
    connections = [await nats.connect(nats_url, pending_size=256 * 1024 * 1024) for _ in range(4)]
    tally = Tally()
    pages: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    try:
        if paged:
            await asyncio.gather(*(paged_client(connections[n % 4], tally, deadline, pages) for n in range(clients)))
        else:
            await asyncio.gather(*(unpaged_client(connections[n % 4], tally, deadline) for n in range(clients)))
    finally:
        for nc in connections:
            await nc.close()
    return tally, pages


async def publish_instruments(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    for kind, payload in instruments():
        await nc.publish(f"{PREFIX}.{kind}", payload)
    await nc.flush()
    await nc.close()


async def feed_during(nats_url: str, feed: Feed, rate: int, seconds: float, load: Any) -> tuple[int, Any]:
    """Publish at `rate` for `seconds` while `load` (a coroutine or None) runs; both results."""
    if load is None:
        return await paced(nats_url, feed, rate, seconds), None
    published, result = await asyncio.gather(paced(nats_url, feed, rate, seconds), load)
    return published, result


def lag_line(window: dict[float, float], baseline_p99: float | None) -> tuple[str, float]:
    p50, p99 = quantile(0.5, window) * 1000, quantile(0.99, window) * 1000
    within = window.get(0.05, 0.0) / max(window[float("inf")], 1)
    ratio = "" if baseline_p99 is None else f" ({p99 / baseline_p99:.1f}x the baseline)"
    goal = "" if baseline_p99 is None else f", goal <= {LAG_GOAL_MS:.0f} ms"
    return (
        f"event lag ({window[float('inf')]:,.0f} events): p50 {p50:.1f} ms, p99 {p99:.1f} ms{ratio}{goal}; "
        f"{within:.1%} within 50 ms"
    ), p99


def run_phase(name: str, args: argparse.Namespace, urls: tuple[str, str], daemon: subprocess.Popen[bytes],
              port: int, feed: Feed, load: Any, baseline_p99: float | None) -> float:  # fmt: skip
    nats_url, redis_url = urls
    client = redis.Redis.from_url(redis_url)
    before = scrape_lag(port)
    started = time.perf_counter()
    last, result = asyncio.run(feed_during(nats_url, feed, args.rate, args.seconds, load))
    wait_checkpoint(client, last, timeout=120)
    elapsed = time.perf_counter() - started
    after = scrape_lag(port)
    client.close()
    window = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    line, p99 = lag_line(window, baseline_p99)
    rss, peak = memory_mb(daemon.pid)
    print(f"\n{name} ({elapsed:.1f} s):")
    if result is not None:
        tally, pages = result
        print(f"  replies: {tally}")
        if pages:
            print(f"  pages answered: {pages['pages']:,}, whole collection walks completed: {pages['walks']:,}")
        false_503 = len(tally.unavailable)
        print(f"  503 'Redis is unavailable' replies (Redis was up all along): {false_503}"
              + (f", e.g. {tally.unavailable[0][:100]!r}" if false_503 else "") + " (goal 0)")  # fmt: skip
    print(f"  {line}")
    print(f"  daemon RSS now {rss:.0f} MB, peak (VmHWM) {peak:.0f} MB (goal <= {RSS_GOAL_MB:.0f} MB)")
    return p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=500, help="events published per second during each phase")
    parser.add_argument("--phases", default="unpaged,paged", help="which floods to run (default: both)")
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the benchmark still works")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.clients, args.seconds = 300, 4, 1.0
    folder = Path(tempfile.mkdtemp(prefix="tc-flood-bench-"))
    redis_server = RedisServer(data_dir=folder / "redis", appendonly=False)
    nats_server = NatsServer(data_dir=folder / "nats")
    daemon: subprocess.Popen[bytes] | None = None
    try:
        redis_server.start()
        nats_server.start()
        version = subprocess.run([str(nats_server.binary), "--version"], capture_output=True, text=True).stdout.strip()
        print(f"redis-server {redis_server.binary}, nats-server {nats_server.binary} ({version})")
        store(redis_server.url, args.orders)
        port = free_port()
        config = {
            "trader_id": TRADER,
            "redis": {"url": redis_server.url},
            "nats": {"servers": [nats_server.url]},
            "http": {"listen": f"127.0.0.1:{port}"},
            "logging": {"level": "WARNING"},
        }
        daemon = start_daemon(folder, "daemon", config)
        wait_ready(port)
        asyncio.run(publish_instruments(nats_server.url))
        rss, peak = memory_mb(daemon.pid)
        print(f"{args.orders:,} stored orders of 4 events; daemon ready: RSS {rss:.0f} MB, peak {peak:.0f} MB")
        urls = (nats_server.url, redis_server.url)
        feed = Feed(uuid.uuid4().hex[:6])
        baseline = run_phase(f"baseline: {args.rate} events/s, no load request", args, urls, daemon, port, feed,
                             None, None)  # fmt: skip
        phases = args.phases.split(",")
        if "unpaged" in phases:
            unpaged = flood(nats_server.url, args.clients, args.seconds, paged=False)
            run_phase(f"flood: {args.clients} clients asking the whole collection (unpaged) back to back",
                      args, urls, daemon, port, feed, unpaged, baseline)  # fmt: skip
        if "paged" in phases:
            paged = flood(nats_server.url, args.clients, args.seconds, paged=True)
            run_phase(f"flood: {args.clients} clients paging through the collection (limit 1000)",
                      args, urls, daemon, port, feed, paged, baseline)  # fmt: skip
        daemon.send_signal(signal.SIGTERM)
        print(f"\ndaemon exit code after SIGTERM: {daemon.wait(timeout=60)}")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        nats_server.stop()
        redis_server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
