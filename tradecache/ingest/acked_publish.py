"""JetStream publishes acknowledged through one reply subscription: `js.publish`, cheaper per call.

nats-py's `js.publish` is a request: a token from its NUID plus random bytes, a future in the
client's response map, a `Msg` object through the request subscription's queue and task, and an
`asyncio.wait_for` per call. A stream half malformed dead-letters every other message, and that
machinery was a fifth of the client's CPU per letter (128-144 -> 104-109 us without it, 20,000
letters in groups of 64). Here one wildcard inbox subscription
(`subscribe_inbox`: replies handed over as they are parsed) answers every publish, found by the
reply subject's last token (a counter), each publish waiting on a plain future with one timer.

Answers are read as `js.publish` reads them and its errors raised, so that `bus.classify_nats`
sorts them the same way: a `503` status (no stream listens on the subject) is
`NoStreamResponseError`, a JSON `{"error": ...}` is `APIError.from_error` (a `400` is a refusal of
what the message carries), no answer in time is `nats.errors.TimeoutError`.

Bounds: one entry per publish in flight (the pipeline has at most `DEAD_LETTERS_AT_ONCE`); a
publish that ends, answered or not, takes its entry away, and an answer that comes later finds
none and is dropped. The subscription is an ordinary one: nats-py subscribes it again after a
reconnect, and a publish whose answer was lost meanwhile times out and is retried by the caller.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple

import nats.errors
import nats.js.api
import nats.js.errors

from tradecache.ingest.inbox import Headers, InboxSubscription, subscribe_inbox

NO_RESPONDERS = "503"  # the status nats-server answers a request with when nothing listens
STATUS = nats.js.api.Header.STATUS.value  # where nats-py puts a status line among the headers


class PublishAck(NamedTuple):
    """What the stream answered: the message's sequence, and whether it was already stored (a
    duplicate of its `Nats-Msg-Id` within the stream's window, answered with the first copy's)."""

    seq: int
    duplicate: bool


class AckedPublisher:
    """Publishes to JetStream and waits for the stream's ack (see the module docstring)."""

    def __init__(self, nc: Any, timeout: float = 5.0) -> None:
        self._nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._subscription: InboxSubscription | None = None
        self._opening = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[tuple[bytes, Headers]]] = {}
        self._count = 0

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    async def _inbox(self) -> str:
        if self._subscription is None:
            async with self._opening:
                if self._subscription is None:
                    prefix = str(self._nc.new_inbox())
                    self._subscription = await subscribe_inbox(self._nc, prefix + ".*", self._answered)
                    self._prefix = prefix + "."
        return self._prefix

    def _answered(self, subject: str, reply: str, data: bytes, headers: Headers) -> None:
        future = self._waiting.pop(subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result((data, headers))

    async def publish(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> PublishAck:
        """Publish and wait for the stream's ack.

        Raises what nats-py's `js.publish` raises for the same answer (see the module docstring),
        and what `nc.publish` raises (a closed connection, a header NATS cannot carry).
        """
        prefix = await self._inbox()
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[tuple[bytes, Headers]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self._nc.publish(subject, body, reply=prefix + token, headers=headers)
            async with asyncio.timeout(self.timeout):
                data, answer_headers = await future
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            self._waiting.pop(token, None)
        return read_ack(data, answer_headers)

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()


def read_ack(data: bytes, headers: Headers) -> PublishAck:
    """A publish ack, or the error nats-py raises for that answer (an `APIError` for an answer
    that is no ack at all, where nats-py would fail on it another way)."""
    if headers and headers.get(STATUS) == NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    try:
        answer = json.loads(data)
    except ValueError:
        raise nats.js.errors.APIError(description=f"not a publish ack: {data[:200]!r}") from None
    if not isinstance(answer, dict):
        raise nats.js.errors.APIError(description=f"not a publish ack: {data[:200]!r}")
    if "error" in answer:
        error = answer["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise nats.js.errors.APIError(description=f"an error without a code: {data[:200]!r}")
        raise nats.js.errors.APIError.from_error(error)
    seq = answer.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise nats.js.errors.APIError(description=f"a publish ack without a sequence: {data[:200]!r}")
    return PublishAck(seq, answer.get("duplicate") is True)


__all__ = ["AckedPublisher", "PublishAck", "read_ack"]
