"""The ingest loop: hold the lease, pull from JetStream, apply in stream order, commit, acknowledge.

Theory of operation. A daemon writes a trader only while it holds the trader's lease
(`ingest/lease.py`); until then it is a standby: not ready, pulling nothing, polling the lease.
Holding it, it reads the checkpoint, recovers what was delivered but not committed, and pulls
messages by hand (a request to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with a reply
inbox we subscribe to, FIELD-NOTES: 3-4x faster than nats-py's `fetch()`; each pull bounded in
messages and bytes). When to pull, when a batch is complete, when a pull is lost and when the
consumer sequence skipped are decided by `PullMachine` (`ingest/pull.py`, no I/O); this module
does the I/O it asks for. For each batch, in chunks of at most `commit_max_bytes` of payload:

1. every delivery is checked (`Intake`): size, subject, msgpack within the decode limits, fields;
2. the pipeline (`ingest/pipeline.py`) reads the stored state the chunk needs, applies it on the
   ledger in stream order (skipping what the checkpoint says was committed before a restart),
   publishes refusals to the dead-letter subject (each publish acknowledged), and commits all
   writes plus the checkpoint in one atomic script call fenced by the lease token; a message
   whose writes Redis refuses is pinned and dead-lettered (`store_refused`);
3. only then is the batch acknowledged (with AckPolicy.ALL one ack covers the batch).

A crash between 2 and 3 redelivers messages whose sequence is at or below the checkpoint: they
are acked without being applied again. When Redis or NATS is unavailable the step retries with
backoff and nothing is acked; readiness is false meanwhile. A failure nothing explains (a bug)
is retried the same way, never ending the process. `StallWatch` notices when work waits and
nothing is committed for `stall_seconds`, whatever the cause.

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
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import nats.js.errors

from tradecache.backoff import Backoff
from tradecache.bus import BusFault, classify_nats, describe_nats, reset_consumer
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.errors import BusUnavailable, LeaseLost, StoreRefused, StoreUnavailable
from tradecache.ingest.batch import BatchResult, duplicates
from tradecache.ingest.deadletter import DeadLetters
from tradecache.ingest.hooks import IngestHooks
from tradecache.ingest.inbox import InboxSubscription, subscribe_inbox
from tradecache.ingest.intake import Delivery, Intake, Refused
from tradecache.ingest.lease import Lease
from tradecache.ingest.pipeline import Committed, NotPinned, Pipeline
from tradecache.ingest.ports import IngestMetrics
from tradecache.ingest.pull import DeliverBatch, PullMachine, PullSettings, SendPull, Warn
from tradecache.ingest.watch import ConsumerView, StallWatch, StuckAcks
from tradecache.logs import LineBudget
from tradecache.model.ledger import Ledger
from tradecache.serialization.msgpack import MsgPackSerializer

T = TypeVar("T")

# A pull's byte limit must let the largest message through: JetStream ends a pull with
# "409 Message Size Exceeds MaxBytes" instead of delivering a message larger than it, for ever.
PULL_BYTES_OVER_MAX_PAYLOAD: Final = 8192
# How often a standby looks whether the lease is free (a graceful stop frees it at once).
LEASE_POLL_SECONDS: Final = 0.25
# A standby says who holds the trader at most this often.
STANDBY_LOG_SECONDS: Final = 60.0


@dataclass(frozen=True)
class IngestSettings:
    stream: str
    consumer: str
    batch_size: int
    fetch_expires: float
    open_orders_limit: int
    ack_all: bool  # the consumer uses AckPolicy.ALL: acking the last delivery acks the batch
    pull_max_bytes: int = 4 * 1024 * 1024
    commit_max_bytes: int = 2 * 1024 * 1024
    stall_seconds: float = 30.0
    consumer_poll_seconds: float = 5.0
    # The daemon created the consumer (create_streams): it may re-create it to clear stuck acks.
    manage_consumer: bool = True


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
        metrics: IngestMetrics,
        serializer: MsgPackSerializer,
        log: logging.Logger,
        lease: Lease | None = None,
        trader_id: str = "",
        hooks: IngestHooks | None = None,
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
        # "dead-lettered" and "position divergence" lines: 20 of each per 10 s, then a summary
        self._dead_letter_lines = LineBudget()
        self._divergence_lines = LineBudget()
        self._over_budget_lines = LineBudget(lines=1, window=60.0)  # memory over its budget: no summary
        self.lease = lease
        self.trader_id = trader_id
        self.keys: Keys = store.keys
        self.hooks = hooks or IngestHooks()
        self.pipeline = Pipeline(
            ledger,
            store,
            self.keys,
            serializer.serialize,
            call=self._retry_redis,
            dead_letter=self._publish_dead_letter,
            committed=self._committed,
            fence=self._fence,
            log=log,
            intake=intake,
            chunk_bytes=settings.commit_max_bytes,
            after_commit=self._after_commit,
        )
        # While a commit is in flight, the next batch (already arrived: a backlog's next pull was
        # asked for first) is checked ahead: decoding overlaps Redis running the script.
        self.pipeline.while_committing = self._check_ahead
        self.pending: int | None = None  # stream messages not yet delivered, as of the last batch
        self.commits = 0
        self.redis_ok = False
        self.bus_ok = True
        self.bound = False
        self.standby = False  # another daemon holds the trader's lease; this one waits
        self.lease_holder: str | None = None  # who holds it, while this one waits
        self.problem: str | None = None  # a failure being retried that nothing explains (a bug)
        self.activity = "starting"  # what the loop is doing now, for the stall log
        self.stall = StallWatch(settings.stall_seconds)
        self.stuck = StuckAcks(confirm_after=max(1.0, settings.consumer_poll_seconds))
        self._stuck_to_clear = 0
        self._stalled_logged = False
        self._lease_lost = False
        self._other_holder = False  # another daemon held the lease since this one lost it
        self._stopping = asyncio.Event()
        self.pull = PullMachine(self._pull_settings(4 * 1024 * 1024), "")
        self._arrived = asyncio.Event()
        # ... and once it is settled, applied ahead too (the pull machine is replaced on each start).
        self.pipeline.upcoming = lambda: self.pull.settled()
        self.pipeline.arrivals = self._arrived
        self._subscription: InboxSubscription | None = None

    @property
    def checkpoint(self) -> int:
        return self.pipeline.checkpoint

    @checkpoint.setter
    def checkpoint(self, value: int) -> None:
        self.pipeline.checkpoint = value

    # -- readiness -------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Holding the lease, consumer bound, Redis and NATS answering, no stall, no unexplained failure."""
        return (
            self.bound
            and self.redis_ok
            and self.bus_ok
            and self.problem is None
            and not self.stall.stalled(time.monotonic())
        )

    def stalled(self) -> bool:
        return self.bound and self.stall.stalled(time.monotonic())

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; the batch in hand is finished and acked first."""
        self._stopping = stopping
        while not stopping.is_set():
            if not await self._take_lease(stopping):
                return
            try:
                await self._run_holding(stopping)
            except LeaseLost as exc:
                self.log.error(
                    "lease lost: another sidecar now writes this trader; this one stops writing and waits",
                    extra={"trader_id": self.trader_id, "error": str(exc)},
                )
                self._forget_all()
                continue
            await self._release_lease()

    async def _take_lease(self, stopping: asyncio.Event) -> bool:
        """Wait (as a standby) until this daemon holds the trader's lease; False when stopping."""
        lease = self.lease
        if lease is None:
            return True
        self.activity = "waiting for the trader's lease"
        logged_at = 0.0
        while not stopping.is_set():
            if await self._retry_redis("take the lease", lease.acquire):
                if self.standby:
                    self.log.warning("lease taken over: this sidecar now writes the trader",
                                     extra={"trader_id": self.trader_id})  # fmt: skip
                else:
                    self.log.info("lease taken", extra={"trader_id": self.trader_id, "ttl": lease.ttl})
                self.standby = False
                self._lease_lost = False
                self.metrics.set_lease(held=True, standby=False)
                return True
            try:
                holder = await self._retry_redis("read the lease", lease.holder)
            except StoreRefused as exc:  # not a string: someone else's key; the fence refuses it too
                self.log.error("the lease key cannot be read", extra={"key": lease.key, "error": exc.cause})
                holder = None
            self.lease_holder = None if holder is None else holder.name
            if not self.standby or time.monotonic() - logged_at >= STANDBY_LOG_SECONDS:
                logged_at = time.monotonic()
                self.log.warning(
                    "another sidecar holds this trader: waiting as a standby (not ready, pulling nothing) "
                    "until it stops or its lease expires",
                    extra={"trader_id": self.trader_id, "holder": None if holder is None else holder.name,
                           "lease_expires_in": None if holder is None else holder.expires_in},
                )  # fmt: skip
            self.standby = True
            self._other_holder = True
            self.metrics.set_lease(held=False, standby=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=LEASE_POLL_SECONDS)
        return False

    async def _release_lease(self) -> None:
        if self.lease is None or not self.lease.held:
            return
        try:
            await self.lease.release()
            self.log.info("lease released", extra={"trader_id": self.trader_id})
        except StoreUnavailable as exc:  # it expires by itself
            self.log.warning("lease not released (it expires by itself)", extra={"error": str(exc)})
        self.metrics.set_lease(held=False, standby=False)

    def _forget_all(self) -> None:
        """After losing the lease: nothing in memory can be trusted any more."""
        self._other_holder = False
        self.pipeline.forget_ahead()
        self.ledger.reset()
        self.checkpoint = 0
        self.pull.restart(None)
        self.bound = False
        self.metrics.set_lease(held=False, standby=False)

    async def _run_holding(self, stopping: asyncio.Event) -> None:
        self.activity = "reading the checkpoint"
        self.checkpoint = await self._retry_redis("read checkpoint", self.store.read_checkpoint)
        self._settle_unconfirmed()
        inbox = self.nc.new_inbox()
        self.pull = PullMachine(self._pull_settings(self._pull_bytes()), inbox)
        self._subscription = await self._retry_bus(
            "subscribe", lambda: subscribe_inbox(self.nc, f"{inbox}.*", self._on_message)
        )
        keeper = asyncio.create_task(self._keep_lease(stopping))
        watcher = asyncio.create_task(self._watch_consumer(stopping))
        try:
            await self._recover(stopping)
            self.bound = True
            self.log.info("ingest started", extra={"checkpoint": self.checkpoint, "stream": self.settings.stream})
            # When stopping, no new pull is asked for; the one outstanding ends within fetch_expires.
            while not self.pull.finished:
                if self._lease_lost:
                    raise LeaseLost("keep the lease", "it was not ours any more when renewed")
                if self._stuck_to_clear and not self.pull.queued:
                    await self._clear_stuck_acks()
                self.activity = "pulling"
                batch = await self._next_batch(stopping)
                if batch is not None:
                    try:
                        await self._process_batch(batch, stopping)
                    finally:
                        self.pull.processed(time.monotonic())
        finally:
            self.bound = False
            for task in (keeper, watcher):
                task.cancel()
            await asyncio.gather(keeper, watcher, return_exceptions=True)
            if self._subscription is not None:
                with contextlib.suppress(Exception):
                    await self._subscription.unsubscribe()

    def _settle_unconfirmed(self) -> None:
        """Count a commit whose answer was lost with the lease, if the checkpoint shows it made.

        Its messages are at or below the checkpoint now, so they are skipped from here on: without
        this, what it wrote would be counted by nobody. Unless another daemon held the lease in
        between (it may have written them, and counted them itself).
        """
        unconfirmed = self.pipeline.take_unconfirmed(self.checkpoint)
        if unconfirmed is None or self._other_holder:
            return
        self.log.info("a commit whose answer was lost with the lease had been made: counted now",
                      extra={"last_seq": unconfirmed.result.last_seq, "checkpoint": self.checkpoint})  # fmt: skip
        self._record(unconfirmed.result, unconfirmed.results, None)

    def _on_message(self, subject: str, reply: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        self.pull.arrived_parts(subject, reply, data, headers)
        self._arrived.set()

    async def _keep_lease(self, stopping: asyncio.Event) -> None:
        """Renew the lease every third of its ttl while holding it."""
        lease = self.lease
        if lease is None:
            return
        interval = lease.ttl / 3
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
            if stopping.is_set():
                return
            try:
                if not await lease.renew():
                    self._lease_lost = True
                    self.log.error("the lease was taken by another sidecar", extra={"trader_id": self.trader_id})
                    return
            except StoreUnavailable as exc:  # the fence guards writes meanwhile
                self.log.warning("lease not renewed: Redis unavailable", extra={"error": exc.cause})

    # -- watching the consumer: stall, ack pending, redeliveries, stuck acks ------------------

    async def _watch_consumer(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                info = await asyncio.wait_for(self._consumer_info(), timeout=max(1.0, self.settings.fetch_expires * 4))
            except Exception as exc:  # NATS down or slow: no sample this time (the loop says why)
                self.log.debug("consumer info not read", extra={"error": describe_nats(exc)})
            else:
                self._observe(ConsumerView.of(info))
            self._check_stall()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.settings.consumer_poll_seconds)

    def _observe(self, view: ConsumerView) -> None:
        now = time.monotonic()
        self.stall.observed(view, now)
        self.metrics.set_consumer(view.undelivered, view.ack_pending, view.redelivered, view.stuck)
        stuck = self.stuck.observed(view, now)
        if stuck and not self._stuck_to_clear:
            self._stuck_to_clear = stuck
            self.log.warning(
                "acks stuck at the server: messages pending below the consumer's ack floor",
                extra={"stuck": stuck, "ack_floor": view.ack_floor_seq, "consumer": self.settings.consumer},
            )

    def _check_stall(self) -> None:
        now = time.monotonic()
        stalled = self.bound and self.stall.stalled(now)
        if stalled and not self._stalled_logged:
            view = self.stall.view
            self.log.error(
                "ingest stalled: messages are waiting and nothing was committed",
                extra={"seconds": round(self.stall.idle_for(now), 1), "doing": self.activity,
                       "undelivered": None if view is None else view.undelivered,
                       "ack_pending": None if view is None else view.ack_pending,
                       "redis_ok": self.redis_ok, "nats_ok": self.bus_ok, "problem": self.problem},
            )  # fmt: skip
        elif not stalled and self._stalled_logged:
            self.log.info("ingest no longer stalled")
        self._stalled_logged = stalled

    async def _clear_stuck_acks(self) -> None:
        """Re-create the consumer from the checkpoint on: the only way to drop acks nats-server ignores.

        It starts at the checkpoint itself, a message already committed: delivered again, skipped
        and acked, it moves the new consumer's ack floor to the checkpoint (a fresh consumer reports
        a floor of 0 until its first ack, which monitoring would read as everything unacked).
        """
        stuck, self._stuck_to_clear = self._stuck_to_clear, 0
        self.stuck.cleared()
        if not (self.settings.manage_consumer and self.settings.ack_all):
            self.log.error(
                "acks stuck at the server and the consumer is managed elsewhere: re-create it to clear them",
                extra={"stuck": stuck, "consumer": self.settings.consumer},
            )
            return
        self.activity = "re-creating the consumer to clear stuck acks"
        try:
            await reset_consumer(self.js, self.settings.stream, self.settings.consumer, max(1, self.checkpoint))
        except Exception as exc:  # tried again when next seen
            self.log.error("could not re-create the consumer", extra={"error": describe_nats(exc)})
            return
        self.pull.restart(0)  # the new consumer counts deliveries from 1
        self.metrics.stuck_acks_cleared(stuck)
        self.log.warning(
            "stuck acks cleared: consumer re-created from the checkpoint",
            extra={"stuck": stuck, "start_seq": max(1, self.checkpoint)},
        )

    # -- recovering the order after a crash or a lost delivery ------------------------------

    async def _recover(self, stopping: asyncio.Event) -> None:
        """Apply what the consumer delivered beyond the checkpoint before a restart."""
        self.activity = "recovering delivered but uncommitted messages"
        info = await self._retry_bus("consumer info", self._consumer_info)
        self.pull.restart(int(info.delivered.consumer_seq))
        delivered = int(info.delivered.stream_seq)
        if delivered > self.checkpoint:
            self.log.info("recovering delivered but uncommitted messages", extra={"from": self.checkpoint + 1,
                                                                                   "to": delivered})  # fmt: skip
            await self._fill_gap(delivered + 1, stopping)

    async def _consumer_info(self) -> Any:
        return await self.js.consumer_info(self.settings.stream, self.settings.consumer)

    async def _stream_message(self, seq: int) -> Any:
        """The trader's first message at or after `seq` (None: none)."""

        async def get() -> Any:
            try:
                return await self.js.get_msg(self.settings.stream, seq, subject=self.filter_subject, next=True)
            except nats.js.errors.NotFoundError:
                return None

        return await self._retry_bus("read the stream", get)

    async def _fill_gap(self, before_seq: int, stopping: asyncio.Event) -> None:
        """Read and apply, in order, this consumer's messages after the checkpoint and before `before_seq`."""
        seq = self.checkpoint + 1
        gap: list[Delivery] = []
        while seq < before_seq:
            raw = await self._stream_message(seq)
            if raw is None or raw.seq is None or raw.seq >= before_seq:
                break
            timestamp = int(raw.time.timestamp() * 1e9) if raw.time else time.time_ns()
            gap.append(Delivery(raw.subject or "", raw.data or b"", raw.headers, raw.seq, 0, timestamp, 0, ""))
            seq = raw.seq + 1
            if len(gap) >= self.settings.batch_size or sum(len(d.data) for d in gap) >= self.settings.pull_max_bytes:
                await self._process_safely(gap, stopping, ack=False)
                gap = []
        if gap:
            await self._process_safely(gap, stopping, ack=False)

    # -- pulling: the I/O `PullMachine` asks for -------------------------------------------

    def _pull_settings(self, max_bytes: int) -> PullSettings:
        settings = self.settings
        return PullSettings(settings.stream, settings.consumer, settings.batch_size, settings.fetch_expires, max_bytes)

    def _pull_bytes(self) -> int:
        return max(self.settings.pull_max_bytes, int(self.nc.max_payload) + PULL_BYTES_OVER_MAX_PAYLOAD)

    async def _next_batch(self, stopping: asyncio.Event) -> DeliverBatch | None:
        """Send the pulls the machine asks for and wait until it hands over a batch (None: finished)."""
        machine = self.pull
        while True:
            if stopping.is_set():
                machine.stop()
            self._arrived.clear()
            for action in machine.poll(time.monotonic()):
                if isinstance(action, SendPull):
                    await self._send_pull(action)
                elif isinstance(action, Warn):
                    self.log.warning(action.message, extra=action.fields)
                else:
                    return action
            if machine.finished:
                return None
            wake = machine.wake_at()
            timeout = None if wake is None else wake - time.monotonic()
            if timeout is not None and timeout <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=timeout)

    async def _send_pull(self, pull: SendPull) -> None:
        try:
            await self.nc.publish(pull.subject, pull.payload, reply=pull.reply)
        except Exception as exc:  # disconnected: nats-py reconnects by itself; the machine asks again shortly
            self.log.warning("pull request failed", extra={"error": describe_nats(exc)})
            self.pull.pull_failed(time.monotonic())

    async def _process_batch(self, batch: DeliverBatch, stopping: asyncio.Event) -> None:
        for _ in range(batch.redelivered):
            self.metrics.redelivery()
        if batch.gap_before is not None:
            # Deliveries were lost in flight: apply the gap from the stream first.
            await self._fill_gap(batch.gap_before, stopping)
        await self._process_safely(batch.deliveries, stopping)
        self.pending = batch.pending
        self.metrics.set_pending(batch.pending)

    # -- processing ------------------------------------------------------------------------

    async def _process_safely(self, deliveries: list[Delivery], stopping: asyncio.Event, *, ack: bool = True) -> None:
        """`_process`, retried when it fails for a reason nothing explains: never ending the process.

        A bug or a refusal no message explains would otherwise stop the sidecar on every restart
        at the same message. Nothing is acked until the batch succeeds; readiness is false and the
        error is logged meanwhile, so the stall alert fires if it never does.
        """
        backoff = Backoff()
        while True:
            try:
                await self._process(deliveries, stopping, ack=ack)
            except (StoreUnavailable, BusUnavailable, LeaseLost, asyncio.CancelledError):
                raise
            except Exception as exc:  # see the docstring
                self.problem = f"{type(exc).__name__}: {exc}"
                self.log.error(
                    "ingest failed for a reason no message explains; retrying the batch",
                    exc_info=not isinstance(exc, NotPinned),
                    extra={"error": self.problem, "first_seq": deliveries[0].stream_seq},
                )
                self.ledger.reset()
                if stopping.is_set():
                    return  # nothing acked: redelivered to the next run
                await asyncio.sleep(backoff.next())
                continue
            if self.problem is not None:
                self.log.info("ingest recovered", extra={"after": self.problem})
                self.problem = None
            return

    async def _process(self, deliveries: list[Delivery], stopping: asyncio.Event, *, ack: bool = True) -> None:
        self.stall.in_hand(True, time.monotonic())
        self.activity = "applying and committing a batch"
        await self.pipeline.run_deliveries(deliveries, ack=self._ack if ack else None)
        self.ledger.evict(self.settings.open_orders_limit)
        budget = self.ledger.budget
        self.metrics.set_memory(budget.total)
        if budget.excess and self._over_budget_lines.allow(time.monotonic()):
            largest = budget.largest()
            self.log.warning(
                "entities in use exceed ingest.memory_budget_bytes: they are kept while batches use them, "
                "then evicted and read back whole when needed again (ingest waits meanwhile); raise the budget",
                extra={"estimated_bytes": budget.total, "budget_bytes": budget.limit,
                       "largest": None if largest is None else ":".join(largest[0]),
                       "largest_bytes": None if largest is None else largest[1]},
            )  # fmt: skip
        self.metrics.batch(len(deliveries))
        self.stall.in_hand(False, time.monotonic())
        self.stall.committed(time.monotonic())

    def _fence(self) -> str | None:
        """The lease token every commit is fenced with. A lease found lost (a renewal saw another
        holder) has no token: the commit must not go out unfenced, so the loop drops what it holds."""
        if self.lease is None:
            return None
        token = self.lease.token
        if token is None:
            raise LeaseLost("commit", "the lease was lost before the commit")
        return token

    def _check_ahead(self) -> None:
        batch_size = self.settings.batch_size
        self.pipeline.check_ahead(self.pull.peek(batch_size), 2 * batch_size)

    async def _after_commit(self) -> None:
        if self.hooks.after_commit is not None:
            await self.hooks.after_commit(self.commits)

    async def _publish_dead_letter(self, refused: Refused) -> None:
        self.activity = "publishing a dead letter"
        await self._retry_bus("publish dead letter", lambda: self.dead_letters.publish(refused))

    def _committed(self, committed: Committed) -> None:
        self.commits += 1
        self.stall.committed(time.monotonic())
        self._record(committed.result, committed.results, committed.seconds)

    async def _ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge the batch. A lost ack only means a redelivery, which the checkpoint skips."""
        try:
            if self.settings.ack_all:
                # AckPolicy.ALL acks every delivery up to this consumer sequence.
                last = max(deliveries, key=lambda d: d.consumer_seq)
                await self.nc.publish(last.reply, b"+ACK")
            else:
                for delivery in deliveries:
                    await self.nc.publish(delivery.reply, b"+ACK")
        except Exception as exc:  # disconnected or a full buffer
            self.log.warning("ack not sent; the batch will be redelivered and skipped", extra={
                "error": describe_nats(exc)})  # fmt: skip

    def _record(self, result: BatchResult, results: list[int], seconds: float | None) -> None:
        """Metrics of one commit, aggregated: one increment per series, lags observed in bulk."""
        metrics = self.metrics
        now_ns = time.time_ns()
        # Whole-batch passes rather than one loop doing everything per message (1.5 -> 1.1 us of
        # CPU per message): the counting and the splitting by kind are done by C code, and a
        # kind's name is read once per kind, not once per message.
        items = [applied.item for applied in result.applied]
        kinds = [item.kind for item in items]
        flags = duplicates(result, results)
        tallies = collections.Counter(zip(kinds, [item.type_name for item in items], flags, strict=True))
        counts: collections.Counter[tuple[str, str, str]] = collections.Counter(
            {(kind.value, type_name, "duplicate" if duplicate else "written"): n
             for (kind, type_name, duplicate), n in tallies.items()}
        )  # fmt: skip
        for refused in result.refused:
            counts[(refused.kind, refused.type_name, "dead_lettered")] += 1
        metrics.count_events(counts)
        lags = [lag if (lag := (now_ns - item.delivery.timestamp_ns) / 1e9) > 0.0 else 0.0 for item in items]
        distinct = dict.fromkeys(kinds)  # in the order they first came
        for kind in distinct:
            mine = lags if len(distinct) == 1 else list(itertools.compress(lags, [k is kind for k in kinds]))
            metrics.event_lags(kind.value, mine)
        if seconds is not None:  # not known for a commit whose answer was lost
            metrics.commit_duration({kind.value for kind in distinct}, seconds)  # once per commit, not per kind
        now = time.monotonic()
        # Past a budget's lines the metrics (and the dead-letter stream) still have each one.
        self._tell_held(self._dead_letter_lines, now, "more messages dead-lettered than logged one by one", "by_reason")
        self._tell_held(self._divergence_lines, now, "more position divergences than logged one by one", "by_event")
        for refused in result.refused:
            reason = refused.error.reason.value
            metrics.dead_letter(reason)
            if self._dead_letter_lines.allow(now, reason):
                self.log.warning(
                    "dead-lettered",
                    extra={
                        "reason": reason,
                        "error": str(refused.error),
                        "subject": refused.delivery.subject,
                        "stream_seq": refused.delivery.stream_seq,
                    },
                )
        for divergence in result.divergences:
            metrics.divergence()
            if self._divergence_lines.allow(now, divergence.event_type):
                self.log.warning(
                    "position divergence",
                    extra={
                        "position_id": divergence.position_id,
                        "event": divergence.event_type,
                        "differences": list(divergence.differences),
                    },
                )

    def _tell_held(self, lines: LineBudget, now: float, message: str, by: str) -> None:
        """One line for the lines `lines` held back in its window that is over, if any."""
        held = lines.due(now)
        if held:
            self.log.warning(message, extra={"count": sum(held.values()), by: held, "window_seconds": lines.window})

    # -- retries ---------------------------------------------------------------------------

    async def _retry_redis(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry a Redis operation until it succeeds; readiness is false meanwhile.

        Gives up (raising StoreUnavailable) only when stopping: nothing was acked, so the batch
        in hand is redelivered to the next run.
        """
        backoff = Backoff()
        while True:
            try:
                value = await attempt()
            except StoreUnavailable as exc:
                if self.redis_ok or not backoff.failing:
                    self.log.error("redis unavailable", extra={"operation": what, "error": exc.cause})
                self.redis_ok = False
                self.metrics.set_redis_up(False)
                if self._stopping.is_set():
                    raise
                self.activity = f"waiting for Redis ({what})"
                await asyncio.sleep(backoff.next())
                continue
            if not self.redis_ok:
                self.redis_ok = True
                self.metrics.set_redis_up(True)
                if backoff.failing:
                    self.log.info("redis available again", extra={"operation": what})
            return value

    async def _retry_bus(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry a NATS operation while NATS cannot do it now; readiness is false meanwhile."""
        backoff = Backoff()
        while True:
            try:
                value = await attempt()
            except Exception as exc:  # classified just below; nats-py raises many unrelated types
                unavailable = isinstance(exc, BusUnavailable) or classify_nats(exc) == BusFault.UNAVAILABLE
                if not unavailable:
                    raise
                if self.bus_ok or not backoff.failing:
                    error = exc.cause if isinstance(exc, BusUnavailable) else describe_nats(exc)
                    self.log.error("nats operation failed", extra={"operation": what, "error": error})
                self.bus_ok = False
                if self._stopping.is_set():
                    raise
                self.activity = f"waiting for NATS ({what})"
                await asyncio.sleep(backoff.next())
                continue
            if not self.bus_ok:
                self.bus_ok = True
                self.log.info("nats operation succeeded again", extra={"operation": what})
            return value


__all__ = ["IngestSettings", "Ingestor"]
