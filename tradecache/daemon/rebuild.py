"""`tradecache rebuild`: re-create one trader's Redis state from the JetStream stream (disaster recovery).

After Redis lost a trader's data, everything the node ever published is still in the stream (as
far as its retention keeps it). Rebuild reads the trader's subjects from the first sequence with
an ephemeral consumer and applies every message through the same path as the daemon (intake
checks, the ledger, one atomic script call per batch with the checkpoint), so the result is what
the daemon had written, checkpoint included; the daemon then resumes after it.

Guards: it refuses while a sidecar for the trader answers on NATS or holds the trader's lease
(two writers would race; it holds the lease itself while it writes, so a sidecar started
meanwhile waits), when Redis already holds state for the trader (unless `flush`), and when the
stream no longer starts at sequence 1 (unless `allow_partial`): a silent partial rebuild would
look complete.
Messages refused by the checks were dead-lettered when first consumed; they are counted here,
not dead-lettered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tradecache.bus import connect
from tradecache.cache.aio import Store
from tradecache.cache.database import RedisCacheDatabase
from tradecache.cache.keys import Keys
from tradecache.config import Config
from tradecache.daemon.app import GC_YOUNG_THRESHOLD, decode_limits, nats_options, redis_client
from tradecache.errors import LeaseLost, RebuildRefused, TradecacheError
from tradecache.ingest.batch import duplicates
from tradecache.ingest.inbox import subscribe_inbox
from tradecache.ingest.intake import Intake
from tradecache.ingest.lease import Lease, holder_name
from tradecache.ingest.pipeline import Committed, Pipeline
from tradecache.ingest.pull import DeliverBatch, PullMachine, PullSettings, SendPull
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Ledger
from tradecache.serialization.msgpack import MsgPackSerializer
from tradecache.service.server import SERVICE_NAME
from tradecache.wire import Subjects

FETCH_TIMEOUT = 2.0


@dataclass
class RebuildReport:
    messages: int = 0
    written: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    first_seq: int = 0
    last_seq: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        refused = ", ".join(f"{reason} {count}" for reason, count in sorted(self.refused.items())) or "none"
        return (
            f"rebuilt from stream sequences {self.first_seq}..{self.last_seq}: {self.messages} messages "
            f"({self.written} applied, {self.duplicates} duplicates, refused: {refused}) in {self.seconds:.2f} s"
        )


async def _sidecar_running(nc: Any, trader_id: str) -> bool:
    """Whether a tradecache service for this trader answers `$SRV.INFO` (collected for 0.5 s)."""
    inbox = nc.new_inbox()
    found = asyncio.Event()

    async def on_info(msg: Any) -> None:
        try:
            info = json.loads(msg.data)
        except ValueError:
            return
        if (info.get("metadata") or {}).get("trader_id") == trader_id:
            found.set()

    subscription = await nc.subscribe(inbox, cb=on_info)
    await nc.publish(f"$SRV.INFO.{SERVICE_NAME}", b"", reply=inbox)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(found.wait(), timeout=0.5)
    await subscription.unsubscribe()
    return found.is_set()


async def rebuild(config: Config, *, flush: bool, allow_partial: bool, log: logging.Logger) -> RebuildReport:
    """Re-create the trader's state from the stream. Raises RebuildRefused (nothing written)."""
    subjects = Subjects(config.nats.subject_prefix, config.trader_id)
    keys = Keys(config.trader_id, hash_tag=config.redis.cluster, layout=config.redis.layout)
    serializer = MsgPackSerializer(timestamps_as_str=True)
    nc = await connect(nats_options(config), log=log)
    client = redis_client(config)
    try:
        if await _sidecar_running(nc, config.trader_id):
            raise RebuildRefused(
                f"a tradecache sidecar for trader {config.trader_id} is running; stop it first (two writers would race)"
            )
        js = nc.jetstream()
        stream = config.nats.stream
        info = await js.stream_info(stream)
        if info.state.first_seq > 1 and not allow_partial:
            raise RebuildRefused(
                f"stream {stream} starts at sequence {info.state.first_seq}: messages before it are gone "
                "(retention), so the rebuild would be partial; pass --allow-partial to rebuild what remains"
            )
        store = Store(client, keys, serializer)
        lease = Lease(client, keys, config.ingest.lease_ttl, name=f"tradecache rebuild ({holder_name()})")
        if not await lease.acquire():
            holder = await lease.holder()
            raise RebuildRefused(
                f"a tradecache sidecar holds trader {config.trader_id} ({holder.name if holder else 'gone now'}); "
                "stop it first (two writers would race)"
            )
        try:
            return await _guarded(nc, js, stream, subjects, store, keys, serializer, config, log, lease, flush=flush)
        finally:
            await lease.release()
    finally:
        await client.aclose()
        await nc.close()


async def _guarded(
    nc: Any,
    js: Any,
    stream: str,
    subjects: Subjects,
    store: Store,
    keys: Keys,
    serializer: MsgPackSerializer,
    config: Config,
    log: logging.Logger,
    lease: Lease,
    *,
    flush: bool,
) -> RebuildReport:
    """The state checks, the flush, and the replay, while holding the lease (renewed meanwhile)."""
    keeper = asyncio.create_task(_keep(lease))
    try:
        await store.ensure_indexes()  # a Redis another writer filled counts as holding state too
        existing = await store.read_checkpoint()
        counts = await store.key_counts()
        if (existing or any(counts.values())) and not flush:
            raise RebuildRefused(
                f"Redis already holds state for trader {config.trader_id} (checkpoint {existing}, "
                f"{sum(counts.values())} entities); pass --flush to delete it and rebuild"
            )
        if flush:
            database = RedisCacheDatabase(TraderId(config.trader_id), log, serializer, config.redis.cache_config())
            await asyncio.to_thread(database.flush)  # SCAN + UNLINK: the lease goes too, so take it again
            database.close()
            if not await lease.acquire():
                raise RebuildRefused(f"a tradecache sidecar took trader {config.trader_id} during the flush")
        return await _replay(nc, js, stream, subjects, store, keys, serializer, config, log, lease)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def _keep(lease: Lease) -> None:
    while True:
        await asyncio.sleep(lease.ttl / 3)
        with contextlib.suppress(TradecacheError):
            await lease.renew()


@contextlib.contextmanager
def _bulk_gc() -> Iterator[None]:
    """The cyclic GC as a bulk replay wants it: what exists before it (modules, classes, config)
    left out of its full collections (`gc.freeze`, as the daemon does at start), and the youngest
    generation collected less often (`GC_YOUNG_THRESHOLD`). As it was, after."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _replay(
    nc: Any,
    js: Any,
    stream: str,
    subjects: Subjects,
    store: Store,
    keys: Keys,
    serializer: MsgPackSerializer,
    config: Config,
    log: logging.Logger,
    lease: Lease,
) -> RebuildReport:
    with _bulk_gc():
        return await _replay_all(nc, js, stream, subjects, store, keys, serializer, config, log, lease)


async def _replay_all(
    nc: Any,
    js: Any,
    stream: str,
    subjects: Subjects,
    store: Store,
    keys: Keys,
    serializer: MsgPackSerializer,
    config: Config,
    log: logging.Logger,
    lease: Lease,
) -> RebuildReport:
    report = RebuildReport()
    started = time.perf_counter()
    intake = Intake(subjects, serializer, config.ingest.max_payload_bytes, decode_limits(config))
    ledger = Ledger(TraderId(config.trader_id), memory_budget=config.ingest.memory_budget_bytes)
    # The guards found no state for the trader (or flushed it), and the lease keeps other writers
    # out: what the ledger never wrote is not stored, so new orders need no read.
    ledger.assume_empty_store()

    def count(committed: Committed) -> None:
        flags = duplicates(committed.result, committed.results)
        report.duplicates += sum(flags)
        report.written += len(flags) - sum(flags)
        for refused in committed.result.refused:
            report.refused[refused.error.reason.value] += 1

    def fence() -> str:
        if lease.token is None:  # a renewal found it lost: never write unfenced
            raise LeaseLost("rebuild", "the lease was lost while rebuilding")
        return lease.token

    pipeline = Pipeline(
        ledger, store, keys, serializer.serialize, committed=count, fence=fence, log=log, intake=intake,
        chunk_bytes=config.ingest.commit_max_bytes,
    )  # fmt: skip
    # An ephemeral consumer read with the daemon's own pull machine (not nats-py's fetch(), which
    # costs ~40 us a message): the next pull is on its way while a batch is applied.
    name = f"tradecache-rebuild-{uuid.uuid4().hex[:12]}"
    consumer = ConsumerConfig(
        name=name, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=60.0,
        max_ack_pending=-1, filter_subject=subjects.inbound,
    )  # fmt: skip
    await js.add_consumer(stream, config=consumer)
    inbox = nc.new_inbox()
    settings = PullSettings(stream, name, config.ingest.batch_size, FETCH_TIMEOUT, config.ingest.pull_max_bytes)
    machine = PullMachine(settings, inbox)
    arrived = asyncio.Event()

    def on_message(subject: str, reply: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        machine.arrived_parts(subject, reply, data, headers)
        arrived.set()

    # Each delivery handed over as nats-py parses it, as the daemon's inbox (`ingest/inbox.py`).
    subscription = await subscribe_inbox(nc, f"{inbox}.*", on_message)
    batch_size = config.ingest.batch_size
    # As the daemon does: while a commit is in flight, the next batch (arrived) is checked ahead,
    # and once it is settled, applied ahead too (`Pipeline.upcoming`, see `ingest/pipeline.py`).
    pipeline.while_committing = lambda: pipeline.check_ahead(machine.peek(batch_size), 2 * batch_size)
    pipeline.upcoming = machine.settled
    pipeline.arrivals = arrived
    idle_since = time.monotonic()
    try:
        while True:
            batch = None
            arrived.clear()
            for action in machine.poll(time.monotonic()):
                if isinstance(action, SendPull):
                    await nc.publish(action.subject, action.payload, reply=action.reply)
                elif isinstance(action, DeliverBatch):
                    batch = action
                else:
                    log.warning(action.message, extra=action.fields)
            if batch is None:
                if time.monotonic() - idle_since > FETCH_TIMEOUT:
                    # Nothing came in time: done only if the consumer has nothing left (a busy
                    # server can be slow to answer, and stopping early would rebuild part of it).
                    if (await js.consumer_info(stream, name)).num_pending == 0:
                        break
                    idle_since = time.monotonic()
                wake = machine.wake_at()
                timeout = FETCH_TIMEOUT if wake is None else max(0.0, wake - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout=min(timeout, FETCH_TIMEOUT))
                continue
            if batch.gap_before is not None:
                raise RebuildRefused(
                    "deliveries were lost in flight (a NATS reconnect?), so this rebuild is incomplete; "
                    "run it again with --flush"
                )
            deliveries = batch.deliveries
            await pipeline.run_deliveries(deliveries)  # the daemon's pipeline; nothing to ack (AckPolicy.NONE)
            machine.processed(time.monotonic())
            idle_since = time.monotonic()
            report.messages += len(deliveries)
            report.first_seq = report.first_seq or min(d.stream_seq for d in deliveries)
            report.last_seq = pipeline.checkpoint
            checkpoint = pipeline.checkpoint
            ledger.evict(config.ingest.open_orders_limit)
            if report.messages % 10_000 < len(deliveries):
                log.info("rebuilding", extra={"messages": report.messages, "sequence": checkpoint})
            if batch.pending == 0:
                break  # the trader's last message so far
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["RebuildRefused", "RebuildReport", "rebuild"]
