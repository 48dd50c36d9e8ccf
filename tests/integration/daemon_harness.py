"""Running the daemon in-process against the test servers, and publishing scenarios to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import redis

from tests.vectors.scenarios import SCENARIO_KINDS, Scenario
from tradecache.cache import CacheDatabaseConfig, RedisCacheDatabase
from tradecache.cache.keys import Keys
from tradecache.config import Config, parse_config
from tradecache.daemon.app import Daemon
from tradecache.model.identifiers import TraderId
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects


async def reconnecting_client(url: str) -> tuple[Any, asyncio.Event]:
    """A NATS client that reconnects at once and without end, and an event set when it has."""
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    client = await nats.connect(url, reconnected_cb=on_reconnect, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    return client, reconnected


def daemon_config(redis_url: str, nats_url: str, trader_id: str, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "trader_id": trader_id,
        "redis": {"url": redis_url},
        "nats": {"servers": [nats_url]},
        "http": {"listen": "127.0.0.1:0"},
        "ingest": {"fetch_expires": 0.1},
        "metrics": {"key_count_interval": 0.2},
        "logging": {"level": "WARNING"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, {})


def database(redis_url: str, trader_id: str) -> RedisCacheDatabase:
    return RedisCacheDatabase(
        TraderId(trader_id), logging.getLogger("tests"), MsgPackSerializer(), CacheDatabaseConfig.from_url(redis_url)
    )


@contextlib.asynccontextmanager
async def running_daemon(config: Config) -> AsyncIterator[Daemon]:
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.is_ready() or task.done(), timeout=15)
        if task.done():
            raise RuntimeError(f"daemon exited early with {task.result()}")
        yield daemon
    finally:
        daemon.request_stop()
        exit_code = await asyncio.wait_for(task, timeout=20)
        assert exit_code == 0


async def wait_for(condition: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


async def publish_scenario(nats_url: str, scenario: Scenario, prefix: str = "tradecache", msg_id: bool = False) -> int:
    """Publish every message of a scenario on its subject; returns the last stream sequence."""
    subjects = Subjects(prefix, scenario.trader_id)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = 0
        for kind, _type, payload in scenario.messages:
            headers = {"Nats-Msg-Id": str(hash(payload))} if msg_id else None
            ack = await js.publish(subjects.inbound_for(SCENARIO_KINDS[kind]), payload, headers=headers)
            last = ack.seq
        return last
    finally:
        await nc.close()


async def wait_for_checkpoint(redis_url: str, trader_id: str, sequence: int, timeout: float = 15.0) -> None:
    client = redis.Redis.from_url(redis_url)
    key = Keys(trader_id).checkpoint()

    def reached() -> bool:
        raw = client.get(key)
        return raw is not None and int(raw) >= sequence

    try:
        await wait_for(reached, timeout=timeout)
    finally:
        client.close()
