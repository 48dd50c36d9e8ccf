#!/usr/bin/env python3
"""Peak memory (not CI): the daemon's VmHWM with a million instruments stored, then under a
stream of worst-case payloads.

Starts private redis-server and nats-server processes on free ports and the daemon as a
subprocess (`python -m tradecache run`, default settings), then:
1. publishes `--instruments` CurrencyPair messages (default 1,000,000), pipelined, and waits
   until all are written: the in-memory state is bounded by `ingest.memory_budget_bytes`, the
   rest is evicted and read back when a message needs it;
2. publishes `--rounds` rounds of worst-case payloads at NATS' max_payload (tests/worst_case.py:
   a megabyte of empty maps, many small containers, deep nesting, long strings, a 100,000-field
   strategy state, large state values, an account of many balances, an order list of many
   orders), and waits until all are handled;
3. asks the load service for stats, one instrument and a page of 1,000 instruments.
It prints the peak RSS (VmHWM of /proc/<pid>/status) after each step and exits 1 when it
passed `--limit-mb` (default 200).

    .venv/bin/python scripts/memory.py
    .venv/bin/python scripts/memory.py --instruments 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nats  # noqa: E402

from tests.chaos import Daemon, create_stream, daemon_config, http_get, read_checkpoint  # noqa: E402
from tests.worst_case import bombs, instrument, peak_rss  # noqa: E402
from tradecache.client import CacheClient  # noqa: E402
from tradecache.dev.stack import NatsServer, RedisServer  # noqa: E402
from tradecache.wire import Subjects  # noqa: E402

TRADER = "MEMORY-001"


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


async def wait_written(redis_url: str, last: int, timeout: float) -> float:
    started = time.monotonic()
    while read_checkpoint(redis_url, TRADER) < last:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"checkpoint {read_checkpoint(redis_url, TRADER)} < {last} after {timeout} s")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def measure(instruments: int, rounds: int) -> int:
    redis_server, nats_server = RedisServer(), NatsServer()  # Redis: AOF with appendfsync everysec
    redis_server.start()
    nats_server.start()
    await create_stream(nats_server.url)
    daemon = Daemon(daemon_config(redis_server.url, nats_server.url, TRADER, logging={"level": "WARNING"},
                                  ingest={"lease_ttl": 10.0}))  # fmt: skip
    daemon.start()
    pid = daemon.process.process.pid if daemon.process.process else None
    try:
        while http_get(daemon.port, "/readyz")[0] != 200:
            await asyncio.sleep(0.2)
        print(f"started: peak RSS {mib(peak_rss(pid))}", flush=True)
        subjects = Subjects("tradecache", TRADER)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream(publish_async_max_pending=20_000)
        started = time.monotonic()
        futures = []
        for n in range(instruments):
            futures.append(await js.publish_async(subjects.inbound_for_name("instrument"), instrument(n)))
            if len(futures) >= 10_000:
                last = (await futures[-1]).seq
                futures.clear()
        if futures:
            last = (await futures[-1]).seq
        published = time.monotonic() - started
        took = await wait_written(redis_server.url, last, 3600)
        client = redis_server.client()
        stored = client.zcard(f"trader-{TRADER}:tradecache:index:instruments")
        client.close()
        print(f"{instruments:,} instruments published in {published:.0f} s, all written {took:.0f} s later "
              f"({stored:,} stored): peak RSS {mib(peak_rss(pid))}", flush=True)  # fmt: skip
        js = nc.jetstream(timeout=30)
        kinds = bombs(TRADER, int(nc.max_payload) - 512)
        for _ in range(rounds):
            for kind, payload, _expect in kinds.values():
                last = (await js.publish(subjects.inbound_for_name(kind), payload)).seq
        await wait_written(redis_server.url, last, 600)
        await asyncio.sleep(2)
        print(f"{rounds * len(kinds)} worst-case payloads of ~{int(nc.max_payload) // 1024} KiB "
              f"({', '.join(kinds)}): peak RSS {mib(peak_rss(pid))}", flush=True)  # fmt: skip
        cache = CacheClient(nc, TRADER)
        await cache.load_instrument("I0000001/USD.SIM")
        await nc.request(f"tradecache.load.{TRADER}.stats", b"", timeout=30)
        await nc.request(f"tradecache.load.{TRADER}.instruments", b'{"limit": 1000}', timeout=30)
        await nc.close()
        peak = peak_rss(pid)
        print(f"after loads (stats, one instrument, a page of 1,000): peak RSS {mib(peak)}", flush=True)
        return peak
    finally:
        daemon.close()
        redis_server.close()
        nats_server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1_000_000, help="instruments stored (default 1000000)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of worst-case payloads (default 6)")
    parser.add_argument("--limit-mb", type=float, default=200.0, help="peak RSS allowed, MiB (default 200)")
    args = parser.parse_args(argv)
    peak = asyncio.run(measure(args.instruments, args.rounds))
    ok = peak <= args.limit_mb * 2**20
    print(f"peak RSS {mib(peak)}: {'within' if ok else 'OVER'} the {args.limit_mb:.0f} MiB limit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
