"""The daemon on its bad days: killed between commit and ack, SIGTERM mid-stream, Redis and NATS
restarted under it. Every test ends by comparing Redis with what a clean run stores.

What a stopped or restarted server does to its clients differs between versions, so the tests run
once per Redis line (`redis_line_server`), the NATS restart once per NATS line (tests/lines.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import urllib.error
import urllib.request
import uuid
from typing import Any

import nats
import pytest
import redis

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for, wait_for_checkpoint
from tests.integration.daemon_process import DaemonProcess
from tests.vectors.scenarios import MemoryStore
from tradecache.bus import ensure_stream
from tradecache.cache.keys import Keys
from tradecache.dev.demo import build_demo_feed
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.model.messages import Kind
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration


def fresh_trader(name: str) -> str:
    """A trader id no earlier test used: each test runs once per server line on the session's NATS."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def demo_stream(trader_id: str, sessions: int) -> list[tuple[Kind, bytes]]:
    serializer = MsgPackSerializer()
    messages: list[tuple[Kind, bytes]] = []
    for _ in range(sessions):
        messages.extend(build_demo_feed(trader_id).payloads(serializer))
    return messages


def clean_run(trader_id: str, messages: list[tuple[Kind, bytes]]) -> MemoryStore:
    """What Redis holds after a clean run: the pure core's writes."""
    serializer = MsgPackSerializer()
    ledger, store = Ledger(TraderId(trader_id)), MemoryStore(serializer)
    for _kind, payload in messages:
        for write in ledger.apply(serializer.deserialize(payload)).writes:
            store.apply(write)
    return store


def assert_redis_equals_clean_run(redis_url: str, trader_id: str, messages: list[tuple[Kind, bytes]]) -> None:
    expected = clean_run(trader_id, messages)
    client = redis.Redis.from_url(redis_url)
    keys = Keys(trader_id)
    for (collection, key), payloads in expected.lists.items():
        assert client.lrange(keys.entity(collection, key), 0, -1) == payloads, f"{collection}:{key}"
    for collection in {c for c, _ in expected.lists}:
        stored = {m.decode() for m in client.zrange(keys.index(collection), 0, -1)}
        assert stored == {k for c, k in expected.lists if c == collection}


async def publish(nats_url: str, trader_id: str, messages: list[tuple[Kind, bytes]]) -> int:
    subjects = Subjects("tradecache", trader_id)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # The stream may not exist yet when messages are published before any daemon ran.
        await ensure_stream(js, "TRADECACHE", [subjects.inbound_root], True, logging.getLogger("tests"))
        last = 0
        for kind, payload in messages:
            last = (await js.publish(subjects.inbound_for(kind), payload)).seq
        return last
    finally:
        await nc.close()


async def consumer_ack_floor(nats_url: str, consumer: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info("TRADECACHE", consumer)
        return int(info.ack_floor.stream_seq)
    finally:
        await nc.close()


def checkpoint(redis_url: str, trader_id: str) -> int:
    raw = redis.Redis.from_url(redis_url).get(Keys(trader_id).checkpoint())
    return int(raw) if raw else 0


def process_config(redis_server: Any, nats_server: Any, trader_id: str, **ingest: Any) -> dict[str, Any]:
    return {
        "trader_id": trader_id,
        "redis": {"url": redis_server.url},
        "nats": {"servers": [nats_server.url]},
        # A short lease: a daemon started after a SIGKILL takes over within 2 s (default 10 s).
        "ingest": {"fetch_expires": 0.1, "lease_ttl": 2.0, **ingest},
        "logging": {"level": "INFO", "format": "json"},
    }


async def test_killed_between_commit_and_ack_loses_and_duplicates_nothing(
    redis_line_server: Any, nats_server: Any
) -> None:
    trader = fresh_trader("CRASH")
    database(redis_line_server.url, trader).flush()
    messages = demo_stream(trader, 6)
    last = await publish(nats_server.url, trader, messages)
    config = process_config(redis_line_server, nats_server, trader, batch_size=16)
    first = DaemonProcess(config, pause_after=2)
    first.start()
    try:
        first.wait_for_log("paused after commit")
        committed = checkpoint(redis_line_server.url, trader)
        assert committed > 0
        first.kill()  # SIGKILL with the second batch committed and not acked
    finally:
        first.kill()
    assert await consumer_ack_floor(nats_server.url, f"tradecache-{trader}") < committed
    second = DaemonProcess(config)
    second.start()
    try:
        await wait_for_checkpoint(redis_line_server.url, trader, last, timeout=30)
    finally:
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    assert_redis_equals_clean_run(redis_line_server.url, trader, messages)


async def test_sigterm_mid_stream_exits_0_with_the_batch_written_and_acked_or_neither(
    redis_line_server: Any, nats_server: Any
) -> None:
    trader = fresh_trader("SIGTERM")
    database(redis_line_server.url, trader).flush()
    messages = demo_stream(trader, 60)
    last = await publish(nats_server.url, trader, messages)
    config = process_config(redis_line_server, nats_server, trader, batch_size=32)
    daemon = DaemonProcess(config)
    daemon.start()
    await wait_for(lambda: checkpoint(redis_line_server.url, trader) > 0, timeout=20)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    stopped_at = checkpoint(redis_line_server.url, trader)
    assert "stopped" in daemon.log()
    # Whatever was committed was acked, and nothing was acked that was not committed.
    assert await consumer_ack_floor(nats_server.url, f"tradecache-{trader}") == stopped_at
    rest = DaemonProcess(config)
    rest.start()
    try:
        await wait_for_checkpoint(redis_line_server.url, trader, last, timeout=30)
    finally:
        rest.signal(signal.SIGTERM)
        assert rest.wait() == 0
    assert_redis_equals_clean_run(redis_line_server.url, trader, messages)


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_redis_restarted_mid_stream_loses_nothing_and_readiness_drops_meanwhile(
    redis_line_server: Any, nats_server: Any
) -> None:
    trader = fresh_trader("REDISFAULT")
    database(redis_line_server.url, trader).flush()
    messages = demo_stream(trader, 4)
    half = len(messages) // 2
    config = daemon_config(redis_line_server.url, nats_server.url, trader)
    async with running_daemon(config) as daemon:
        port = daemon.health.port
        first = await publish(nats_server.url, trader, messages[:half])
        await wait_for_checkpoint(redis_line_server.url, trader, first)
        assert await asyncio.to_thread(http_status, port, "/readyz") == 200
        redis_line_server.stop()
        try:
            last = await publish(nats_server.url, trader, messages[half:])
            await wait_for(lambda: not daemon.is_ready(), timeout=15)
            assert await asyncio.to_thread(http_status, port, "/readyz") == 503
            assert await asyncio.to_thread(http_status, port, "/healthz") == 200
            assert daemon.metrics.registry.get_sample_value("tradecache_redis_up") == 0
        finally:
            redis_line_server.start()
        await wait_for_checkpoint(redis_line_server.url, trader, last, timeout=30)
        await wait_for(daemon.is_ready, timeout=10)
        assert daemon.metrics.registry.get_sample_value("tradecache_redis_up") == 1
    assert_redis_equals_clean_run(redis_line_server.url, trader, messages)


async def test_nats_restarted_the_daemon_resumes(redis_server: Any, nats_line_server: Any) -> None:
    trader = fresh_trader("NATSFAULT")
    database(redis_server.url, trader).flush()
    messages = demo_stream(trader, 4)
    half = len(messages) // 2
    config = daemon_config(redis_server.url, nats_line_server.url, trader)
    async with running_daemon(config) as daemon:
        first = await publish(nats_line_server.url, trader, messages[:half])
        await wait_for_checkpoint(redis_server.url, trader, first)
        nats_line_server.stop()
        await wait_for(lambda: not daemon.is_ready(), timeout=10)
        assert daemon.metrics.registry.get_sample_value("tradecache_nats_connected") == 0
        nats_line_server.start()
        await wait_for(daemon.is_ready, timeout=20)
        last = await publish(nats_line_server.url, trader, messages[half:])
        await wait_for_checkpoint(redis_server.url, trader, last, timeout=30)
    assert_redis_equals_clean_run(redis_server.url, trader, messages)
