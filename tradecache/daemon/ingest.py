"""The ingest loop: pull from JetStream, apply in stream order, commit, then acknowledge.

Theory of operation. Messages are pulled by hand (a request to
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with a reply inbox we subscribe to), which
FIELD-NOTES measured 3-4x faster than nats-py's `fetch()`. For each batch:

1. every delivery is checked (`Intake`): size, subject, msgpack, fields, kind;
2. the stored state the batch refers to and memory lacks is read in one round trip, then the
   ledger applies the batch in stream order (`apply_batch`), skipping what the checkpoint says
   was committed before a restart;
3. refused deliveries are published to the dead-letter subject (each publish acknowledged);
4. all writes plus the new checkpoint go to Redis in one atomic script call;
5. only then is the batch acknowledged (with AckPolicy.ALL one ack covers the batch).

A crash between 4 and 5 redelivers messages whose sequence is at or below the checkpoint: they
are acked without being applied again. When Redis is unavailable, steps 2 and 4 retry with
backoff and nothing is acked; readiness is false meanwhile.

Order is kept across crashes and lost deliveries too. Messages delivered but never committed
(the process died, or a reconnect dropped them in flight) stay "pending" at the server until
their ack wait ends, while new pulls hand out *later* messages; applying those first would break
stream order, and with AckPolicy.ALL their ack would also ack the lost ones. So at start, and
whenever the consumer sequence skips, the gap between the checkpoint and the next delivery is
read straight from the stream (`STREAM.MSG.GET` with `next_by_subj`) and applied first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.js.errors

from tradecache.cache.keys import Keys
from tradecache.daemon.batch import BatchResult, apply_batch, duplicates
from tradecache.daemon.deadletter import DeadLetters
from tradecache.daemon.intake import Accepted, Delivery, Intake, Refused, parse_ack_subject
from tradecache.daemon.metrics import Metrics
from tradecache.daemon.store import Store
from tradecache.errors import StoreUnavailable
from tradecache.model.ledger import Ledger
from tradecache.serialization.msgpack import MsgPackSerializer

T = TypeVar("T")

# Test hook: after this many commits, stop before acknowledging (a test then kills -9 the process).
PAUSE_AFTER_COMMIT_ENV = "TRADECACHE_TEST_PAUSE_AFTER_COMMIT"
_BACKOFF_START, _BACKOFF_MAX = 0.05, 2.0
# After the first delivery of a batch, wait this long for more before processing what arrived:
# a backlog fills whole batches, a trickle (1,000 events/s) is committed within milliseconds.
LINGER_SECONDS = 0.002
# ... and never hold the first delivery of a batch longer than this (a steady stream has no gaps).
MAX_BATCH_WAIT = 0.004


@dataclass(frozen=True)
class IngestSettings:
    stream: str
    consumer: str
    batch_size: int
    fetch_expires: float
    open_orders_limit: int
    ack_all: bool  # the consumer uses AckPolicy.ALL: acking the last delivery acks the batch


class Ingestor:
    """Consumes one trader's messages into Redis."""

    def __init__(
        self,
        nc: Any,
        js: Any,
        filter_subject: str,
        settings: IngestSettings,
        intake: Intake,
        ledger: Ledger,
        store: Store,
        dead_letters: DeadLetters,
        metrics: Metrics,
        serializer: MsgPackSerializer,
        log: logging.Logger,
    ) -> None:
        self.nc = nc
        self.js = js
        self.filter_subject = filter_subject
        self.settings = settings
        self.intake = intake
        self.ledger = ledger
        self.store = store
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.serializer = serializer
        self.log = log
        self.keys: Keys = store.keys
        self.checkpoint = 0
        self.pending: int | None = None  # stream messages not yet delivered, as of the last batch
        self.commits = 0
        self.redis_ok = False
        self.bound = False
        self._pause_after = int(os.environ.get(PAUSE_AFTER_COMMIT_ENV, "0") or 0)
        self._inbox = ""
        self._pulls = 0
        self._remaining = 0  # deliveries still due on the outstanding pull
        self._pull_deadline = 0.0
        self._last_cseq: int | None = None
        self._queue: collections.deque[Any] = collections.deque()
        self._arrived = asyncio.Event()
        self._subscription: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; the batch in hand is finished and acked first."""
        self.checkpoint = await self._retry("read checkpoint", self.store.read_checkpoint, stopping)
        self._inbox = self.nc.new_inbox()
        self._subscription = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        await self._recover(stopping)
        self.bound = True
        self.log.info("ingest started", extra={"checkpoint": self.checkpoint, "stream": self.settings.stream})
        try:
            # When stopping, no new pull is asked for; the one outstanding ends within fetch_expires.
            while not stopping.is_set() or self._remaining > 0:
                deliveries = await self._fetch(stopping)
                if deliveries:
                    await self._process(deliveries, stopping)
        finally:
            self.bound = False
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        self._queue.append(msg)
        self._arrived.set()

    # -- recovering the order after a crash or a lost delivery ------------------------------

    async def _recover(self, stopping: asyncio.Event) -> None:
        """Apply what the consumer delivered beyond the checkpoint before a restart."""
        info = await self._retry_bus_value("consumer info", self._consumer_info, stopping)
        self._last_cseq = int(info.delivered.consumer_seq)
        delivered = int(info.delivered.stream_seq)
        if delivered > self.checkpoint:
            self.log.info("recovering delivered but uncommitted messages", extra={"from": self.checkpoint + 1,
                                                                                   "to": delivered})  # fmt: skip
            await self._fill_gap(delivered + 1, stopping)

    async def _consumer_info(self) -> Any:
        return await self.js.consumer_info(self.settings.stream, self.settings.consumer)

    async def _fill_gap(self, before_seq: int, stopping: asyncio.Event) -> None:
        """Read and apply, in order, this consumer's messages after the checkpoint and before `before_seq`."""
        seq = self.checkpoint + 1
        gap: list[Delivery] = []
        while seq < before_seq:
            try:
                raw = await self.js.get_msg(self.settings.stream, seq, subject=self.filter_subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            if raw.seq is None or raw.seq >= before_seq:
                break
            timestamp = int(raw.time.timestamp() * 1e9) if raw.time else time.time_ns()
            gap.append(Delivery(raw.subject or "", raw.data or b"", raw.headers, raw.seq, 0, timestamp, 0, ""))
            seq = raw.seq + 1
            if len(gap) >= self.settings.batch_size:
                await self._process(gap, stopping, ack=False)
                gap = []
        if gap:
            await self._process(gap, stopping, ack=False)

    # -- fetching --------------------------------------------------------------------------

    async def _request_pull(self) -> None:
        self._pulls += 1
        request = {"batch": self.settings.batch_size, "expires": int(self.settings.fetch_expires * 1e9)}
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.settings.stream}.{self.settings.consumer}"
        await self.nc.publish(subject, json.dumps(request).encode(), reply=f"{self._inbox}.{self._pulls}")
        self._remaining = self.settings.batch_size
        self._pull_deadline = time.monotonic() + self.settings.fetch_expires + 1.0

    async def _fetch(self, stopping: asyncio.Event) -> list[Delivery]:
        """Deliveries that have arrived: a full batch, or what came before the stream went quiet."""
        if self._remaining <= 0:
            if stopping.is_set():
                return []
            try:
                await self._request_pull()
            except Exception as exc:  # disconnected: nats-py reconnects by itself; try again shortly
                self.log.warning("pull request failed", extra={"error": str(exc)})
                await asyncio.sleep(0.2)
                return []
        deliveries: list[Delivery] = []
        first_at = 0.0
        while True:
            while self._queue and len(deliveries) < self.settings.batch_size:
                self._take(self._queue.popleft(), deliveries)
            if deliveries and not first_at:
                first_at = time.monotonic()
            if len(deliveries) >= self.settings.batch_size or self._remaining <= 0:
                break
            if deliveries:
                timeout = min(LINGER_SECONDS, first_at + MAX_BATCH_WAIT - time.monotonic())
            else:
                timeout = self._pull_deadline - time.monotonic()
            if deliveries and timeout <= 0:
                break
            if timeout <= 0:
                self._remaining = 0  # the pull's end was lost (e.g. a reconnect): ask again
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=timeout)
            except TimeoutError:
                if not deliveries:
                    self._remaining = 0
                break
        if self._remaining <= 0 and len(deliveries) >= self.settings.batch_size and not stopping.is_set():
            # A full batch means a backlog: ask for the next one now, so it arrives while this
            # one is processed.
            with contextlib.suppress(Exception):
                await self._request_pull()
        return deliveries

    def _take(self, msg: Any, deliveries: list[Delivery]) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is not None and not msg.data:
            # 404 no messages, 408 expired, 409 conflict: that pull is over.
            if msg.subject == f"{self._inbox}.{self._pulls}":
                self._remaining = 0
            if status == "409":
                self.log.warning("pull conflict", extra={"description": headers.get("Description", "")})
            return
        try:
            seq, consumer_seq, timestamp, pending = parse_ack_subject(msg.reply)
        except ValueError:
            self.log.warning("delivery without JetStream metadata ignored", extra={"subject": msg.subject})
            return
        self._remaining -= 1
        deliveries.append(Delivery(msg.subject, msg.data, headers, seq, consumer_seq, timestamp, pending, msg.reply))

    async def _process(self, deliveries: list[Delivery], stopping: asyncio.Event, *, ack: bool = True) -> None:
        if ack:
            first_cseq = min(d.consumer_seq for d in deliveries)
            if self._last_cseq is not None and first_cseq > self._last_cseq + 1:
                # Deliveries were lost in flight: apply the gap from the stream first.
                self.log.warning("consumer sequence gap", extra={"after": self._last_cseq, "next": first_cseq})
                await self._fill_gap(min(d.stream_seq for d in deliveries), stopping)
            self._last_cseq = max(self._last_cseq or 0, max(d.consumer_seq for d in deliveries))
        # Stream order; a message redelivered while its first copy was still in hand counts once.
        unique = sorted({d.stream_seq: d for d in reversed(deliveries)}.values(), key=lambda d: d.stream_seq)
        items = [self.intake.check(d) for d in unique]
        fresh = [
            item.message for item in items if isinstance(item, Accepted) and item.delivery.stream_seq > self.checkpoint
        ]
        request = self.ledger.missing(fresh)
        if request:
            stored = await self._retry("read state", lambda: self.store.read_state(request), stopping)
            self.ledger.hydrate(stored)
        result = apply_batch(
            self.ledger, items, checkpoint=self.checkpoint, keys=self.keys, encode=self.serializer.serialize
        )
        for refused in result.refused:
            await self._retry_bus("publish dead letter", self._dead_letter(refused), stopping)
        started = time.perf_counter()
        results = await self._retry("commit batch", lambda: self.store.commit(result.call), stopping)
        written_at = time.perf_counter()
        self.commits += 1
        if self._pause_after and self.commits >= self._pause_after:
            self.log.warning("test hook: paused after commit, before ack", extra={"commits": self.commits})
            await asyncio.Event().wait()
        self.checkpoint = max(self.checkpoint, result.last_seq)
        self._record(result, results, written_at - started, unique)
        if result.failure is not None:
            self.log.error("a message failed unexpectedly and was dead-lettered", exc_info=result.failure)
        if result.rest:
            # A message failed unexpectedly and was dead-lettered; the ones after it are applied
            # now that the ones before it are committed (and before anything is acked).
            await self._process([item.delivery for item in result.rest], stopping, ack=False)
        if ack:
            await self._ack(deliveries)
        self.ledger.evict(self.settings.open_orders_limit)

    def _dead_letter(self, refused: Refused) -> Callable[[], Awaitable[None]]:
        return lambda: self.dead_letters.publish(refused)

    async def _ack(self, deliveries: list[Delivery]) -> None:
        if self.settings.ack_all:
            # AckPolicy.ALL acks every delivery up to this consumer sequence.
            last = max(deliveries, key=lambda d: d.consumer_seq)
            await self.nc.publish(last.reply, b"+ACK")
        else:
            for delivery in deliveries:
                await self.nc.publish(delivery.reply, b"+ACK")

    def _record(self, result: BatchResult, results: list[int], seconds: float, deliveries: list[Delivery]) -> None:
        metrics = self.metrics
        now_ns = time.time_ns()
        kinds = set()
        for applied, duplicate in zip(result.applied, duplicates(result, results), strict=True):
            kind, type_name = applied.item.kind.value, applied.item.type_name
            metrics.event(kind, type_name, "duplicate" if duplicate else "written")
            metrics.event_lag(kind, max(0.0, (now_ns - applied.item.delivery.timestamp_ns) / 1e9))
            kinds.add(kind)
        metrics.commit_duration(kinds, seconds)  # once per commit, not once per kind
        for refused in result.refused:
            metrics.event(refused.kind, refused.type_name, "dead_lettered")
            metrics.dead_letter(refused.error.reason.value)
            self.log.warning(
                "dead-lettered",
                extra={
                    "reason": refused.error.reason.value,
                    "error": str(refused.error),
                    "subject": refused.delivery.subject,
                    "stream_seq": refused.delivery.stream_seq,
                },
            )
        for divergence in result.divergences:
            metrics.divergence()
            self.log.warning(
                "position divergence",
                extra={
                    "position_id": divergence.position_id,
                    "event": divergence.event_type,
                    "differences": list(divergence.differences),
                },
            )
        metrics.batch(len(deliveries))
        self.pending = deliveries[-1].pending
        metrics.set_pending(self.pending)

    # -- retries ---------------------------------------------------------------------------

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]], stopping: asyncio.Event) -> T:
        """Retry a Redis operation until it succeeds; readiness is false meanwhile.

        Gives up (raising StoreUnavailable) only when stopping: nothing was acked, so the batch
        in hand is redelivered to the next run.
        """
        delay = _BACKOFF_START
        while True:
            try:
                value = await attempt()
            except StoreUnavailable as exc:
                if self.redis_ok or delay == _BACKOFF_START:
                    self.log.error("redis unavailable", extra={"operation": what, "error": exc.cause})
                self.redis_ok = False
                self.metrics.set_redis_up(False)
                if stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if not self.redis_ok:
                self.redis_ok = True
                self.metrics.set_redis_up(True)
                if delay != _BACKOFF_START:
                    self.log.info("redis available again", extra={"operation": what})
            return value

    async def _retry_bus_value(self, what: str, attempt: Callable[[], Awaitable[T]], stopping: asyncio.Event) -> T:
        delay = _BACKOFF_START
        while True:
            try:
                return await attempt()
            except Exception as exc:  # nats-py raises several unrelated types for "not now"
                self.log.error("nats operation failed", extra={"operation": what, "error": repr(exc)})
                if stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    async def _retry_bus(self, what: str, attempt: Callable[[], Awaitable[Any]], stopping: asyncio.Event) -> None:
        await self._retry_bus_value(what, attempt, stopping)


__all__ = ["PAUSE_AFTER_COMMIT_ENV", "IngestSettings", "Ingestor"]
