"""The bridge's parts in this process (NautilusTrader 1.221 of the project's venv), with real NATS.

The outbox through a NATS outage (kept in order up to its bound, the rest dropped loudly), the
endpoint tap on NautilusTrader's own MessageBus, the read-only cache database's coverage of every
write, and `import tradecache` without NautilusTrader.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nautilus_trader.cache.facade import CacheDatabaseFacade
from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.model.identifiers import TraderId

from tests.nautilus.versions import REPO
from tests.servers import NatsServer
from tradecache.bus import NatsOptions
from tradecache.nautilus import ReadOnlyCacheDatabase, TradecacheBridgeConfig
from tradecache.nautilus.database import WRITE_METHODS
from tradecache.nautilus.outbox import Envelope, Outbox
from tradecache.nautilus.taps import EndpointTap

pytestmark = pytest.mark.integration

SUBJECT = "tradecache.in.OUTBOX-1.order"


@pytest.fixture
def private_nats() -> Iterator[NatsServer]:
    """A NATS server of this test alone: it is stopped and started again."""
    server = NatsServer()
    server.start()
    yield server
    server.close()


async def make_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name="TRADECACHE", subjects=["tradecache.in.>"])
    finally:
        await nc.close()


async def stream_payloads(url: str) -> list[bytes]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        subscription = await js.subscribe(SUBJECT, ordered_consumer=True)
        found = []
        try:
            while True:
                try:
                    found.append((await subscription.next_msg(timeout=1.0)).data)
                except nats.errors.TimeoutError:
                    return found
        finally:
            await subscription.unsubscribe()
    finally:
        await nc.close()


def envelope(number: int) -> Envelope:
    return Envelope(SUBJECT, f"m{number:03d}".encode(), f"id-{number}", "order")


def outbox(url: str, capacity: int) -> Outbox:
    options = NatsOptions(servers=[url], name="test-outbox", connect_timeout=1.0, max_reconnect_wait=0.2)
    return Outbox(options, capacity=capacity, publish_timeout=0.5, log=logging.getLogger("tests.outbox"))


async def test_a_nats_outage_keeps_what_fits_in_order_and_drops_the_rest_loudly(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await make_stream(private_nats.url)
    box = outbox(private_nats.url, capacity=20)
    box.start()
    for number in range(5):
        assert box.put(envelope(number))
    assert await asyncio.to_thread(box.flush, 10.0)

    private_nats.stop()  # an outage while trading: 30 more messages, room for 20
    caplog.set_level(logging.WARNING, logger="tests.outbox")
    accepted = [box.put(envelope(number)) for number in range(5, 35)]
    assert accepted == [True] * 20 + [False] * 10
    assert not await asyncio.to_thread(box.flush, 1.0)  # nothing can be acknowledged now
    stats = box.stats()
    assert (stats.depth, stats.dropped, stats.dropped_by_kind) == (20, 10, {"order": 10})
    assert any("dropped 1 messages" in r.message and "id-25" in r.message for r in caplog.records)
    assert any("waiting for NATS" in r.message for r in caplog.records)  # the high-water warning

    private_nats.start()
    assert await asyncio.to_thread(box.flush, 30.0)
    assert await asyncio.to_thread(box.close, 5.0)
    assert await stream_payloads(private_nats.url) == [envelope(n).payload for n in range(25)]
    final = box.stats()
    assert (final.published, final.dropped, final.depth) == (25, 10, 0)
    assert final.failed_publishes >= 1


async def test_closing_while_nats_is_away_says_what_was_never_published(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await make_stream(private_nats.url)
    box = outbox(private_nats.url, capacity=10)
    box.start()
    private_nats.stop()
    for number in range(3):
        box.put(envelope(number))
    caplog.set_level(logging.ERROR, logger="tests.outbox")
    assert not await asyncio.to_thread(box.close, 1.0)
    assert any("3 messages never published" in r.message for r in caplog.records)


async def test_a_retried_publish_is_not_stored_twice(private_nats: NatsServer) -> None:
    await make_stream(private_nats.url)
    box = outbox(private_nats.url, capacity=10)
    box.start()
    box.put(envelope(1))
    box.put(envelope(1))  # the same Nats-Msg-Id again, as after a lost ack
    assert await asyncio.to_thread(box.close, 10.0)
    assert await stream_payloads(private_nats.url) == [envelope(1).payload]
    assert box.stats().duplicates == 1


def test_an_endpoint_tap_sees_each_message_first_and_gives_the_handler_back() -> None:
    bus = MessageBus(TraderId("TAP-001"), TestClock())
    received: list[Any] = []
    seen: list[Any] = []

    def handler(message: Any) -> None:
        received.append(message)

    bus.register("RiskEngine.execute", handler)
    tap = EndpointTap(bus, "RiskEngine.execute", seen.append, logging.getLogger("tests"))
    assert tap.install()
    bus.send("RiskEngine.execute", "command-1")
    assert (seen, received) == (["command-1"], ["command-1"])
    tap.remove()
    bus.send("RiskEngine.execute", "command-2")
    assert (seen, received) == (["command-1"], ["command-1", "command-2"])
    bus.deregister("RiskEngine.execute", handler)  # the original is registered again, as it was
    assert not EndpointTap(bus, "Nowhere.execute", seen.append, logging.getLogger("tests")).install()


def test_an_observer_that_fails_never_stops_the_nodes_command(caplog: pytest.LogCaptureFixture) -> None:
    bus = MessageBus(TraderId("TAP-002"), TestClock())
    received: list[Any] = []
    bus.register("RiskEngine.execute", received.append)

    def broken(message: Any) -> None:
        raise RuntimeError("boom")

    EndpointTap(bus, "RiskEngine.execute", broken, logging.getLogger("tests.tap")).install()
    bus.send("RiskEngine.execute", "command")
    assert received == ["command"]
    assert any("could not forward" in r.message for r in caplog.records)


def test_the_read_only_cache_database_overrides_every_write_of_the_facade() -> None:
    writes = {
        name
        for name in dir(CacheDatabaseFacade)
        if name.startswith(("add", "update_", "delete_", "index_", "snapshot_", "heartbeat"))
    }
    assert writes == {*WRITE_METHODS, "update_strategy"}
    for name in {*WRITE_METHODS, "update_strategy", "flush"}:
        assert name in ReadOnlyCacheDatabase.__dict__, name


def test_the_bridge_config_checks_its_values_and_never_shows_secrets() -> None:
    config = TradecacheBridgeConfig(nats_url="nats://sidecar:4222", password="hunter2", token="t0k3n")
    assert "hunter2" not in repr(config) and "t0k3n" not in repr(config)
    assert config.subject_prefix == "tradecache"
    with pytest.raises(ValueError, match="queue_capacity"):
        TradecacheBridgeConfig(nats_url="nats://sidecar:4222", queue_capacity=0)
    with pytest.raises(ValueError, match="nats_url"):
        TradecacheBridgeConfig(nats_url=" ")


def test_importing_tradecache_never_needs_nautilus_trader() -> None:
    code = (
        "import sys; sys.modules['nautilus_trader'] = None\n"
        "import tradecache, tradecache.cli, tradecache.cache, tradecache.client, tradecache.daemon.app\n"
        "try:\n"
        "    import tradecache.nautilus\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: tradecache.nautilus needs NautilusTrader" in done.stdout
    assert "pip install 'tradecache[nautilus]'" in done.stdout
