"""Redis on a bad day without going away: blocked (slow), and up but refusing writes.

Each test runs the daemon as a subprocess against private servers (the faults are made with
server commands: DEBUG SLEEP, a busy Lua script, CONFIG SET, REPLICAOF) while a publisher
keeps publishing, once per Redis line (`redis_line`: 6.2 and 7.x answer a refused write inside a
script differently), and checks:
- no message is acknowledged before it is written: every sample of the consumer's ack floor
  taken while Redis could not write is at or below the checkpoint Redis held then;
- back-pressure: while Redis cannot write, messages stay pending at the server;
- readiness goes false (the stall is longer than `redis.socket_timeout`; a refused write at once)
  and comes back; the daemon neither crashes nor dead-letters anything;
- afterwards everything is written: Redis equals a clean run of the same stream, key by key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos import (
    STREAM,
    ChaosFeed,
    Daemon,
    FeedMessage,
    Publisher,
    clean_state,
    compare_with_clean_run,
    connect_nats,
    consumer_state,
    create_stream,
    daemon_config,
    dead_letter_count,
    http_get,
    metric_value,
    read_checkpoint,
    wait_until,
)
from tests.lines import ServerLine
from tradecache.cache.keys import Keys
from tradecache.dev.stack import HOST, NatsServer, RedisServer

pytestmark = pytest.mark.integration

TRADER = "DEGRADED-001"
SOCKET_TIMEOUT = 1.0  # the daemon's redis.socket_timeout
STALL = 4.0  # how long Redis is blocked: well beyond the socket timeout
REFUSAL = 3.0  # how long Redis refuses writes
RATE = 200.0  # messages per second published during the fault
FIRST, TOTAL = 200, 1600  # published before the fault / in all (the rest takes 7 s at RATE)

# Busy-loops for ARGV[1] microseconds after reading the checkpoint (KEYS[1]), which it returns.
BUSY_SCRIPT = """
local checkpoint = redis.call('GET', KEYS[1])
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
return checkpoint
"""


def debug_command_args(line: ServerLine) -> list[str]:
    """Redis 7 refuses DEBUG unless enabled; 6.2 has no such option (and allows it)."""
    return ["--enable-debug-command", "yes"] if line.version >= (7, 0, 0) else []


@dataclass
class Stack:
    redis: RedisServer
    nats: NatsServer
    daemon: Daemon
    messages: list[FeedMessage]

    @property
    def checkpoint_key(self) -> str:
        return Keys(TRADER).checkpoint()


@contextlib.asynccontextmanager
async def running_stack(seed: int, line: ServerLine) -> AsyncIterator[Stack]:
    redis_server = RedisServer(binary=line.binary, extra_args=debug_command_args(line))
    nats_server = NatsServer()
    daemon: Daemon | None = None
    try:
        await asyncio.to_thread(redis_server.start)
        await asyncio.to_thread(nats_server.start)
        await create_stream(nats_server.url)
        config = daemon_config(
            redis_server.url,
            nats_server.url,
            TRADER,
            redis={"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT},
            ingest={"batch_size": 64},
        )
        daemon = Daemon(config)
        daemon.start()
        port = daemon.port
        await wait_until(lambda: asyncio.to_thread(lambda: http_get(port, "/readyz")[0] == 200), 60, "daemon ready")
        yield Stack(redis_server, nats_server, daemon, ChaosFeed(seed, TRADER).messages(TOTAL))
    finally:
        if daemon is not None:
            daemon.close()
        redis_server.close()
        nats_server.close()


@dataclass
class Sample:
    started: float
    ended: float
    ack_floor: int
    unacked: int  # not yet delivered + delivered and not acked


@dataclass
class Watch:
    """Samples the consumer (ack floor, unacked) and the daemon's readiness, with monotonic times."""

    nats_url: str
    port: int
    samples: list[Sample] = field(default_factory=list)
    readiness: list[tuple[float, int]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def consumer(self) -> None:
        nc = await connect_nats(self.nats_url)
        js = nc.jetstream(timeout=2.0)
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                with contextlib.suppress(Exception):
                    info = await js.consumer_info(STREAM, f"tradecache-{TRADER}")
                    unacked = int(info.num_pending) + int(info.num_ack_pending)
                    self.samples.append(Sample(started, time.monotonic(), int(info.ack_floor.stream_seq), unacked))
                await asyncio.sleep(0.05)
        finally:
            await nc.close()

    async def ready(self) -> None:
        while not self.stopping.is_set():
            status, _ = await asyncio.to_thread(http_get, self.port, "/readyz", 1.0)
            self.readiness.append((time.monotonic(), status))
            await asyncio.sleep(0.05)

    def between(self, start: float, end: float) -> list[Sample]:
        """Samples taken entirely inside [start, end]."""
        return [s for s in self.samples if s.started >= start and s.ended <= end]

    def statuses(self, start: float, end: float) -> set[int]:
        return {status for at, status in self.readiness if start <= at <= end}


@contextlib.asynccontextmanager
async def publishing(stack: Stack) -> AsyncIterator[tuple[Publisher, Watch]]:
    """Publishes FIRST messages and waits for them, then publishes the rest at RATE while watching."""
    await Publisher(stack.nats.url, TRADER, stack.messages[:FIRST]).run()
    await wait_until(lambda: read_checkpoint(stack.redis.url, TRADER) >= FIRST, 60, "first messages written")
    publisher = Publisher(stack.nats.url, TRADER, stack.messages[FIRST:], RATE)
    watch = Watch(stack.nats.url, stack.daemon.port)
    tasks = [
        asyncio.create_task(publisher.run()),
        asyncio.create_task(watch.consumer()),
        asyncio.create_task(watch.ready()),
    ]
    try:
        await wait_until(lambda: publisher.published >= 100, 60, "publishing under way")
        yield publisher, watch
        await tasks[0]
    finally:
        watch.stopping.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def events_by_outcome(port: int) -> Counter[str]:
    """`tradecache_events_total` summed by outcome."""
    status, text = http_get(port, "/metrics")
    assert status == 200
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tradecache_events_total":
                totals[sample.labels["outcome"]] += int(sample.value)
    return totals


async def assert_everything_written(stack: Stack, publisher: Publisher, *, retried_writes: bool) -> None:
    """All published messages written and acked, the daemon ready and alive; Redis = a clean run.

    The daemon counts each message once. When a commit may have reached Redis although the
    daemon saw a timeout (`retried_writes`), its retry finds events stored and counts them as
    duplicates; otherwise every message is counted written.
    """
    last = publisher.sequences[-1]
    assert last == TOTAL  # a fresh stream: sequence n is the n-th message of the feed
    await wait_until(lambda: read_checkpoint(stack.redis.url, TRADER) >= last, 60, "everything written")

    async def acked() -> bool:
        floor, undelivered, unacked = await consumer_state(stack.nats.url, TRADER)
        return floor == last and undelivered == 0 and unacked == 0

    await wait_until(acked, 60, "everything acked")
    port = stack.daemon.port
    await wait_until(lambda: asyncio.to_thread(lambda: http_get(port, "/readyz")[0] == 200), 30, "ready again")
    assert stack.daemon.alive(), stack.daemon.log()[-3000:]
    assert await dead_letter_count(stack.nats.url) == 0
    outcomes = await asyncio.to_thread(events_by_outcome, port)
    assert outcomes["dead_lettered"] == 0
    assert outcomes["written"] + outcomes["duplicate"] == TOTAL
    if not retried_writes:
        assert outcomes["duplicate"] == 0
    assert await asyncio.to_thread(stack.daemon.stop) == 0
    client = redis.Redis.from_url(stack.redis.url)
    try:
        expected = clean_state(TRADER, stack.messages)
        comparison = compare_with_clean_run(client, TRADER, expected, last)
    finally:
        client.close()
    assert comparison.duplicates == 0
    assert comparison.lost == 0
    assert comparison.events_found == comparison.events_expected > TOTAL
    assert comparison.equal, comparison.problems()


# -- slow: Redis blocked for STALL seconds ------------------------------------------------------


def stall(server: RedisServer, line: ServerLine, how: str, checkpoint_key: str) -> tuple[float, int]:
    """Block Redis for STALL seconds; returns (when the command was sent, the checkpoint it held)."""
    client = redis.Redis(host=HOST, port=server.port, socket_timeout=STALL + 30)
    try:
        if how == "busy-script":
            # Past this many ms other clients get BUSY errors instead of waiting.
            name = "busy-reply-threshold" if line.version >= (7, 0, 0) else "lua-time-limit"
            client.config_set(name, 200)
        sent = time.monotonic()
        if how == "debug-sleep":
            # One transaction: the checkpoint read and the sleep with nothing in between.
            pipe = client.pipeline(transaction=True)
            pipe.get(checkpoint_key)
            pipe.execute_command("DEBUG", "SLEEP", STALL)  # type: ignore[no-untyped-call]
            raw, _ = pipe.execute()
        else:
            raw = client.eval(BUSY_SCRIPT, 1, checkpoint_key, int(STALL * 1_000_000))
        return sent, int(raw or 0)
    finally:
        client.close()


@pytest.mark.parametrize("how", ["debug-sleep", "busy-script"])
async def test_blocked_redis_delays_acks_drops_readiness_and_loses_nothing(how: str, redis_line: ServerLine) -> None:
    async with running_stack(seed=101, line=redis_line) as stack:
        async with publishing(stack) as (publisher, watch):
            sent, held = await asyncio.to_thread(stall, stack.redis, redis_line, how, stack.checkpoint_key)
            returned = time.monotonic()
            assert stack.daemon.alive(), stack.daemon.log()[-3000:]
            # Redis cannot have written anything between `sent` and `sent + STALL`, so every ack
            # floor read before then is at most the checkpoint it held.
            before_end = [s for s in watch.samples if s.ended <= sent + STALL]
            assert before_end
            assert max(s.ack_floor for s in before_end) <= held
            during = watch.between(sent, sent + STALL)
            assert len(during) >= 5
            # Back-pressure: what was published meanwhile waited, unacknowledged.
            assert max(s.unacked for s in during) >= 100
            # The stall outlasted the socket timeout: the daemon said it was not ready.
            assert 503 in watch.statuses(sent, returned + 1.0)
        log = stack.daemon.log()
        assert "redis unavailable" in log
        assert ("BUSY" if how == "busy-script" else "TimeoutError") in log
        # A commit that timed out during DEBUG SLEEP still runs when the sleep ends.
        await assert_everything_written(stack, publisher, retried_writes=how == "debug-sleep")


# -- refusing writes -----------------------------------------------------------------------------


def refuse_with_min_replicas(stack: Stack, other: RedisServer) -> Callable[[], None]:
    """Writes fail with NOREPLICAS (no replica is attached); reads go on."""
    client = stack.redis.client()
    client.config_set("min-replicas-to-write", 1)

    def undo() -> None:
        client.config_set("min-replicas-to-write", 0)
        client.close()

    return undo


def _replication(client: redis.Redis) -> dict[str, str]:
    info: dict[str, str] = {k: str(v) for k, v in client.info("replication").items()}
    return info


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def refuse_as_replica(stack: Stack, other: RedisServer) -> Callable[[], None]:
    """Make the daemon's Redis a read-only replica of a second server holding the same data.

    Writes fail with READONLY, as when a failover leaves the sidecar pointing at a replica. So
    that no write is lost in the switch, writes are paused (CLIENT PAUSE WRITE) while the second
    server copies the first, becomes a master, and the first becomes its replica.
    """
    first, second = stack.redis.client(), other.client()
    for client in (first, second):
        client.config_set("repl-diskless-sync-delay", 0)  # 5 s by default
    first.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # type: ignore[no-untyped-call]
    try:
        second.replicaof(HOST, stack.redis.port)
        _wait(lambda: _replication(second).get("master_link_status") == "up", "second server synced")
        _wait(lambda: second.dbsize() == first.dbsize(), "same data")
        second.replicaof("NO", "ONE")
        first.replicaof(HOST, other.port)
        _wait(lambda: _replication(first).get("master_link_status") == "up", "first server is a replica")
    finally:
        first.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
    assert _replication(first)["role"] == "slave"

    def undo() -> None:
        first.replicaof("NO", "ONE")
        first.close()
        second.close()

    return undo


@contextlib.asynccontextmanager
async def other_redis(line: ServerLine) -> AsyncIterator[RedisServer]:
    """A second redis-server (for the replica switch), started before the fault so it is quick."""
    server = RedisServer(binary=line.binary)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("how", ["min-replicas", "replica"])
async def test_redis_refusing_writes_applies_back_pressure_and_recovers(how: str, redis_line: ServerLine) -> None:
    refuse = refuse_with_min_replicas if how == "min-replicas" else refuse_as_replica
    async with running_stack(seed=202, line=redis_line) as stack, other_redis(redis_line) as other:
        async with publishing(stack) as (publisher, watch):
            undo = await asyncio.to_thread(refuse, stack, other)
            refused_at = time.monotonic()
            try:
                held = read_checkpoint(stack.redis.url, TRADER)  # reads still work
                port = stack.daemon.port
                await wait_until(lambda: asyncio.to_thread(lambda: http_get(port, "/readyz")[0] == 503), 20, "503")

                def redis_down() -> bool:
                    return metric_value(http_get(port, "/metrics")[1], "tradecache_redis_up") == 0

                await wait_until(lambda: asyncio.to_thread(redis_down), 20, "tradecache_redis_up 0")
                await asyncio.sleep(max(0.0, refused_at + REFUSAL - time.monotonic()))
                assert stack.daemon.alive(), stack.daemon.log()[-3000:]
                # Nothing was written meanwhile.
                assert read_checkpoint(stack.redis.url, TRADER) == held
                restoring = time.monotonic()
            finally:
                await asyncio.to_thread(undo)
            during = watch.between(refused_at, restoring)
            assert len(during) >= 5
            # Nothing acked beyond what was written; pending grows while Redis refuses.
            assert max(s.ack_floor for s in during) <= held
            assert during[-1].unacked > during[0].unacked + 100
            assert 503 in watch.statuses(refused_at, restoring)
        log = stack.daemon.log()
        assert "redis unavailable" in log
        # 7.x: NOREPLICAS ... / ReadOnlyError; 6.2: "Error running script ... -NOREPLICAS / -READONLY ...".
        assert ("NOREPLICAS" if how == "min-replicas" else "read only replica") in log
        # A commit paused by CLIENT PAUSE WRITE times out, then meets READONLY: never written.
        await assert_everything_written(stack, publisher, retried_writes=False)
