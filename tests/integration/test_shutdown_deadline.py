"""`shutdown.drain_timeout` bounds the whole shutdown, not each of its steps.

A hung NATS server (SIGSTOPped: its sockets stay open, nothing answers) makes every step that
talks to it wait: stopping the load service, flushing and closing two connections. Each used to
get the full drain_timeout (7 s measured with 2 s); now they share one deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.backends import Announce
from tests.integration.daemon_harness import daemon_config, wait_for
from tests.servers import NatsServer
from tradecache.daemon.app import Daemon

pytestmark = pytest.mark.integration

DRAIN_TIMEOUT = 2.0
# What the steps after the deadline may still take (closing sockets, the health server).
SLACK = 1.0


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.resume()
        server.close()


async def test_a_hung_nats_cannot_stretch_shutdown_beyond_drain_timeout(
    redis_server: Any, own_nats: NatsServer, announce: Announce
) -> None:
    config = daemon_config(redis_server.url, own_nats.url, "DRAIN-001", shutdown={"drain_timeout": DRAIN_TIMEOUT})
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.is_ready() or task.done(), timeout=15)
        assert not task.done(), "the daemon exited before it was ready"
        own_nats.pause()
        started = time.monotonic()
        daemon.request_stop()
        exit_code = await asyncio.wait_for(task, timeout=4 * DRAIN_TIMEOUT + 10)
        elapsed = time.monotonic() - started
    finally:
        own_nats.resume()
        if not task.done():
            task.cancel()
    announce(f"shutdown with a hung NATS: {elapsed:.2f} s (drain_timeout {DRAIN_TIMEOUT} s)")
    assert exit_code == 0
    assert elapsed <= DRAIN_TIMEOUT + SLACK, f"shutdown took {elapsed:.2f} s with drain_timeout {DRAIN_TIMEOUT} s"
    # The deadline was really reached: a hung NATS does hold the steps up (else this test proves nothing).
    assert elapsed >= DRAIN_TIMEOUT * 0.9, f"shutdown took only {elapsed:.2f} s: nothing waited on NATS"
    assert daemon.drain_left() == 0.0
