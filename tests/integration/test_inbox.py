"""`ingest/inbox.py` against a real nats-server: an inbox routed past nats-py's Msg objects hands
over exactly what nats-py's own callback gets, in the same order; other subscriptions of the client
are untouched; a handler's error costs that message only; the routing survives a reconnect and
ends with `unsubscribe`; without the dispatch it routes through, the callback path does the same.
Each test runs with the compiled frame reader (`ingest/_frames.c`) and without it (nats-py's
parser reading every frame)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import nats
import pytest

from tests.backends import Server
from tests.integration.daemon_harness import reconnecting_client
from tradecache.dev.stack import NatsServer
from tradecache.ingest import inbox as inbox_module
from tradecache.ingest.inbox import InboxSubscription, LazyHeaders, subscribe_inbox

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, params=["compiled", "nats-py"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "nats-py":
        monkeypatch.setattr(inbox_module, "_frames", None)
    else:
        assert inbox_module._frames is not None, "scripts/setup builds the frame reader (setup.py)"
    return str(request.param)


Parts = tuple[str, str, bytes, Mapping[str, str] | None]


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _publish_mix(nc: Any, subject: str, count: int) -> None:
    for index in range(count):
        headers = {"Nats-Msg-Id": f"id-{index}", "X-Index": str(index)} if index % 3 == 0 else None
        reply = f"reply.{index}.1764112094914872368" if index % 2 else ""
        await nc.publish(subject, b"" if index % 7 == 0 else f"payload {index}".encode(), reply=reply, headers=headers)
    await nc.flush()


class SideBySide:
    """An inbox subscription and an ordinary one (same client, nats-py's own path) on one subject,
    each recording what it gets."""

    def __init__(self) -> None:
        self.routed: list[Parts] = []
        self.through_msg: list[Parts] = []

    async def subscribe(self, nc: Any, inbox_client: Any, subject: str) -> tuple[InboxSubscription, Any]:
        async def on_msg(msg: Any) -> None:
            self.through_msg.append((msg.subject, msg.reply, msg.data, msg.headers))

        subscription = await subscribe_inbox(inbox_client, subject, lambda *parts: self.routed.append(parts))
        return subscription, await nc.subscribe(subject, cb=on_msg)


async def test_the_inbox_hands_over_what_the_nats_py_callback_gets_in_order(nats_server: Server, reader: str) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        both = SideBySide()
        routed, through_msg = both.routed, both.through_msg
        inbox = nc.new_inbox()
        subscription, ordinary = await both.subscribe(nc, nc, f"{inbox}.*")
        assert subscription.direct and subscription.compiled == (reader == "compiled")
        await _publish_mix(nc, f"{inbox}.a", 60)
        # A status message as JetStream sends one (header line only, no body): parsed by nats-py.
        await nc.publish(f"{inbox}.b", b"", headers={"Status": "408", "Description": "Request Timeout"})
        await nc.flush()
        await _until(lambda: len(routed) == 61 and len(through_msg) == 61)
        assert routed == through_msg
        assert routed[-1][3] == {"Status": "408", "Description": "Request Timeout"}
        assert routed[3][3] == {"Nats-Msg-Id": "id-3", "X-Index": "3"}
        # A body with headers: they are parsed when read (LazyHeaders, equal to nats-py's dict);
        # a status line or an empty body: parsed at once, as nats-py does.
        assert isinstance(routed[3][3], LazyHeaders) and not isinstance(through_msg[3][3], LazyHeaders)
        assert isinstance(routed[0][3], dict) and routed[0][2] == b""
        assert isinstance(routed[-1][3], dict)
        await subscription.unsubscribe()
        await _publish_mix(nc, f"{inbox}.a", 3)
        await _until(lambda: len(through_msg) == 64)
        assert len(routed) == 61  # nothing after unsubscribe
        await ordinary.unsubscribe()
    finally:
        await nc.close()


async def test_large_and_small_messages_in_bursts_arrive_whole_and_in_order(nats_server: Server) -> None:
    """Reads end anywhere in a frame; frames past 64 KiB are gathered by nats-py's parser."""
    nc = await nats.connect(nats_server.url)
    try:
        both = SideBySide()
        routed, through_msg = both.routed, both.through_msg
        inbox = nc.new_inbox()
        await both.subscribe(nc, nc, inbox)
        sizes = [0, 1, 300, 70_000, 5, 200_000, 65_530, 17, 1_000_000 - 200, 3] * 4
        for index, size in enumerate(sizes):
            headers = {"Nats-Msg-Id": f"m-{index}"} if index % 2 else None
            await nc.publish(inbox, bytes([index % 251]) * size, reply=f"r.{index}", headers=headers)
        await nc.flush()
        await _until(lambda: len(routed) == len(sizes) and len(through_msg) == len(sizes), timeout=15)
        assert routed == through_msg
        assert [len(parts[2]) for parts in routed] == sizes
        assert [parts[1] for parts in routed] == [f"r.{index}" for index in range(len(sizes))]
    finally:
        await nc.close()


async def test_a_handler_that_raises_loses_that_message_only(
    nats_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        kept: list[bytes] = []

        def handler(_subject: str, _reply: str, data: bytes, _headers: dict[str, str] | None) -> None:
            if data == b"boom":
                raise RuntimeError("handler failed")
            kept.append(data)

        inbox = nc.new_inbox()
        await subscribe_inbox(nc, inbox, handler)
        with caplog.at_level(logging.ERROR, logger="tradecache.ingest.inbox"):
            for data in (b"1", b"boom", b"2", b"3"):
                await nc.publish(inbox, data)
            await nc.flush()
            await _until(lambda: len(kept) == 3)
        assert kept == [b"1", b"2", b"3"]
        assert nc.is_connected
        assert any("could not be handled" in record.getMessage() for record in caplog.records)
    finally:
        await nc.close()


async def test_the_inbox_still_receives_after_the_server_restarts(tmp_path: Any) -> None:
    with NatsServer(data_dir=tmp_path / "nats") as server:
        nc, reconnected = await reconnecting_client(server.url)
        try:
            received: list[bytes] = []
            inbox = nc.new_inbox()
            await subscribe_inbox(nc, inbox, lambda _s, _r, data, _h: received.append(data))
            await nc.publish(inbox, b"before")
            await nc.flush()
            await _until(lambda: received == [b"before"])
            server.stop()
            server.start()
            await asyncio.wait_for(reconnected.wait(), timeout=15)
            await nc.publish(inbox, b"after")
            await nc.flush()
            await _until(lambda: received == [b"before", b"after"])
        finally:
            await nc.close()


class _WithoutDispatch:
    """A client as a nats-py without `_process_msg` would be: only what subscribing needs."""

    def __init__(self, nc: Any) -> None:
        self.subscribe = nc.subscribe


async def test_without_the_dispatch_the_callback_path_hands_over_the_same(nats_server: Server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        both = SideBySide()
        routed, through_msg = both.routed, both.through_msg
        inbox = nc.new_inbox()
        subscription, _ordinary = await both.subscribe(nc, _WithoutDispatch(nc), inbox)
        assert not subscription.direct
        await _publish_mix(nc, inbox, 20)
        await _until(lambda: len(routed) == 20 and len(through_msg) == 20)
        assert routed == through_msg
        await subscription.unsubscribe()
    finally:
        await nc.close()
