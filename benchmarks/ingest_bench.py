"""Ingest throughput, lag, memory and rebuild rate, beside bare consumers and a naive sink of the same run.

1. Pre-fills JetStream with N messages (default 100k) of `benchmarks/feed.py`'s workload: `--workload
   mix` (the default: one fill per order), `partial-fills` (each order filled in 10 trades) or
   `one-order` (a single order filled in as many trades as the stream holds, with its position),
   `half-malformed` (the mix with every other message not msgpack: each one dead-lettered).
2. Bare JetStream consumers that do nothing else, each reading all N messages: a hand-made pull
   (requests to `$JS.API.CONSUMER.MSG.NEXT`) with AckPolicy.ALL (one ack per pull), the same with
   an ack per message, and nats-py's `fetch()` with an ack per message. They bound what the
   consumer protocol allows on this machine.
3. A naive sink (nats-py `fetch()`, one awaited RPUSH and one ack per message): the baseline of goal 1,
   measured twice, before tradecache and right after its backlog (the machine's speed moves within
   minutes: the ratio is taken against the mean of the two, and both are printed).
4. tradecache (`python -m tradecache run`, its own process): events/s from ready to the checkpoint
   reaching the last sequence (every message decoded, validated, applied, committed with its
   checkpoint, acked). With `--profile`, py-spy samples the daemon meanwhile and the time is split
   into the ingest stages (`benchmarks/profiler.py`); the rate is then lower than without it.
5. Event lag while publishing at a steady 1,000 events/s: the daemon's histogram (JetStream
   timestamp to committed) and an external measure (before the publish to the moment the
   checkpoint, committed atomically with the event, shows it readable in Redis).
6. RSS at ready, after the backlog and at the end.
7. `tradecache rebuild` into an emptied Redis (the daemon stopped first), events/s beside ingest.
Each goal of issue 15 that this benchmark measures is printed with MET or NOT MET.

Usage: python benchmarks/ingest_bench.py [--events 100000] [--naive 20000] [--paced-seconds 10]
                                         [--profile] [--quick]
Private redis-server (AOF everysec) and nats-server are started on free ports. The redis-server's
automatic AOF rewrite is moved out of reach (`auto-aof-rewrite-min-size 4gb`): with Redis' default
(64mb) the rewrite, a forked child that compresses the whole dataset on one of the two cores,
started in the last part of tradecache's backlog (the AOF passes 64 MB there) and in no naive
measure. The rewrites during each measure are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import re
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

import nats
import redis
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import profiler
from benchmarks.daemon_runner import (
    cpu_seconds,
    quantile,
    rss_mb,
    run_queue_seconds,
    server_versions,
    start_daemon,
    wait_ready,
)
from benchmarks.feed import PREFIX, TRADER, WORKLOADS, Feed, mix, prefill, publish_at
from tradecache.cache.keys import Keys
from tradecache.dev.stack import NatsServer, RedisServer, free_port

STREAM = "TRADECACHE"
PULL = 256


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


# -- bare consumers ------------------------------------------------------------------------------


async def hand_pull(nats_url: str, count: int, ack_each: bool) -> float:
    """Pulls by hand, PULL messages at a time, counting them; acks each, or the last of each pull
    (AckPolicy.ALL). The next pull is asked for as soon as one is complete."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"bare-{'each' if ack_each else 'all'}-{uuid.uuid4().hex[:6]}"
    policy = AckPolicy.EXPLICIT if ack_each else AckPolicy.ALL
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=name, ack_policy=policy, max_ack_pending=-1,
                                                 filter_subject=f"{PREFIX}.>"))  # fmt: skip
    inbox = nc.new_inbox()
    received = 0
    in_pull = 0
    done = asyncio.Event()

    async def pull() -> None:
        body = {"batch": min(PULL, count - received), "expires": 5_000_000_000}
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{name}", json.dumps(body).encode(), reply=inbox)

    async def on_message(msg: Any) -> None:
        nonlocal received, in_pull
        if not msg.data and msg.headers and msg.headers.get("Status"):
            in_pull = 0  # a pull that ended short (no messages yet, expired): ask again
            await pull()
            return
        received += 1
        in_pull += 1
        if ack_each:
            await nc.publish(msg.reply, b"+ACK")
        if received >= count:
            if not ack_each:
                await nc.publish(msg.reply, b"+ACK")
            done.set()
        elif in_pull >= PULL:
            if not ack_each:
                await nc.publish(msg.reply, b"+ACK")
            in_pull = 0
            await pull()

    await nc.subscribe(inbox, cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1)
    started = time.perf_counter()
    await pull()
    await asyncio.wait_for(done.wait(), timeout=300)
    seconds = time.perf_counter() - started
    await nc.close()
    return count / seconds


async def fetch_consumer(nats_url: str, count: int) -> float:
    """nats-py's `fetch()` and an ack per message, nothing else."""
    nc = await nats.connect(nats_url)
    sub = await nc.jetstream().pull_subscribe(f"{PREFIX}.>", durable=f"bare-fetch-{uuid.uuid4().hex[:6]}",
                                              stream=STREAM)  # fmt: skip
    done = 0
    started = time.perf_counter()
    while done < count:
        for msg in await sub.fetch(min(PULL, count - done), timeout=5):
            await msg.ack()
            done += 1
    seconds = time.perf_counter() - started
    await nc.close()
    return done / seconds


async def naive_sink(nats_url: str, redis_url: str, count: int, durable: str) -> float:
    """fetch(), then one awaited RPUSH and one ack per message (`durable`: a consumer of its own,
    from the stream's start)."""
    import redis.asyncio as aioredis

    nc = await nats.connect(nats_url)
    client = aioredis.Redis.from_url(redis_url)
    sub = await nc.jetstream().pull_subscribe(f"{PREFIX}.>", durable=durable, stream=STREAM)
    done = 0
    started = time.perf_counter()
    while done < count:
        for msg in await sub.fetch(min(PULL, count - done), timeout=5):
            await client.rpush(f"naive:{msg.subject}", msg.data)
            await msg.ack()
            done += 1
    seconds = time.perf_counter() - started
    await client.aclose()
    await nc.close()
    return done / seconds


# -- the daemon ----------------------------------------------------------------------------------


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


def wait_checkpoint(client: redis.Redis, sequence: int, timeout: float = 3600) -> None:
    key = Keys(TRADER).checkpoint()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = client.get(key)
        if raw is not None and int(raw) >= sequence:
            return
        time.sleep(0.005)
    raise TimeoutError(f"checkpoint did not reach {sequence}")


async def paced_with_lag(nats_url: str, redis_url: str, feed: Feed, rate: int, seconds: float) -> list[float]:
    """Publish at `rate` for `seconds`; each message's lag from just before its publish to the
    moment the checkpoint is seen at or past its sequence. Redis tells when the checkpoint is
    written (a keyspace notification), and only then is it read: a poll every 0.2 ms, as this
    measure did before, cost 20 points of a core on this 2-core machine and, in the same window,
    two to three times as many events over 10 ms in the daemon's own histogram."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    key = Keys(TRADER).checkpoint()
    await client.config_set("notify-keyspace-events", "K$")  # string commands: the checkpoint's SET
    pubsub = client.pubsub()
    await pubsub.subscribe(f"__keyspace@0__:{key}")
    seen: list[tuple[int, float]] = []  # (checkpoint, when first seen), increasing
    publishing = asyncio.create_task(publish_at(nats_url, feed, rate, seconds))
    last_wanted = None
    while True:
        await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        raw = await client.get(key)
        now = time.perf_counter()
        value = int(raw) if raw else 0
        if not seen or value > seen[-1][0]:
            seen.append((value, now))
        if publishing.done():
            last_wanted = last_wanted or publishing.result()[-1][0]
            if value >= last_wanted:
                break
    await pubsub.aclose()
    await client.config_set("notify-keyspace-events", "")
    await client.aclose()
    checkpoints = [value for value, _ in seen]
    lags = []
    for sequence, published in publishing.result():
        readable = seen[bisect.bisect_left(checkpoints, sequence)][1]
        lags.append(readable - published)
    return lags


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def aof_rewrites(redis_url: str) -> int:
    """The AOF rewrites redis-server has started so far (Redis 7 counts them; 6.2 says only whether
    one is in progress)."""
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("persistence")
    finally:
        client.close()
    return int(info.get("aof_rewrites", info.get("aof_rewrite_in_progress", 0)))


def cpu_budget(cores: int, rate_naive: float, cpu_per_event: float) -> str:
    """What the ingest goal asks of this machine's CPU: at 8x the naive sink, the three processes
    (tradecache, redis-server, nats-server) share `cores` seconds of CPU per second, so together
    they may spend at most cores / rate per event; and the rate that this run's CPU per event
    would reach with every core busy all the time (a ceiling: nothing else running, no waits)."""
    goal_rate = 8 * rate_naive
    budget = cores / goal_rate
    ceiling = cores / cpu_per_event
    return (f"CPU budget of the goal on {cores} cores: 8x the naive sink is {goal_rate:,.0f} events/s, "
            f"{budget * 1e6:.1f} us of CPU per event for the three processes together; they used "
            f"{cpu_per_event * 1e6:.1f} us ({cpu_per_event / budget:.0%} of it): with every core busy, at most "
            f"{ceiling:,.0f} events/s = {ceiling / rate_naive:.1f}x the naive sink")  # fmt: skip


def rebuild(folder: Path, config: dict[str, Any], profile: Path | None = None) -> tuple[int, float, float]:
    """`tradecache rebuild` (a process of its own, under py-spy when `profile` names its output):
    messages, its own seconds, wall seconds."""
    import os

    import yaml

    path = folder / "rebuild.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRADECACHE_")}
    spy = [*profiler.command(profile), "--"] if profile is not None else []
    started = time.perf_counter()
    done = subprocess.run([*spy, sys.executable, "-m", "tradecache", "rebuild", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=3600, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    match = re.search(r": (\d+) messages .* in ([\d.]+) s", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"tradecache rebuild failed ({done.returncode}): {done.stdout} {done.stderr[-2000:]}")
    return int(match[1]), float(match[2]), wall


# -- the run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=20_000, help="messages the naive sink reads")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="events/s of the paced phase")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mix", help="see 1. above")
    parser.add_argument("--profile", action="store_true", help="sample the daemon with py-spy during the backlog")
    parser.add_argument("--profile-raw", type=Path,
                        help="also keep py-spy's raw stacks in this file (the rebuild's: <file>.rebuild)")  # fmt: skip
    parser.add_argument("--profile-rebuild", action="store_true",
                        help="run `tradecache rebuild` under py-spy and split its time the same way")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the benchmark still works")
    args = parser.parse_args()
    if args.quick:
        args.events, args.naive, args.paced_seconds = 3000, 1000, 1.5
    folder = Path(tempfile.mkdtemp(prefix="tc-ingest-bench-"))
    redis_server = RedisServer(
        data_dir=folder / "redis", appendonly=True, extra_args=["--auto-aof-rewrite-min-size", "4gb"]
    )
    nats_server = NatsServer(data_dir=folder / "nats")
    redis_server.start()
    nats_server.start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        feed = WORKLOADS[args.workload](uuid.uuid4().hex[:6])
        messages = feed.messages(args.events)
        print(f"stream: {len(messages):,} messages of workload {args.workload} ({mix(messages)})")
        print(f"servers: {server_versions(redis_server.binary, nats_server.binary)}")
        last = asyncio.run(prefill(nats_server.url, messages))
        count = len(messages)

        bare_all = asyncio.run(hand_pull(nats_server.url, count, ack_each=False))
        bare_each = asyncio.run(hand_pull(nats_server.url, count, ack_each=True))
        bare_fetch = asyncio.run(fetch_consumer(nats_server.url, count))
        print(f"bare consumer, hand-made pull, AckPolicy.ALL: {bare_all:,.0f} msgs/s")
        print(f"bare consumer, hand-made pull, ack per message: {bare_each:,.0f} msgs/s")
        print(f"bare consumer, nats-py fetch(), ack per message: {bare_fetch:,.0f} msgs/s")
        naive_count = min(args.naive, count)
        rewrites = aof_rewrites(redis_server.url)
        naive_before = asyncio.run(naive_sink(nats_server.url, redis_server.url, naive_count, "naive-before"))
        print(f"naive sink (fetch + awaited RPUSH + ack per message): {naive_before:,.0f} events/s "
              f"(AOF rewrites during it: {aof_rewrites(redis_server.url) - rewrites})")  # fmt: skip

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
        rss_start = rss_mb(daemon.pid)
        recorder = profiler.start(daemon.pid, folder / "profile.txt") if args.profile else None
        pids = {"tradecache": daemon.pid, "redis-server": redis_server.pid, "nats-server": nats_server.pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}
        waits_before = {name: run_queue_seconds(pid) for name, pid in pids.items() if pid is not None}
        rewrites = aof_rewrites(redis_server.url)
        started = time.perf_counter()
        wait_checkpoint(client, last)
        seconds = time.perf_counter() - started
        cpu_used = {name: cpu_seconds(pids[name]) - value for name, value in cpu_before.items()}
        waited = {name: run_queue_seconds(pids[name]) - value for name, value in waits_before.items()}
        profile = profiler.stop(recorder, folder / "profile.txt") if recorder is not None else None
        rewrites = aof_rewrites(redis_server.url) - rewrites
        # The second naive measure, with the daemon idle (its backlog is done).
        naive_after = asyncio.run(naive_sink(nats_server.url, redis_server.url, naive_count, "naive-after"))
        rate_naive = (naive_before + naive_after) / 2
        rate = count / seconds
        print(f"naive sink again, right after tradecache's backlog: {naive_after:,.0f} events/s; "
              f"the mean of the two, the baseline below: {rate_naive:,.0f} events/s")  # fmt: skip
        note = " (under py-spy)" if profile else ""
        print(f"tradecache end to end{note}: {count:,} events in {seconds:.2f} s = {rate:,.0f} events/s "
              f"({rate / rate_naive:.1f}x the naive sink, "
              f"{rate / bare_all:.0%} of the bare AckPolicy.ALL consumer; "
              f"AOF rewrites during it: {rewrites})")  # fmt: skip
        cores = len(os.sched_getaffinity(0))
        print(f"CPU per event during the backlog (where the wall time goes; {cores} cores): "
              + ", ".join(f"{name} {used / count * 1e6:.1f} us ({used / seconds:.0%} of a core)"
                          for name, used in cpu_used.items()))  # fmt: skip
        print(cpu_budget(cores, rate_naive, sum(cpu_used.values()) / count))
        # Whether the cores were short (a process runnable with no core free) or idle (the
        # processes waiting on each other): the cores' use against the run queue's waits.
        print(f"cores busy during the backlog: {sum(cpu_used.values()) / seconds:.0%} of {cores * 100}%; "
              "waiting for a core (runnable, none free): "
              + ", ".join(f"{name} {wait * 1e3:,.0f} ms ({wait / seconds:.0%} of the backlog)"
                          for name, wait in waited.items()))  # fmt: skip
        rss_backlog = rss_mb(daemon.pid)
        if profile is not None:
            print(profile.table())
            if args.profile_raw is not None:
                shutil.copyfile(folder / "profile.txt", args.profile_raw)

        before = scrape_lag(port)
        lags = asyncio.run(paced_with_lag(nats_server.url, redis_server.url, feed, args.rate, args.paced_seconds))
        after = scrape_lag(port)
        window = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
        lag_p50, lag_p99 = quantile(0.5, window) * 1000, quantile(0.99, window) * 1000
        print(f"event lag at {args.rate:,} events/s for {args.paced_seconds:g} s ({window[float('inf')]:,.0f} events), "
              f"daemon histogram: p50 {lag_p50:.2f} ms, p99 {lag_p99:.2f} ms")  # fmt: skip
        print(f"event lag, external (publish to readable in Redis, {len(lags):,} events): "
              f"p50 {percentile(lags, 0.5) * 1000:.2f} ms, p99 {percentile(lags, 0.99) * 1000:.2f} ms")  # fmt: skip
        rss_end = rss_mb(daemon.pid)
        print(f"tradecache RSS: {rss_start:.1f} MB at ready, {rss_backlog:.1f} MB after the backlog, "
              f"{rss_end:.1f} MB at the end")  # fmt: skip
        daemon.send_signal(signal.SIGTERM)
        print(f"tradecache exit code after SIGTERM: {daemon.wait(timeout=60)}")
        checkpoint = int(client.get(Keys(TRADER).checkpoint()) or 0)

        client.flushall()
        rebuild_profile = folder / "rebuild-profile.txt" if args.profile_rebuild else None
        rebuilt, rebuild_seconds, rebuild_wall = rebuild(folder, config, rebuild_profile)
        rate_rebuild = rebuilt / max(rebuild_seconds, 1e-3)
        after_rebuild = int(client.get(Keys(TRADER).checkpoint()) or 0)
        spied = " (under py-spy)" if rebuild_profile else ""
        print(f"tradecache rebuild into an emptied Redis{spied}: {rebuilt:,} messages in {rebuild_seconds:.2f} s "
              f"= {rate_rebuild:,.0f} events/s ({rebuild_wall:.1f} s with the process start); "
              f"checkpoint {after_rebuild} (ingest left {checkpoint})")  # fmt: skip
        if rebuild_profile is not None:
            print(profiler.parse(rebuild_profile.read_text(), rebuild=True).table("the rebuild"))
            if args.profile_raw is not None:
                shutil.copyfile(rebuild_profile, args.profile_raw.with_name(args.profile_raw.name + ".rebuild"))

        ratio = rate / rate_naive
        flat = rss_end <= rss_backlog * 1.1 + 2
        print(f"GOAL ingest >= 8x the naive sink of the same run: {ratio:.1f}x "
              f"({rate:,.0f} vs {rate_naive:,.0f} events/s){note}: {verdict(ratio >= 8)}")  # fmt: skip
        print(f"GOAL lag p99 <= 10 ms at 1,000 events/s (daemon histogram): {lag_p99:.2f} ms "
              f"(external {percentile(lags, 0.99) * 1000:.2f} ms): {verdict(lag_p99 <= 10)}")  # fmt: skip
        print(f"GOAL RSS flat (end within 10% + 2 MB of after the backlog): {rss_backlog:.1f} -> {rss_end:.1f} MB: "
              f"{verdict(flat)}")  # fmt: skip
        print(f"GOAL rebuild >= the ingest rate: {rate_rebuild:,.0f} vs {rate:,.0f} events/s: "
              f"{verdict(rate_rebuild >= rate and after_rebuild == checkpoint)}")  # fmt: skip
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        redis_server.stop()
        nats_server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
