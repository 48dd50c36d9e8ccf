"""The bridge's parts in this process (NautilusTrader 1.221 of the project's venv), with real NATS.

The outbox through a NATS outage (kept in order up to its bound, the rest dropped loudly), the
endpoint tap on NautilusTrader's own MessageBus, the read-only cache database's coverage of every
write, and `import tradecache` without NautilusTrader.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nautilus_trader.cache.facade import CacheDatabaseFacade
from nautilus_trader.common.component import MessageBus, TestClock
from nautilus_trader.model.identifiers import TraderId

from tests.nautilus.versions import REPO
from tests.servers import NatsServer
from tradecache.bus import NatsOptions
from tradecache.ingest.acked_publish import AckedPublisher
from tradecache.nautilus import ReadOnlyCacheDatabase, TradecacheBridgeConfig
from tradecache.nautilus.database import WRITE_METHODS
from tradecache.nautilus.outbox import OVERSIZE, PUBLISH_REFUSED, Envelope, Outbox, refusal_reason
from tradecache.nautilus.taps import EndpointTap

pytestmark = pytest.mark.integration

SUBJECT = "tradecache.in.OUTBOX-1.order"
DEAD_SUBJECT = "tradecache.dead.OUTBOX-1"


@pytest.fixture
def private_nats() -> Iterator[NatsServer]:
    """A NATS server of this test alone: it is stopped and started again."""
    server = NatsServer()
    server.start()
    yield server
    server.close()


async def make_stream(url: str, *, max_msg_size: int = -1, dead_letters: bool = False) -> int:
    """The inbound stream (and the dead-letter one); the server's max_payload."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="TRADECACHE", subjects=["tradecache.in.>"], max_msg_size=max_msg_size)
        if dead_letters:
            await js.add_stream(name="TRADECACHE_DEAD", subjects=["tradecache.dead.>"])
        return int(nc.max_payload)
    finally:
        await nc.close()


async def read_all(url: str, subject: str) -> list[Any]:
    """Every message on `subject` (an ordered consumer reads them all)."""
    nc = await nats.connect(url)
    try:
        subscription = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        found = []
        try:
            while True:
                try:
                    found.append(await subscription.next_msg(timeout=1.0))
                except nats.errors.TimeoutError:
                    return found
        finally:
            await subscription.unsubscribe()
    finally:
        await nc.close()


async def stream_payloads(url: str) -> list[bytes]:
    return [msg.data for msg in await read_all(url, SUBJECT)]


def envelope(number: int) -> Envelope:
    return Envelope(SUBJECT, f"m{number:03d}".encode(), f"id-{number}", "order")


def outbox(url: str, capacity: int) -> Outbox:
    options = NatsOptions(servers=[url], name="test-outbox", connect_timeout=1.0, max_reconnect_wait=0.2)
    return Outbox(
        options,
        capacity=capacity,
        publish_timeout=0.5,
        dead_subject=DEAD_SUBJECT,
        log=logging.getLogger("tests.outbox"),
    )


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


async def test_a_message_nats_refuses_is_dead_lettered_and_the_queue_goes_on(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The inbound stream takes messages up to 2,000 bytes, the server up to its max_payload (1 MiB):
    # one envelope too large for each. Retried, either would hold everything behind it for good.
    max_payload = await make_stream(private_nats.url, max_msg_size=2000, dead_letters=True)
    over_stream = Envelope(SUBJECT, bytes(range(256)) * 20, "id-stream", "order")
    over_server = Envelope(SUBJECT, b"x" * (max_payload + 1), "id-server", "instrument")
    caplog.set_level(logging.ERROR, logger="tests.outbox")
    box = outbox(private_nats.url, capacity=10)
    box.start()
    for one in (envelope(0), over_stream, envelope(1), over_server, envelope(2)):
        assert box.put(one)
    assert await asyncio.to_thread(box.flush, 15.0)
    assert await asyncio.to_thread(box.close, 5.0)

    assert await stream_payloads(private_nats.url) == [envelope(n).payload for n in range(3)]
    stats = box.stats()
    assert (stats.published, stats.refused, stats.dead_letters, stats.depth) == (3, 2, 2, 0)
    assert stats.refused_by_kind == {"order": 1, "instrument": 1}
    for msg_id in ("id-stream", "id-server"):
        assert any(msg_id in r.message and "not stored" in r.message for r in caplog.records)

    first, second = await read_all(private_nats.url, DEAD_SUBJECT)
    assert first.headers["Tradecache-Reason"] == second.headers["Tradecache-Reason"] == "oversize"
    assert first.headers["Tradecache-Original-Msg-Id"] == "id-stream"
    assert (first.headers["Tradecache-Source"], first.headers["Tradecache-Subject"]) == ("bridge", SUBJECT)
    assert "err_code 10054" in first.headers["Tradecache-Error"]
    assert first.data == over_stream.payload  # the dead-letter stream takes it whole
    assert second.headers["Tradecache-Original-Msg-Id"] == "id-server"
    assert "MaxPayloadError" in second.headers["Tradecache-Error"]
    assert second.headers["Tradecache-Original-Size"] == str(max_payload + 1)
    assert second.headers["Tradecache-Digest"] == "sha256=" + hashlib.sha256(over_server.payload).hexdigest()
    assert 0 < len(second.data) < max_payload and second.data == over_server.payload[: len(second.data)]


async def test_a_refused_message_whose_letter_has_no_stream_is_given_up_and_the_queue_goes_on(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # No dead-letter stream: the letter's publish finds no stream (what NATS says while one is away).
    await make_stream(private_nats.url, max_msg_size=2000)
    options = NatsOptions(servers=[private_nats.url], name="test-outbox", connect_timeout=1.0, max_reconnect_wait=0.2)
    log = logging.getLogger("tests.outbox")
    box = Outbox(options, capacity=10, publish_timeout=0.5, dead_subject=DEAD_SUBJECT, log=log,
                 dead_letter_patience=1.0)  # fmt: skip
    caplog.set_level(logging.ERROR, logger="tests.outbox")
    box.start()
    for one in (envelope(0), Envelope(SUBJECT, b"s" * 5000, "id-big", "order"), envelope(1)):
        assert box.put(one)
    assert await asyncio.to_thread(box.flush, 15.0)
    assert await asyncio.to_thread(box.close, 5.0)
    assert await stream_payloads(private_nats.url) == [envelope(0).payload, envelope(1).payload]
    stats = box.stats()
    assert (stats.published, stats.refused, stats.dead_letters) == (2, 1, 0)
    assert any("id-big" in r.message and "given up" in r.message for r in caplog.records)


async def test_a_letter_that_fails_unforeseen_is_given_up_and_the_publisher_goes_on(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # An empty dead-letter subject: nats-py raises BadSubjectError, which classify_nats calls a bug.
    await make_stream(private_nats.url, max_msg_size=2000)
    options = NatsOptions(servers=[private_nats.url], name="test-outbox", connect_timeout=1.0, max_reconnect_wait=0.2)
    box = Outbox(options, capacity=10, publish_timeout=0.5, dead_subject="", log=logging.getLogger("tests.outbox"))
    caplog.set_level(logging.ERROR, logger="tests.outbox")
    box.start()
    for one in (envelope(0), Envelope(SUBJECT, b"s" * 5000, "id-big", "order"), envelope(1)):
        assert box.put(one)
    assert await asyncio.to_thread(box.flush, 15.0)
    assert box.running  # the publisher thread lives on
    assert await asyncio.to_thread(box.close, 5.0)
    assert await stream_payloads(private_nats.url) == [envelope(0).payload, envelope(1).payload]
    assert any("id-big" in r.message and "BadSubjectError" in r.message for r in caplog.records)


async def test_a_publisher_thread_ended_by_a_bug_says_so_in_the_nodes_log(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_stream(private_nats.url)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the publisher")

    monkeypatch.setattr(AckedPublisher, "publish", broken)  # our own code, made to fail as a bug would
    box = outbox(private_nats.url, capacity=10)
    caplog.set_level(logging.ERROR, logger="tests.outbox")
    box.start()
    box.put(envelope(0))
    assert not await asyncio.to_thread(box.flush, 5.0)
    assert not box.running
    assert any("publisher thread stopped" in r.message and "a bug in the publisher" in r.message
               and "1 messages waiting" in r.message for r in caplog.records)  # fmt: skip


def test_a_refusal_names_oversize_only_for_a_size_it_refused() -> None:
    assert refusal_reason(nats.errors.MaxPayloadError()) == OVERSIZE
    too_large = nats.js.errors.BadRequestError(code=400, err_code=10054, description="message size exceeds maximum")
    assert refusal_reason(too_large) == OVERSIZE
    other = nats.js.errors.BadRequestError(code=400, err_code=10003, description="bad request")
    assert refusal_reason(other) == PUBLISH_REFUSED
    assert refusal_reason(nats.errors.BadHeaderError()) == PUBLISH_REFUSED


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
