"""`tradecache dev`: everything on one machine, for a first look.

Uses Redis and NATS (with JetStream) on their default local ports when they answer, and starts
its own redis-server / nats-server otherwise (binaries from PATH or the pip packages of the
test extra, data under `--data-dir`). Then runs the daemon, publishes a demo session, waits
until Redis holds it, and prints where to look. It keeps running until Ctrl-C (SIGINT) or
SIGTERM unless `--exit-after-feed` is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import nats
import redis.asyncio

from tradecache.client import CacheClient
from tradecache.config import parse_config
from tradecache.daemon.app import Daemon
from tradecache.daemon.demo import build_demo_feed
from tradecache.daemon.devstack import LocalServer, NatsServer, RedisServer, free_port, port_is_free, reachable
from tradecache.daemon.subjects import Subjects
from tradecache.logs import configure_logging
from tradecache.serialization.msgpack import MsgPackSerializer

TRADER_ID = "DEV-001"
log = logging.getLogger("tradecache.dev")


async def _jetstream_answers(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def _say(text: str) -> None:
    print(text, flush=True)


async def _servers(data_dir: Path, started: list[LocalServer], own: bool) -> tuple[str, str]:
    if not own and reachable("127.0.0.1", 6379):
        redis_url = "redis://127.0.0.1:6379/0"
        _say(f"  redis: using the Redis already on {redis_url}")
    else:
        port = 6379 if port_is_free(6379) and not own else free_port()
        server = RedisServer(port=port, data_dir=data_dir / "redis")
        server.start()
        started.append(server)
        redis_url = server.url
        _say(f"  redis: started {server.binary} on {redis_url} (data in {server.data_dir})")
    if not own and reachable("127.0.0.1", 4222) and await _jetstream_answers("nats://127.0.0.1:4222"):
        nats_url = "nats://127.0.0.1:4222"
        _say(f"  nats:  using the NATS (JetStream) already on {nats_url}")
    else:
        nats_server = NatsServer(
            port=4222 if port_is_free(4222) and not own else free_port(), data_dir=data_dir / "nats"
        )
        nats_server.start()
        started.append(nats_server)
        nats_url = nats_server.url
        _say(f"  nats:  started {nats_server.binary} -js on {nats_url} (data in {nats_server.data_dir})")
    return redis_url, nats_url


async def _publish_demo(nats_url: str) -> tuple[Any, int]:
    feed = build_demo_feed(TRADER_ID)
    subjects = Subjects("tradecache", TRADER_ID)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = 0
        for (kind, message), (_kind, payload) in zip(feed.messages, feed.payloads(MsgPackSerializer()), strict=True):
            msg_id = getattr(message, "event_id", None) or getattr(message, "command_id", None)
            headers = {"Nats-Msg-Id": msg_id} if isinstance(msg_id, str) else None
            ack = await js.publish(subjects.inbound_for(kind), payload, headers=headers)
            last = ack.seq
    finally:
        await nc.close()
    return feed, last


async def _wait_stored(redis_url: str, daemon: Daemon, sequence: int, timeout: float = 30.0) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for _ in range(int(timeout / 0.05)):
            raw = await client.get(daemon.keys.checkpoint())
            if raw is not None and int(raw) >= sequence:
                return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise TimeoutError("the demo feed was not stored in time")


async def _load_back(nats_url: str, client_order_id: str) -> str:
    """Ask the load service for the first demo order, as `tradecache load order` would."""
    nc = await nats.connect(nats_url)
    try:
        order = await CacheClient(nc, TRADER_ID).load_order(client_order_id)
    finally:
        await nc.close()
    if order is None:
        raise RuntimeError(f"the load service did not find demo order {client_order_id}")
    return f"order {client_order_id} is {order.status.name} after {order.event_count} events"


async def _dev(data_dir: Path, exit_after_feed: bool, http_port: int, own: bool) -> int:
    started: list[LocalServer] = []
    _say("tradecache dev")
    try:
        redis_url, nats_url = await _servers(data_dir, started, own)
        if http_port and not port_is_free(http_port):
            http_port = 0
        config = parse_config(
            {
                "trader_id": TRADER_ID,
                "redis": {"url": redis_url},
                "nats": {"servers": [nats_url]},
                "http": {"listen": f"127.0.0.1:{http_port}"},
                "logging": {"level": "WARNING", "format": "text"},
            },
            {},
        )
        configure_logging(config.logging.level, config.logging.format)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        for _ in range(300):
            if daemon.is_ready() or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            return task.result() or 1
        feed, last = await _publish_demo(nats_url)
        await _wait_stored(redis_url, daemon, last)
        port = daemon.health.port
        checked = await _load_back(nats_url, feed.order_ids[0])
        _say(f"  daemon: consuming tradecache.in.{TRADER_ID}.> into {redis_url}")
        _say(f"\nDemo session stored: {len(feed.messages)} messages, orders {', '.join(feed.order_ids)}.")
        _say(f"  metrics:   curl -s http://127.0.0.1:{port}/metrics | grep ^tradecache_")
        _say(f"  health:    curl -s http://127.0.0.1:{port}/healthz http://127.0.0.1:{port}/readyz")
        _say(f"  loaded:    {checked} (over NATS request-reply, as the commands below do)")
        _say(f"  try:       tradecache load order {feed.order_ids[0]} --nats {nats_url} --trader {TRADER_ID}")
        _say(f"             tradecache load position {feed.position_id} --nats {nats_url} --trader {TRADER_ID}")
        _say(f"  redis:     redis-cli -u {redis_url} lrange 'trader-{TRADER_ID}:orders:{feed.order_ids[0]}' 0 -1")
        if exit_after_feed:
            daemon.request_stop()
        else:
            _say("\nRunning; Ctrl-C stops the daemon and the servers it started.")
        code: int = await task
        return code
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()


def run_dev(
    data_dir: str = ".tradecache-dev", exit_after_feed: bool = False, http_port: int = 9464, own_servers: bool = False
) -> int:
    """Run the dev stack; `own_servers` always starts private servers on free ports."""
    return asyncio.run(_dev(Path(data_dir), exit_after_feed, http_port, own_servers))


__all__ = ["run_dev"]
