"""Orders taken for new without a read (`Ledger.missing(assume_new=True)` and APPLY_SCRIPT's `E`)
against a real Redis.

A call that expects an order to be new writes only when the order is not stored and retention
never purged it; otherwise it is refused (ASSUMED) with nothing written. Through the pipeline, a
feed's new orders need no read, and what is stored is what the same feed stores with every order
read; after a restart, a feed published again (its orders all stored already) has its assumption
refused, is read and applied again, and ends as it ends without assuming.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from tests.chaos import ChaosFeed
from tests.integration.redis_contents import trader_contents
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall, assumption_failed
from tradecache.dev.demo import build_demo_feed
from tradecache.errors import StoreRefused
from tradecache.ingest.intake import Delivery, Intake
from tradecache.ingest.pipeline import Pipeline
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger, StateRequest, StoredState, Write, WriteOp
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration
SERIALIZER = MsgPackSerializer(timestamps_as_str=True)


def appending(keys: Keys, order_id: str, event_id: str, sequence: int) -> ScriptCall:
    """One event appended to `order_id`, expected new, and the checkpoint."""
    call = ScriptCall()
    call.append_event(Write(WriteOp.APPEND, Collection.ORDERS, order_id), keys, event_id, f"{event_id}".encode())
    call.expect_new(keys, order_id)
    call.checkpoint(keys, sequence)
    return call


async def test_a_call_expecting_a_new_order_writes_only_when_it_is_neither_stored_nor_purged(
    redis_line_server: Any,
) -> None:
    """On each Redis line found (the script's behaviour is the server's)."""
    client = redis.asyncio.Redis.from_url(redis_line_server.url)
    keys = Keys("ASSUME-001")
    store = Store(client, keys, SERIALIZER)
    orders = keys.entity(Collection.ORDERS, "O-1")
    try:
        await client.delete(*[key async for key in client.scan_iter(match="trader-ASSUME-001:*")] or ["none"])
        assert await store.commit(appending(keys, "O-1", "e-1", 1)) == [1, 1, 1]
        assert await client.lrange(orders, 0, -1) == [b"e-1"]
        before = await trader_contents(client, "ASSUME-001")
        # Stored now: expecting it new is refused, and nothing of the call is written.
        with pytest.raises(StoreRefused) as stored:
            await store.commit(appending(keys, "O-1", "e-2", 2))
        assert assumption_failed(stored.value.cause), stored.value.cause
        assert "O-1" in stored.value.cause
        # Retention purged it (its list gone, its id in the purged set): refused too.
        await client.zadd(keys.purged(Collection.ORDERS), {"O-2": 1_700_000_000_000})
        with pytest.raises(StoreRefused) as purged:
            await store.commit(appending(keys, "O-2", "e-3", 3))
        assert assumption_failed(purged.value.cause), purged.value.cause
        await client.zrem(keys.purged(Collection.ORDERS), "O-2")
        assert await trader_contents(client, "ASSUME-001") == before
        # Any other refusal is not taken for one.
        assert not assumption_failed("CONFLICT tradecache: operation 1: id e-1 is already stored")
    finally:
        await client.aclose()


class CountingStore(Store):
    """Counts the stored-state reads (one round trip each)."""

    reads = 0

    async def read_state(self, request: StateRequest) -> StoredState:
        self.reads += 1
        return await super().read_state(request)


Replayed = tuple[dict[bytes, Any], CountingStore, list[Pipeline]]


async def replay(
    client: Any, trader: str, feed: list[tuple[Any, bytes]], *, assume_new: bool, again: bool, batch: int = 10
) -> Replayed:
    """`feed` through a pipeline in batches of `batch`; with `again`, a second pipeline with an empty
    memory (a restart) takes the whole feed once more, published anew after it."""
    keys, subjects = Keys(trader), Subjects("tradecache", trader)
    await client.delete(*[key async for key in client.scan_iter(match=f"trader-{trader}:*")] or ["none"])
    store = CountingStore(client, keys, SERIALIZER)
    intake = Intake(subjects, SERIALIZER, 1 << 20)
    pipelines: list[Pipeline] = []
    for round_ in range(2 if again else 1):
        pipeline = Pipeline(Ledger(TraderId(trader)), store, keys, SERIALIZER.serialize, intake=intake,
                            assume_new=assume_new)  # fmt: skip
        first = round_ * len(feed) + 1
        pipeline.checkpoint = first - 1
        deliveries = [
            Delivery(subjects.inbound_for(kind), payload, None, seq, seq, 0, 0, f"r{seq}")
            for seq, (kind, payload) in enumerate(feed, start=first)
        ]
        for start in range(0, len(deliveries), batch):
            await pipeline.run_deliveries(deliveries[start : start + batch])
        assert pipeline.checkpoint == first + len(feed) - 1
        pipelines.append(pipeline)
    return await trader_contents(client, trader), store, pipelines


async def read_then_assumed(url: str, trader: str, *, again: bool) -> tuple[Replayed, Replayed]:
    """One demo feed replayed with every order read, then with new orders taken for new."""
    client = redis.asyncio.Redis.from_url(url)
    feed = build_demo_feed(trader).payloads(SERIALIZER)
    try:
        read = await replay(client, trader, feed, assume_new=False, again=again)
        assumed = await replay(client, trader, feed, assume_new=True, again=again)
    finally:
        await client.aclose()
    return read, assumed


async def test_new_orders_need_no_read_and_are_stored_as_when_read(redis_server: Any) -> None:
    (read, read_store, _), (assumed, assumed_store, pipelines) = await read_then_assumed(
        redis_server.url, "ASSUME-002", again=False
    )
    assert assumed == read
    assert pipelines[0].assumptions_failed == 0
    # Every batch of the demo's opening orders read them before; now only what is not new is read.
    assert read_store.reads > 2 * assumed_store.reads, (read_store.reads, assumed_store.reads)


async def test_a_feed_published_again_after_a_restart_is_read_when_its_orders_are_stored(redis_server: Any) -> None:
    (read, _, _), (assumed, _, pipelines) = await read_then_assumed(redis_server.url, "ASSUME-003", again=True)
    assert assumed == read
    first, restarted = pipelines
    assert first.assumptions_failed == 0
    assert restarted.assumptions_failed >= 1  # its "new" orders were stored: read, applied again


async def test_a_long_history_published_again_costs_a_few_refused_calls_not_one_per_thousand(
    redis_server: Any,
) -> None:
    # 6,000 messages published again after a restart. After a refused assumption every order is
    # read for a while; refused again soon after, that while doubles (1,000, 2,000, 4,000
    # sequences): 3 refused calls, each resetting the ledger's memory, where a fixed 1,000 made 6.
    trader = "ASSUME-004"
    feed = [(message.kind, message.payload) for message in ChaosFeed(11, trader).messages(6000)]
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        read, _, _ = await replay(client, trader, feed, assume_new=False, again=True, batch=50)
        assumed, _, (first, restarted) = await replay(client, trader, feed, assume_new=True, again=True, batch=50)
    finally:
        await client.aclose()
    assert assumed == read
    assert first.assumptions_failed == 0
    assert restarted.assumptions_failed == 3
