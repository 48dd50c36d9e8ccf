"""Replies framed by `service/egress.py` arrive as `publish` would have sent them, through a real
nats-server: the same payload and headers, the same refusals; what it cannot frame exactly goes
through `publish` itself."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats import errors

from tradecache.service import egress

pytestmark = pytest.mark.integration

PROBE = b"probe: is the subscription live yet?"


@pytest.fixture
async def pair(nats_server: Any) -> AsyncIterator[tuple[Any, Any]]:
    sender = await nats.connect(nats_server.url)
    receiver = await nats.connect(nats_server.url)
    yield sender, receiver
    await sender.close()
    await receiver.close()


async def received(receiver: Any, send: Any, sender: Any) -> Any:
    """The one message `send(subject)` publishes to a fresh inbox of `receiver`.

    A publish from another connection right after the SUB (even after the receiver's flush) was
    now and then never delivered: ~1 run in 30 on a fresh pair of connections, with nats-py's own
    `publish` as well, on nats-server 2.9 and 2.15 alike (`connz`: the server had the message and
    the subscription, and sent nothing). So the sender first sends probes until one arrives."""
    inbox = receiver.new_inbox()
    subscription = await receiver.subscribe(inbox)
    await receiver.flush()
    for _ in range(50):
        await sender.publish(inbox, PROBE)
        await sender.flush()
        with contextlib.suppress(errors.TimeoutError):
            if (await subscription.next_msg(timeout=0.2)).data == PROBE:
                break
    await send(inbox)
    await sender.flush()
    while (message := await subscription.next_msg(timeout=10)).data == PROBE:
        pass  # a probe that came late
    await subscription.unsubscribe()
    return message


@pytest.mark.parametrize(
    "headers",
    [None, {"Tradecache-Cursor": "Ty0wMDAwNTk5"}, {"A": "1", "Content-Type": "application/msgpack"}],
    ids=["no headers", "cursor", "two headers"],
)
async def test_a_framed_reply_arrives_as_publish_sends_one(
    pair: tuple[Any, Any], headers: dict[str, str] | None
) -> None:
    sender, receiver = pair
    parts = [b"\xde\x02\x58", *(os.urandom(1700) for _ in range(300)), b""]
    assert egress.can_frame(sender, receiver.new_inbox(), headers)
    counted = []

    async def send(inbox: str) -> None:
        before = sender.stats["out_msgs"], sender.stats["out_bytes"]
        await egress.send(sender, inbox, parts, headers)
        counted.append((sender.stats["out_msgs"] - before[0], sender.stats["out_bytes"] - before[1]))

    ours = await received(receiver, send, sender)
    theirs = await received(receiver, lambda inbox: sender.publish(inbox, b"".join(parts), headers=headers), sender)
    assert ours.data == theirs.data == b"".join(parts)
    assert ours.headers == theirs.headers
    assert (ours.headers or {}) == (headers or {})
    assert counted == [(1, len(b"".join(parts)))]  # counted as publish counts a message


async def test_a_reply_of_the_max_payload_is_sent_and_one_byte_more_is_refused_as_publish_refuses_it(
    pair: tuple[Any, Any],
) -> None:
    sender, receiver = pair
    limit = sender.max_payload
    exact = [b"x" * (limit // 2), b"y" * (limit - limit // 2)]
    message = await received(receiver, lambda inbox: egress.send(sender, inbox, exact), sender)
    assert message.data == b"".join(exact)
    with pytest.raises(errors.MaxPayloadError):
        await egress.send(sender, receiver.new_inbox(), [*exact, b"z"])
    with pytest.raises(errors.MaxPayloadError):
        await sender.publish(receiver.new_inbox(), b"".join([*exact, b"z"]))
    # The connection is still usable after the refusal.
    message = await received(receiver, lambda inbox: egress.send(sender, inbox, [b"after"]), sender)
    assert message.data == b"after"


async def test_what_egress_cannot_frame_goes_through_publish_which_encodes_it(pair: tuple[Any, Any]) -> None:
    sender, receiver = pair
    # A value with surrounding space and a line break: nats-py strips and rewrites it, so only it writes it.
    odd = {"Tradecache-Cursor": " a\r\nb "}
    assert not egress.can_frame(sender, receiver.new_inbox(), odd)
    ours = await received(receiver, lambda inbox: egress.send(sender, inbox, [b"body"], odd), sender)
    theirs = await received(receiver, lambda inbox: sender.publish(inbox, b"body", headers=odd), sender)
    assert ours.data == theirs.data == b"body"
    assert ours.headers == theirs.headers
    assert not egress.can_frame(sender, "", None)
    assert not egress.can_frame(sender, "two words", None)
    assert not egress.can_frame(object(), "inbox", None)  # not a nats-py client of the shape it knows


async def test_a_closed_connection_refuses_as_publish_does(nats_server: Any) -> None:
    sender = await nats.connect(nats_server.url)
    await sender.close()
    with pytest.raises(errors.ConnectionClosedError):
        await egress.send(sender, "some.inbox", [b"late"])
    with pytest.raises(errors.ConnectionClosedError):
        await sender.publish("some.inbox", b"late")
