#!/usr/bin/env python3
"""Soak (not CI): a steady stream for a long time; does the daemon's memory stay flat, lag low?

Starts private redis-server and nats-server processes on free ports and the daemon as a
subprocess (`python -m tradecache run`, default settings), then publishes the chaos feed's
realistic mix (tests/chaos.py: orders placed, amended, filled, canceled; fills with NETTING
positions; account states; commands) at a steady rate with JetStream acks (pipelined,
`publish_async`). Every interval (default a minute) it prints:
- the daemon's RSS (/proc/<pid>/status VmRSS);
- event lag p50/p99 over that interval, from the deltas of the `tradecache_event_lag_seconds`
  histogram (publish time in JetStream to durable in Redis);
- events written over that interval (`tradecache_events_total{outcome="written"}`) and in all;
- pending: messages the consumer has not acked yet (the server's view) and the daemon's gauge.

With `--retention SECONDS` the daemon runs with that retention (`retention:` closed orders,
closed positions, and `--account-states` states per account, swept every `--sweep-interval`
seconds), and each line also prints Redis' key count (DBSIZE: the server is the soak's own) and
used_memory, and what retention removed. The feed's orders all close, its NETTING positions
close and reopen, its account grows by a state per fill or so: without retention all of it stays.

At the end it waits for the daemon to catch up and prints whether RSS stayed flat: growth over
the last `--flat-window` minutes (default 10, or the second half of a shorter run) below 10%;
with retention, the same for the key count and used_memory. Exit status 0 when flat and caught up.

    .venv/bin/python scripts/soak.py                       # 2,000 events/s for 30 minutes
    .venv/bin/python scripts/soak.py --minutes 5 --rate 1000
    .venv/bin/python scripts/soak.py --retention 60        # issue 12: key count and memory flat
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.daemon_runner import quantile, rss_mb  # noqa: E402
from tests.chaos import (  # noqa: E402
    PREFIX,
    STREAM,
    ChaosFeed,
    Daemon,
    connect_nats,
    create_stream,
    daemon_config,
    http_get,
    read_checkpoint,
    wait_until,
)
from tradecache.dev.stack import NatsServer, RedisServer  # noqa: E402
from tradecache.wire import Subjects  # noqa: E402

TRADER = "SOAK-001"
FLAT_LIMIT = 0.10  # RSS growth over the final window below this counts as flat


@dataclass
class Scrape:
    lag: dict[float, float] = field(default_factory=dict)  # cumulative bucket counts, all kinds
    written: float = 0.0
    pending_gauge: float = 0.0
    removed: dict[str, float] = field(default_factory=dict)  # tradecache_retention_removed_total by kind


def scrape(port: int) -> Scrape:
    status, text = http_get(port, "/metrics", timeout=5.0)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    result = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tradecache_event_lag_seconds_bucket":
                bound = float(sample.labels["le"])
                result.lag[bound] = result.lag.get(bound, 0.0) + sample.value
            elif sample.name == "tradecache_events_total" and sample.labels.get("outcome") == "written":
                result.written += sample.value
            elif sample.name == "tradecache_consumer_pending_messages":
                result.pending_gauge = sample.value
            elif sample.name == "tradecache_retention_removed_total":
                result.removed[sample.labels["kind"]] = sample.value
    return result


@dataclass
class Publisher:
    """Publishes the feed at `rate` messages/s with pipelined JetStream publishes."""

    nats_url: str
    rate: float
    seed: int
    sent: int = 0
    acked: int = 0
    failed: int = 0
    last_seq: int = 0
    behind: float = 0.0  # the most the publisher fell behind its schedule, in messages

    def _done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
            return
        self.acked += 1
        self.last_seq = max(self.last_seq, int(future.result().seq))

    async def run(self, stopping: asyncio.Event) -> None:
        subjects = Subjects(PREFIX, TRADER)
        feed = ChaosFeed(self.seed, TRADER).stream()
        nc = await connect_nats(self.nats_url)
        js = nc.jetstream(publish_async_max_pending=20_000)
        started = time.monotonic()
        try:
            while not stopping.is_set():
                due = int((time.monotonic() - started) * self.rate)
                self.behind = max(self.behind, due - self.sent)
                while self.sent < due:
                    message = next(feed)
                    future = await js.publish_async(
                        subjects.inbound_for(message.kind), message.payload, headers={"Nats-Msg-Id": message.msg_id}
                    )
                    future.add_done_callback(self._done)
                    self.sent += 1
                await asyncio.sleep(0.002)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(js.publish_async_completed(), timeout=30)
        finally:
            await nc.close()


def retention_section(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's `retention:` section for `--retention` (empty: off)."""
    if not args.retention:
        return {}
    return {
        "closed_orders_after": args.retention,
        "closed_positions_after": args.retention,
        "account_states": args.account_states,
        "sweep_interval": args.sweep_interval,
    }


async def consumer_unacked(nats_url: str) -> int:
    nc = await connect_nats(nats_url)
    try:
        info = await nc.jetstream().consumer_info(STREAM, f"tradecache-{TRADER}")
        return int(info.num_pending) + int(info.num_ack_pending)
    finally:
        await nc.close()


@dataclass
class RedisSample:
    keys: int
    used_memory: int
    aof_rewrites: str
    delayed_fsyncs: str

    def __str__(self) -> str:
        return (
            f"redis {self.keys:,} keys, {self.used_memory / 2**20:,.1f} MB, AOF rewrites {self.aof_rewrites}, "
            f"delayed fsyncs {self.delayed_fsyncs}"
        )


def redis_stats(server: RedisServer) -> RedisSample:
    """Redis keys and memory, and the AOF events that stall it (a lag spike often lines up with one)."""
    client = server.client()
    try:
        memory, persistence, keys = client.info("memory"), client.info("persistence"), client.dbsize()
    finally:
        client.close()
    return RedisSample(
        int(keys), int(memory["used_memory"]), str(persistence.get("aof_rewrites", "?")),
        str(persistence.get("aof_delayed_fsync", "?")),
    )  # fmt: skip


def growth(samples: list[tuple[float, float]], minutes: float) -> tuple[float, float, float]:
    """(value at the start of the last `minutes`, value at the end, relative growth)."""
    cutoff = samples[-1][0] - minutes * 60
    base = next(value for at, value in samples if at >= cutoff - 1)
    end = samples[-1][1]
    return base, end, (end - base) / base if base else 0.0


def peak_growth(samples: list[tuple[float, float]], minutes: float) -> tuple[float, float, float]:
    """(peak of the first half of the last `minutes`, peak of the second half, relative growth):
    retention removes in sweeps, so keys and memory saw-tooth; their peaks show a trend."""
    end = samples[-1][0]
    window = [(at, value) for at, value in samples if at >= end - minutes * 60 - 1]
    middle = end - minutes * 30
    first = max((value for at, value in window if at < middle), default=window[0][1])
    second = max((value for at, value in window if at >= middle), default=window[-1][1])
    return first, second, (second - first) / first if first else 0.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def soak(args: argparse.Namespace) -> int:
    redis_server, nats_server = RedisServer(), NatsServer()
    daemon: Daemon | None = None
    try:
        await asyncio.to_thread(redis_server.start)
        await asyncio.to_thread(nats_server.start)
        await create_stream(nats_server.url)
        config = daemon_config(
            redis_server.url,
            nats_server.url,
            TRADER,
            redis={"socket_timeout": 5.0, "socket_connect_timeout": 5.0},
            ingest={"batch_size": 256, "open_orders_limit": 100_000, "fetch_expires": 0.5},
            metrics={"key_count_interval": 10.0},
            logging={"level": "WARNING"},
            retention=retention_section(args),
        )
        daemon = Daemon(config)
        daemon.start()
        port = daemon.port
        await wait_until(lambda: asyncio.to_thread(lambda: http_get(port, "/readyz")[0] == 200), 60, "daemon ready")
        process = daemon.process.process
        assert process is not None
        pid = process.pid
        print(f"soak: {args.rate:,.0f} events/s for {args.minutes:g} min, seed {args.seed}; daemon pid {pid}, "
              f"redis {redis_server.binary}, nats {nats_server.binary}", flush=True)  # fmt: skip
        print(f"RSS at start: {rss_mb(pid):.1f} MB; retention {retention_section(args) or 'off'}", flush=True)

        publisher = Publisher(nats_server.url, args.rate, args.seed)
        stopping = asyncio.Event()
        publishing = asyncio.create_task(publisher.run(stopping))
        started = time.monotonic()
        rss: list[tuple[float, float]] = [(0.0, rss_mb(pid))]
        first_redis = await asyncio.to_thread(redis_stats, redis_server)
        redis_keys: list[tuple[float, float]] = [(0.0, float(first_redis.keys))]
        redis_memory: list[tuple[float, float]] = [(0.0, float(first_redis.used_memory))]
        p99s: list[float] = []
        previous = await asyncio.to_thread(scrape, port)
        first_written = previous.written
        tick = 0
        while time.monotonic() - started < args.minutes * 60:
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * args.interval - time.monotonic()))
            if publishing.done():
                raise RuntimeError("the publisher stopped") from publishing.exception()
            current = await asyncio.to_thread(scrape, port)
            window = {bound: current.lag[bound] - previous.lag.get(bound, 0.0) for bound in current.lag}
            events = window.get(float("inf"), 0.0)
            p50, p99 = quantile(0.5, window), quantile(0.99, window)
            written = current.written - previous.written
            unacked = await consumer_unacked(nats_server.url)
            redis_info = await asyncio.to_thread(redis_stats, redis_server)
            elapsed = time.monotonic() - started
            memory = rss_mb(pid)
            rss.append((elapsed, memory))
            redis_keys.append((elapsed, float(redis_info.keys)))
            redis_memory.append((elapsed, float(redis_info.used_memory)))
            p99s.append(p99)
            removed = ", ".join(f"{kind} {count:,.0f}" for kind, count in current.removed.items() if count)
            print(f"[{elapsed / 60:5.1f} min] RSS {memory:6.1f} MB | lag p50 {ms(p50)}, p99 {ms(p99)} "
                  f"({events:,.0f} events) | written {written:,.0f} ({written / args.interval:,.0f}/s), "
                  f"total {current.written - first_written:,.0f} | published {publisher.acked:,} | pending "
                  f"{unacked:,} (daemon gauge {current.pending_gauge:,.0f}) | {redis_info}"
                  f"{f' | removed {removed}' if removed else ''}", flush=True)  # fmt: skip
            previous = current
        stopping.set()
        await publishing
        last = publisher.last_seq
        caught_up = True
        try:
            await wait_until(lambda: read_checkpoint(redis_server.url, TRADER) >= last, 120, "caught up")
        except TimeoutError:
            caught_up = False
        final = await asyncio.to_thread(scrape, port)
        flat_minutes = min(args.flat_window, args.minutes / 2)
        base, _, rss_growth = growth(rss, flat_minutes)
        flat = rss_growth < FLAT_LIMIT
        print()
        print(f"published {publisher.acked:,} messages ({publisher.failed} failed publishes, at most "
              f"{publisher.behind:,.0f} behind schedule); written {final.written - first_written:,.0f}; "
              f"caught up to stream sequence {last:,}: {caught_up}")  # fmt: skip
        print(f"RSS: start {rss[0][1]:.1f} MB, max {max(m for _, m in rss):.1f} MB, end {rss[-1][1]:.1f} MB; "
              f"last {flat_minutes:g} min {base:.1f} -> {rss[-1][1]:.1f} MB ({rss_growth:+.1%}): "
              f"{'flat' if flat else 'NOT flat'} (limit {FLAT_LIMIT:.0%})")  # fmt: skip
        if args.retention:
            for name, samples, unit in (("Redis keys", redis_keys, 1.0), ("Redis used_memory MB", redis_memory, 2**20)):
                before, after, change = peak_growth(samples, flat_minutes)
                flat_too = change < FLAT_LIMIT
                flat = flat and flat_too
                print(f"{name}: start {samples[0][1] / unit:,.1f}, max {max(v for _, v in samples) / unit:,.1f}, "
                      f"end {samples[-1][1] / unit:,.1f}; peak in each half of the last {flat_minutes:g} min "
                      f"{before / unit:,.1f} -> {after / unit:,.1f} ({change:+.1%}): "
                      f"{'flat' if flat_too else 'NOT flat'}")  # fmt: skip
            totals = ", ".join(f"{kind} {count:,.0f}" for kind, count in final.removed.items())
            print(f"retention removed: {totals}")
        if p99s:
            print(f"event lag p99 per interval: max {ms(max(p99s))}, median {ms(sorted(p99s)[len(p99s) // 2])}")
        print(f"daemon exit code after SIGTERM: {await asyncio.to_thread(daemon.stop)}")
        return 0 if flat and caught_up and publisher.failed == 0 else 1
    finally:
        if daemon is not None:
            daemon.process.kill()
            shutil.rmtree(daemon.process.folder, ignore_errors=True)
        redis_server.close()
        nats_server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second (default 2000)")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to publish (default 30)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between reports (default 60)")
    parser.add_argument("--flat-window", type=float, default=10.0, help="minutes RSS must stay flat (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="feed seed (default: drawn and printed)")
    parser.add_argument("--retention", type=float, default=0.0, help="retention age in seconds (default 0: off)")
    parser.add_argument("--account-states", type=int, default=100, help="account states kept with --retention")
    parser.add_argument("--sweep-interval", type=float, default=15.0, help="seconds between sweeps (default 15)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
