"""`tradecache rebuild`: a trader's Redis state lost, then re-created from the JetStream stream."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import redis
import yaml

from tests.integration.daemon_harness import daemon_config, database, running_daemon, wait_for_checkpoint
from tests.integration.test_daemon_faults import assert_redis_equals_clean_run, demo_stream, publish
from tradecache.cache.keys import Keys
from tradecache.model.messages import Kind

pytestmark = pytest.mark.integration

TRADER = "REBUILD-001"


async def fresh_stream(nats_url: str, stream: str = "TRADECACHE") -> None:
    """The shared stream deleted (the daemon creates it again): a full rebuild needs a stream that
    starts at sequence 1, and another test may have removed the first messages of the session's
    stream (`tradecache dev --use-running` purges its trader's subjects when it cleans up)."""
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def dump(redis_url: str, trader_id: str) -> dict[str, Any]:
    """Every key of the trader with its whole value (lists, strings, hashes, sorted sets' members)."""
    client = redis.Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=Keys(trader_id).scan_pattern(), count=1000):
        kind = client.type(key)
        if kind == b"list":
            out[key.decode()] = client.lrange(key, 0, -1)
        elif kind == b"hash":
            out[key.decode()] = client.hgetall(key)
        elif kind == b"zset":  # members only: retention's closed sets are scored by the time of writing
            out[key.decode()] = sorted(client.zrange(key, 0, -1))
        else:
            out[key.decode()] = client.get(key)
    client.close()
    return out


def run_rebuild(config_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradecache", "rebuild", "--config", str(config_path), *flags],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# The default batch, and small ones: many pulls, each batch checked ahead as it arrives while the
# previous one's commit is in flight.
@pytest.mark.parametrize(("trader", "batch_size"), [(TRADER, None), ("REBUILD-002", 7)])
async def test_rebuild_recreates_exactly_what_the_daemon_had_written(
    redis_server: Any, nats_server: Any, tmp_path: Path, trader: str, batch_size: int | None
) -> None:
    database(redis_server.url, trader).flush()
    await fresh_stream(nats_server.url)
    messages = demo_stream(trader, 15)
    bad = [(Kind.ORDER, b"\xc1 not msgpack")]  # dead-lettered when consumed; counted by the rebuild
    config = daemon_config(redis_server.url, nats_server.url, trader)
    config_path = tmp_path / "tradecache.yaml"
    rebuild_config = {"trader_id": trader, "redis": {"url": redis_server.url}, "nats": {"servers": [nats_server.url]}}
    if batch_size is not None:
        rebuild_config["ingest"] = {"batch_size": batch_size}
    config_path.write_text(yaml.safe_dump(rebuild_config))
    async with running_daemon(config):
        last = await publish(nats_server.url, trader, messages[:100] + bad + messages[100:])
        await wait_for_checkpoint(redis_server.url, trader, last)
        running = await asyncio.to_thread(run_rebuild, config_path, "--flush")
        assert running.returncode == 1 and "is running; stop it first" in running.stderr
    before = dump(redis_server.url, trader)
    assert len(before) > 50 and int(before[Keys(trader).checkpoint()]) == last

    database(redis_server.url, trader).flush()  # Redis lost this trader's data
    assert dump(redis_server.url, trader) == {}
    rebuilt = await asyncio.to_thread(run_rebuild, config_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{len(messages) + 1} messages" in rebuilt.stdout and "malformed 1" in rebuilt.stdout
    assert dump(redis_server.url, trader) == before

    again = await asyncio.to_thread(run_rebuild, config_path)
    assert again.returncode == 1 and "already holds state" in again.stderr and "--flush" in again.stderr

    # The daemon resumes after the rebuilt checkpoint: new messages land, nothing twice.
    more = demo_stream(trader, 2)
    async with running_daemon(config):
        last = await publish(nats_server.url, trader, more)
        await wait_for_checkpoint(redis_server.url, trader, last)
    assert_redis_equals_clean_run(redis_server.url, trader, messages + more)
    database(redis_server.url, trader).flush()
