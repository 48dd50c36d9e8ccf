"""A commit carried out twice stores what it stores once, on a real Redis.

The pipeline retries a commit whose answer did not come (a connection lost, a Redis killed
between its AOF fsync and its reply): Redis may have run it already. Every operation of the
apply script must then leave the store as one run did. The one that did not: a position's
closed cycle (`Y`) names its fill by its place in the position's list, counted from the list's
length; run again, that length includes fills the call appended after it (the position opened
again later in the same batch), and a second, wrong member was added to the closed set.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from tests.chaos import ChaosFeed
from tests.integration.redis_contents import trader_contents
from tradecache.cache.aio import Store
from tradecache.cache.keys import Keys
from tradecache.cache.plan import ScriptCall, cycle_member
from tradecache.ingest.intake import Delivery, Intake
from tradecache.ingest.pipeline import Pipeline
from tradecache.model.identifiers import TraderId
from tradecache.model.ledger import Collection, Ledger, Mark, Write, WriteOp
from tradecache.serialization import MsgPackSerializer
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration
SERIALIZER = MsgPackSerializer(timestamps_as_str=True)


async def clear(client: Any, trader: str) -> None:
    await client.delete(*[key async for key in client.scan_iter(match=f"trader-{trader}:*")] or ["none"])


def closing_then_reopening(keys: Keys, sequence: int) -> ScriptCall:
    """Fill f-1 closes P-1's cycle (it is its first fill), f-2 opens it again, in one call."""
    call = ScriptCall()
    for event_id in ("f-1", "f-2"):
        write = Write(WriteOp.APPEND, Collection.POSITIONS, "P-1")
        call.append_event(write, keys, event_id, event_id.encode())
        if event_id == "f-1":
            call.closed(Mark(Collection.POSITIONS, "P-1", True, "f-1", 0), keys)
    call.checkpoint(keys, sequence)
    return call


async def test_a_closed_cycle_is_marked_once_when_its_call_runs_twice(redis_line_server: Any) -> None:
    """On each Redis line found (the script's behaviour is the server's)."""
    client = redis.asyncio.Redis.from_url(redis_line_server.url)
    keys = Keys("RETRY-001")
    store = Store(client, keys, SERIALIZER)
    closed = keys.closed(Collection.POSITIONS)
    try:
        await clear(client, "RETRY-001")
        await store.commit(closing_then_reopening(keys, 1))
        once = await trader_contents(client, "RETRY-001")
        assert await client.zrange(closed, 0, -1) == [cycle_member("P-1", 1, "f-1").encode()]
        await store.commit(closing_then_reopening(keys, 1))  # the same call, its answer lost
        assert await client.zrange(closed, 0, -1) == [cycle_member("P-1", 1, "f-1").encode()]
        assert await trader_contents(client, "RETRY-001") == once
    finally:
        await client.aclose()


class RunningTwice(Store):
    """Every commit carried out twice, as when the first one's answer is lost and it is retried."""

    async def commit(self, call: ScriptCall) -> list[int]:
        results = await super().commit(call)
        await super().commit(call)
        return results


async def through_pipeline(client: Any, store: Store, trader: str, batch: int) -> dict[bytes, Any]:
    """A chaos feed (positions closing and flipping through zero, in batches of `batch`)."""
    await clear(client, trader)
    keys, subjects = Keys(trader), Subjects("tradecache", trader)
    feed = ChaosFeed(7, trader).messages(600)
    # Orders read, not taken for new: a second run of a call expecting new orders is refused as
    # a whole (and the batch applied again), which is another test's (test_assumed_orders).
    pipeline = Pipeline(Ledger(TraderId(trader)), store, keys, SERIALIZER.serialize,
                        intake=Intake(subjects, SERIALIZER, 1 << 20), assume_new=False)  # fmt: skip
    deliveries = [
        Delivery(subjects.inbound_for(message.kind), message.payload, None, seq, seq, 0, 0, f"r{seq}")
        for seq, message in enumerate(feed, start=1)
    ]
    for start in range(0, len(deliveries), batch):
        await pipeline.run_deliveries(deliveries[start : start + batch])
    assert pipeline.checkpoint == len(feed)
    return await trader_contents(client, trader)


async def test_a_feed_whose_every_commit_runs_twice_is_stored_as_with_each_once(redis_line_server: Any) -> None:
    client = redis.asyncio.Redis.from_url(redis_line_server.url)
    trader = "RETRY-002"
    try:
        once = await through_pipeline(client, Store(client, Keys(trader), SERIALIZER), trader, 50)
        twice = await through_pipeline(client, RunningTwice(client, Keys(trader), SERIALIZER), trader, 50)
    finally:
        await client.aclose()
    closed = Keys(trader).closed(Collection.POSITIONS).encode()
    assert len(once[closed]) >= 3  # the feed closes positions, and batches hold more fills after
    assert {key: value for key, value in twice.items() if key != closed} == {
        key: value for key, value in once.items() if key != closed
    }
    assert sorted(set(twice[closed]) - set(once[closed])) == []
    assert twice == once
