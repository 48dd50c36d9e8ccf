"""The bridge's outbox: a bounded queue on the node's side, one publisher thread on the other.

The node's thread only appends an `Envelope` (already serialized) and returns: it never waits
for NATS. A thread of our own runs an asyncio loop with its own NATS connection and publishes
the envelopes strictly in order, one JetStream publish (and its ack) at a time, so the stream
holds them in the order the node produced them even across an outage: a publish that fails is
retried, with backoff, before anything behind it is sent. JetStream drops a retried publish
that had in fact been stored, by its `Nats-Msg-Id`.

A message NATS refuses for what it is (larger than the server's max_payload or the stream's
max_msg_size: it can never be stored as it is) is not retried: it would hold everything behind
it until the queue overflowed. It goes to the dead-letter subject instead (reason `oversize`, or
`publish_refused` for another refusal; the body cut to fit if it must), is counted and logged
as an error, and the queue moves on. Its letter is retried for `DEAD_LETTER_PATIENCE` seconds
while NATS is away, then given up (logged) for the same reason.

Bounded: at most `capacity` envelopes wait. While NATS is away they accumulate; once the queue
is full, new envelopes are dropped, counted, and logged as errors naming what was lost (the
sidecar will then refuse later events of the same orders, so this must be loud). `flush` blocks
until every envelope queued so far is published and acknowledged (the bridge calls it on stop);
`close` flushes, then disconnects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
import nats.js.errors

from tradecache.bus import BusFault, NatsOptions, classify_nats, connect, describe_nats
from tradecache.errors import BusUnavailable, RejectReason
from tradecache.ingest.acked_publish import AckedPublisher
from tradecache.ingest.deadletter import Form, Letter, fitted_letter, send_letter
from tradecache.wire import MSG_ID_HEADER

# Retry delays after a failed publish or connection: doubled from the first up to the last.
FIRST_RETRY_DELAY: Final = 0.05
LAST_RETRY_DELAY: Final = 2.0
# Dropped envelopes are logged at most this often (each log says how many since the last one).
DROP_LOG_INTERVAL: Final = 10.0
# While publishing keeps failing, the warning is repeated this often (with the queue's depth).
FAILING_LOG_INTERVAL: Final = 30.0
# Queue depth (as a share of the capacity) at which a warning is logged, once per crossing.
HIGH_WATER: Final = 0.5
# How long a refused message's dead letter is retried while NATS is away before it is given up.
DEAD_LETTER_PATIENCE: Final = 30.0
# JetStream's error code for a message over the stream's max_msg_size.
JS_MESSAGE_TOO_LARGE: Final = 10054
# The bridge's dead-letter reasons (`Tradecache-Reason`): too large for the server or the stream
# (the sidecar's own reason for a payload over its limit), or refused for anything else. The
# sidecar never gives the second: it is not one of its RejectReasons.
OVERSIZE: Final = RejectReason.OVERSIZE.value
PUBLISH_REFUSED: Final = "publish_refused"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready to publish."""

    subject: str
    payload: bytes
    msg_id: str
    kind: str  # for logs: order, position, account, instrument, currency, command, strategy


@dataclass
class OutboxStats:
    """Counts since the outbox started (read them with `Outbox.stats()`)."""

    queued: int = 0
    published: int = 0
    duplicates: int = 0  # acknowledged by JetStream as already stored (a retry, a republication)
    dropped: int = 0
    refused: int = 0  # refused by NATS for what they are: dead-lettered (or, failing that, logged), not stored
    dead_letters: int = 0  # of those, the ones whose dead letter was acknowledged
    failed_publishes: int = 0
    depth: int = 0
    max_depth: int = 0
    connected: bool = False
    dropped_by_kind: dict[str, int] = field(default_factory=dict)
    refused_by_kind: dict[str, int] = field(default_factory=dict)


class _Outcome(enum.Enum):
    PUBLISHED = enum.auto()
    REFUSED = enum.auto()  # for what it is: never stored
    CLOSING = enum.auto()  # closing while NATS is away: not published


def refusal_reason(exc: BaseException) -> str:
    """The dead-letter reason of a publish NATS refused: too large for the server or the stream,
    or another refusal."""
    too_large = isinstance(exc, nats.errors.MaxPayloadError) or (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code == JS_MESSAGE_TOO_LARGE
    )
    return OVERSIZE if too_large else PUBLISH_REFUSED


def bridge_letter(envelope: Envelope, reason: str, error: str, max_payload: int, form: Form) -> Letter:
    """The dead letter of an envelope NATS refused. It was never in a stream, so it names the
    message by its id (`Tradecache-Original-Msg-Id`) rather than by a stream sequence."""
    ours = {
        "Tradecache-Reason": reason,
        "Tradecache-Error": " ".join(error.split())[:1024],
        "Tradecache-Subject": envelope.subject,
        "Tradecache-Source": "bridge",
        "Tradecache-Original-Msg-Id": envelope.msg_id,
        # A letter retried after a lost ack is stored once.
        MSG_ID_HEADER: f"tradecache-bridge-dead-{envelope.msg_id}",
    }
    return fitted_letter(ours, envelope.payload, None, max_payload, form)


class Outbox:
    """Publishes envelopes in order from a thread of its own; see the module docstring."""

    def __init__(
        self,
        options: NatsOptions,
        *,
        capacity: int,
        publish_timeout: float,
        dead_subject: str,
        log: logging.Logger,
        dead_letter_patience: float = DEAD_LETTER_PATIENCE,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._options = options
        self._dead_subject = dead_subject
        self._dead_letter_patience = dead_letter_patience
        self._capacity = capacity
        self._publish_timeout = publish_timeout
        self._log = log
        self._queue: collections.deque[Envelope] = collections.deque()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._stats = OutboxStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._high_water_logged = False
        self._last_drop_log = 0.0
        self._drops_unlogged = 0

    # -- the node's side (any thread) -------------------------------------------------------

    def start(self) -> None:
        """Start the publisher thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="tradecache-bridge", daemon=True)
        self._thread.start()
        self._started.wait()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def put(self, envelope: Envelope) -> bool:
        """Queue an envelope; False (and an error log) when the queue is full and it was dropped."""
        with self._lock:
            depth = len(self._queue)
            if depth >= self._capacity:
                self._dropped(envelope)
                return False
            self._queue.append(envelope)
            self._stats.queued += 1
            self._stats.max_depth = max(self._stats.max_depth, depth + 1)
            if depth + 1 >= self._capacity * HIGH_WATER and not self._high_water_logged:
                self._high_water_logged = True
                self._log.warning(
                    f"tradecache bridge: {depth + 1} messages waiting for NATS (capacity {self._capacity}); "
                    "new ones are dropped once it is full"
                )
        if depth == 0:
            self._wake()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is published and acknowledged. False on timeout."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    return False
                self._drained.wait(min(remaining, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        """Flush (up to `timeout` seconds), then stop the thread and disconnect. True when nothing
        was left behind."""
        drained = self.flush(timeout) if self.running else not self._queue
        self._closing = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self._publish_timeout))
        left = len(self._queue)
        if left:
            self._log.error(
                f"tradecache bridge: closed with {left} messages never published "
                f"(kinds: {dict(collections.Counter(envelope.kind for envelope in self._queue))})"
            )
        return drained and not left

    def stats(self) -> OutboxStats:
        with self._lock:
            snapshot = OutboxStats(
                **{
                    **self._stats.__dict__,
                    "dropped_by_kind": dict(self._stats.dropped_by_kind),
                    "refused_by_kind": dict(self._stats.refused_by_kind),
                }
            )
            snapshot.depth = len(self._queue)
        return snapshot

    def _dropped(self, envelope: Envelope) -> None:  # holds the lock
        self._stats.dropped += 1
        self._stats.dropped_by_kind[envelope.kind] = self._stats.dropped_by_kind.get(envelope.kind, 0) + 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._last_drop_log = now
            self._log.error(
                f"tradecache bridge: queue full ({self._capacity} waiting for NATS): dropped "
                f"{self._drops_unlogged} messages, the latest a {envelope.kind} with id {envelope.msg_id} "
                f"({self._stats.dropped} dropped in all); the sidecar will not have them"
            )
            self._drops_unlogged = 0

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wakeup.set)

    # -- the publisher thread ---------------------------------------------------------------

    def _run(self) -> None:
        # asyncio.Runner, not a bare loop: at the end it cancels and runs to completion the tasks
        # nats-py leaves behind (its subscriptions' readers), which a closed loop would leave
        # half-done for the garbage collector.
        try:
            with asyncio.Runner() as runner:
                runner.run(self._main(runner.get_loop()))
        except Exception as exc:  # a bug: said in the node's log, not only on the thread's stderr
            self._log.error(
                f"tradecache bridge: the publisher thread stopped on an unexpected error ({type(exc).__name__}: "
                f"{exc}); {len(self._queue)} messages waiting will not be published, later ones are dropped "
                "once the queue is full",
                exc_info=exc,
            )
        finally:
            self._started.set()  # a start() waiting for a thread that failed before it started

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._started.set()
        nc = await self._connect()
        if nc is None:
            return
        # What js.publish does, without its request machinery per message (the process's CPU per
        # message 196-213 -> 162-180 us; the rate stays bound by one ack's round trip at a time).
        publisher = AckedPublisher(nc, timeout=self._publish_timeout)
        try:
            await self._publish_loop(publisher, lambda: int(nc.max_payload))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=self._publish_timeout)

    async def _connect(self) -> Any:
        delay = FIRST_RETRY_DELAY
        while not self._closing:
            try:
                nc = await connect(
                    self._options,
                    on_disconnected=self._on_disconnected,
                    on_reconnected=self._on_reconnected,
                    log=self._log,
                )
            except BusUnavailable as exc:
                self._log.error(
                    f"tradecache bridge: cannot connect to NATS ({exc}); {len(self._queue)} messages waiting, retrying"
                )
                await self._sleep(delay)
                delay = min(delay * 2, LAST_RETRY_DELAY)
                continue
            self._stats.connected = True
            return nc
        return None

    async def _on_disconnected(self) -> None:
        self._stats.connected = False
        if not self._closing:
            self._log.warning(f"tradecache bridge: NATS disconnected; {len(self._queue)} messages waiting")

    async def _on_reconnected(self) -> None:
        self._stats.connected = True
        self._log.info(f"tradecache bridge: NATS reconnected; {len(self._queue)} messages waiting")

    async def _publish_loop(self, publisher: AckedPublisher, max_payload: Callable[[], int]) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                if not self._queue and not self._closing:
                    await self._wakeup.wait()
                continue
            envelope = self._queue[0]  # taken off only once acknowledged
            outcome, refusal = await self._publish_until_acked(publisher, envelope)
            if outcome is _Outcome.CLOSING:
                return  # closing while NATS is away: close() reports what is left
            if refusal is not None and not await self._dead_letter(publisher, envelope, refusal, max_payload):
                return  # closing before its letter went: it stays in the queue, close() reports it
            with self._drained:
                self._queue.popleft()
                if outcome is _Outcome.PUBLISHED:
                    self._stats.published += 1
                if not self._queue:
                    self._high_water_logged = False
                    self._drained.notify_all()

    async def _publish_until_acked(
        self, publisher: AckedPublisher, envelope: Envelope
    ) -> tuple[_Outcome, BaseException | None]:
        """Publish `envelope` until JetStream acknowledges it, or refuses it for what it is (then
        the refusal is returned with REFUSED)."""
        delay = FIRST_RETRY_DELAY
        failing_since: float | None = None
        last_warning = 0.0
        while True:
            try:
                ack = await publisher.publish(envelope.subject, envelope.payload, {MSG_ID_HEADER: envelope.msg_id})
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError) as exc:
                if classify_nats(exc) is BusFault.REFUSED:
                    self._refused(envelope, exc)
                    return _Outcome.REFUSED, exc
                self._stats.failed_publishes += 1
                now = time.monotonic()
                if failing_since is None or now - last_warning >= FAILING_LOG_INTERVAL:
                    failing_since = failing_since if failing_since is not None else now
                    last_warning = now
                    self._log.warning(
                        f"tradecache bridge: publish to {envelope.subject} failing for {now - failing_since:.0f} s "
                        f"({type(exc).__name__}: {exc}); retrying in order, {len(self._queue)} messages waiting"
                    )
                if self._closing:
                    return _Outcome.CLOSING, None
                await self._sleep(delay)
                delay = min(delay * 2, LAST_RETRY_DELAY)
                continue
            if ack.duplicate:
                self._stats.duplicates += 1
            if failing_since is not None:
                self._log.warning(
                    f"tradecache bridge: publishing again after {time.monotonic() - failing_since:.1f} s; "
                    f"{len(self._queue)} messages waiting"
                )
            return _Outcome.PUBLISHED, None

    def _refused(self, envelope: Envelope, exc: BaseException) -> None:
        with self._lock:
            self._stats.refused += 1
            self._stats.refused_by_kind[envelope.kind] = self._stats.refused_by_kind.get(envelope.kind, 0) + 1
        self._log.error(
            f"tradecache bridge: NATS refused a {envelope.kind} with id {envelope.msg_id} "
            f"({len(envelope.payload)} bytes for {envelope.subject}) for what it is ({describe_nats(exc)}); "
            f"it is not stored: sending it to {self._dead_subject} and going on with the next"
        )

    async def _dead_letter(
        self, publisher: AckedPublisher, envelope: Envelope, refusal: BaseException, max_payload: Callable[[], int]
    ) -> bool:
        """Publish `envelope`'s dead letter (retried while NATS is away, up to the dead-letter
        patience). False only when closing interrupted it."""
        reason = refusal_reason(refusal)
        error = f"NATS refused it: {describe_nats(refusal)}"
        delay = FIRST_RETRY_DELAY
        give_up = time.monotonic() + self._dead_letter_patience
        context: dict[str, object] = {"msg_id": envelope.msg_id, "subject": envelope.subject}
        while True:
            try:
                form = await send_letter(
                    publisher,
                    self._dead_subject,
                    lambda form: bridge_letter(envelope, reason, error, max_payload(), form),
                    self._log,
                    context,
                )
            except BusUnavailable as exc:
                if self._closing:
                    return False
                if time.monotonic() >= give_up:
                    self._log.error(
                        f"tradecache bridge: the dead letter of {envelope.kind} {envelope.msg_id} could not be "
                        f"published for {self._dead_letter_patience:g} s ({exc}); given up: the message is lost"
                    )
                    return True
                await self._sleep(delay)
                delay = min(delay * 2, LAST_RETRY_DELAY)
                continue
            except Exception as exc:  # what nats-py raised unforeseen must not end the publisher thread
                self._log.error(
                    f"tradecache bridge: the dead letter of {envelope.kind} {envelope.msg_id} failed "
                    f"({type(exc).__name__}: {exc}); given up: the message is lost"
                )
                return True
            if form is None:
                self._log.error(
                    f"tradecache bridge: the dead letter of {envelope.kind} {envelope.msg_id} was refused in every "
                    "form: the message is lost"
                )
            else:
                with self._lock:
                    self._stats.dead_letters += 1
            return True

    async def _sleep(self, seconds: float) -> None:
        assert self._wakeup is not None
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)


__all__ = ["OVERSIZE", "PUBLISH_REFUSED", "Envelope", "Outbox", "OutboxStats", "bridge_letter", "refusal_reason"]
